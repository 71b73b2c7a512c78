"""`--verify-fix` on a host where Docker runs (a real engine inside the lab, tests/dockerkit.py): a
plain Linux bridge under Docker's FORWARD policy drop (with br_netfilter) is FOREIGN_FIREWALL,
fixed in Docker's DOCKER-USER chain. The replica loads Docker's iptables-nft rules and the bridge
sysctls, the fix runs there and works; the real host keeps its drop and its rules. (A Docker-level
command, `docker ...`, is refused before any replica is built: tests/unit/test_verify_rewrite.py.)"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.dockerkit import HAVE_DOCKER, docker_lab
from tests.integration.test_verdicts import connect, listen, stop

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")]


def test_docker_user_fix_verified_on_a_replica(tmp_path_factory):
    with docker_lab(tmp_path_factory.mktemp("verifydock")) as d:
        lab = d.lab
        br, names = "plainbr0", {k: f"{lab.name}-pb{k}" for k in "ab"}
        ips = {"a": "10.124.0.2", "b": "10.124.0.3"}
        socks = []
        try:
            assert lab.in_lab("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1").returncode == 0
            if "-P FORWARD DROP" not in lab.in_lab("iptables-nft", "-S", "FORWARD").stdout:
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
                socks.append(listen(ns, 8080))
            assert connect(names["a"], ips["b"], 8080, timeout=2) is None
            rules_before = lab.in_lab("iptables-nft-save").stdout.count("\n-A ")
            p = lab.run("trace", f"ns:{names['a']}", ips["b"], "--port", "8080", "--json", "--verify-fix", "--timeout", "1",
                        timeout=180)
            r = json.loads(p.stdout)
            assert r["cause"] == "FOREIGN_FIREWALL" and "DOCKER-USER" in r["fix_command"], r["fix_command"]
            v = r["fix_verified"]
            assert v["replica"] is True, v
            assert all(a["command"].startswith(f"ip netns exec {v['replica_world']['prefix']}-host iptables") for a in v["applied"])
            assert connect(names["a"], ips["b"], 8080, timeout=2) is None  # the real host still drops
            assert lab.in_lab("iptables-nft-save").stdout.count("\n-A ") == rules_before
            assert not [n for n in os.listdir("/run/netns") if n.startswith(v["replica_world"]["prefix"])]
        finally:
            for s in socks:
                stop(s)
            lab.in_lab("ip", "link", "del", br)
            for ns in names.values():
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
