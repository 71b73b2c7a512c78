"""A real Docker engine inside a lab: a private dockerd (Debian's docker.io) runs INSIDE the lab
namespace with its default bridge (docker0) and its iptables(-nft) rules, the way a Docker host
looks: netdiag.worlds.DockerLab (its engine, netdiag/worlds/dockerd.py, joins the lab's netns; every
state directory private; everything it started removed again), the one starter the scenarios, the
fault worlds and the benches use too.

Nothing here may change the machine's root network namespace: `docker_lab()` compares `nft list
ruleset` and `ip -o link` there before and after, and everything (containers, dockerd, containerd
and its shims, mounts, cgroups, the host paths dockerd creates on its own, the lab) is removed at
the end, also on failure.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from netdiag.worlds.docker import IMAGE
from tests.labkit import DockerWorld

HAVE_DOCKER = shutil.which("dockerd") is not None and shutil.which("docker") is not None


def root_netns_state() -> tuple[str, str]:
    """The root namespace's links (name and flags) and nftables ruleset (counters left out)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = "\n".join(sorted(" ".join(line.split()[:3]) for line in links.splitlines()))
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return links, re.sub(r"counter packets \d+ bytes \d+", "counter", rules)


class DockerLabView:
    """What a docker_lab test holds: the lab (tests.labkit's conveniences; DOCKER_HOST set), its
    engine, `docker(...)` (the docker CLI against it) and `inspect(NAME)` (Docker's record)."""

    def __init__(self, world: DockerWorld):
        self.lab, self.engine = world, world.engine

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.lab.docker(*args, **kw)

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]


@contextlib.contextmanager
def docker_lab(tmp: Path, setup=None):
    """A lab host running a private Docker engine (netdiag.worlds.DockerLab: busybox imported as
    IMAGE, DOCKER_HOST set in the lab's environment), an httpd in the outside namespace. `setup(d)`
    runs the test's own docker commands first. Everything is removed at the end and checked for
    leaks (the world's own, and the root namespace's links and whole nftables ruleset)."""
    root_before = root_netns_state()
    lab = DockerWorld(state_dir=tmp / "ndroot", image=IMAGE)
    left: list[str] = []
    try:
        error = None
        try:
            lab.create()
            d = DockerLabView(lab)
            if setup is not None:
                setup(d)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            error = str(e)
        if error:
            pytest.fail(f"private dockerd in the lab: {error}", pytrace=False)
        lab.outside_server(tmp)
        yield d
    finally:
        try:
            lab.destroy()
        except Exception as e:  # noqa: BLE001 - the checks still run
            left.append(f"clean-up failed: {e}")
        left += lab.leaks()
        root_after = root_netns_state()
        if root_after[0] != root_before[0]:
            left.append(f"root netns links CHANGED:\n{root_before[0]}\n---\n{root_after[0]}")
        if root_after[1] != root_before[1]:
            left.append(f"root netns nftables ruleset CHANGED:\n{root_before[1]}\n---\n{root_after[1]}")
    assert not left, "left behind: " + "; ".join(left)


@contextlib.contextmanager
def plain_bridge_under_docker(lab, port: int = 8080):
    """Two plain namespaces a and b (10.124.0.2/.3, a listener on `port` each) on a hand-made bridge
    `plainbr0` in a lab whose dockerd's FORWARD policy drop applies to it (set here, with
    bridge-nf-call-iptables, rather than inherited). Yields (bridge, names, ips); removed after,
    with any DOCKER-USER rule for the bridge."""
    from tests.integration.test_verdicts import listen, stop

    br, names = "plainbr0", {k: f"{lab.name}-pb{k}" for k in "ab"}
    ips = {"a": "10.124.0.2", "b": "10.124.0.3"}
    socks = []
    try:
        assert lab.in_lab("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1").returncode == 0
        if "-P FORWARD DROP" not in lab.in_lab("iptables-nft", "-S", "FORWARD").stdout:
            # Docker sets it when it turns forwarding on itself; a lab that inherited ip_forward=1 has not
            assert lab.in_lab("iptables-nft", "-P", "FORWARD", "DROP").returncode == 0
        for argv in (["ip", "link", "add", br, "type", "bridge"], ["ip", "link", "set", br, "up"]):
            assert lab.in_lab(*argv).returncode == 0
        for k, ns in names.items():
            subprocess.run(["ip", "netns", "add", ns], check=True)
            for argv in (["ip", "link", "add", f"pb{k}", "type", "veth", "peer", "name", "eth0", "netns", ns],
                         ["ip", "link", "set", f"pb{k}", "master", br], ["ip", "link", "set", f"pb{k}", "up"]):
                assert lab.in_lab(*argv).returncode == 0, argv
            for argv in (["addr", "add", f"{ips[k]}/24", "dev", "eth0"], ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
                subprocess.run(["ip", "-n", ns, *argv], check=True)
            socks.append(listen(ns, port))
        yield br, names, ips
    finally:
        for s in socks:
            stop(s)
        while lab.in_lab("iptables-nft", "-D", "DOCKER-USER", "-i", br, "-o", br, "-j", "ACCEPT").returncode == 0:
            pass
        lab.in_lab("ip", "link", "del", br)
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
