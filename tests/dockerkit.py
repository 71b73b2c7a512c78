"""A real Docker engine inside a lab: a private dockerd (Debian's docker.io) runs INSIDE the lab
namespace with its default bridge (docker0) and its iptables(-nft) rules, the way a Docker host
looks. Started exactly like bench/run_bench.py starts one (nsenter into the lab netns, every state
directory private, its clean-up helpers), but with Docker's default networking.

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
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench import run_bench as rb
from netdiag.lab import leaks
from tests.labkit import World

HAVE_DOCKER = shutil.which("dockerd") is not None and shutil.which("docker") is not None


IMAGE = "bbox"


def root_netns_state() -> tuple[str, str]:
    """The root namespace's links (name and flags) and nftables ruleset (counters left out)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = "\n".join(sorted(" ".join(line.split()[:3]) for line in links.splitlines()))
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return links, re.sub(r"counter packets \d+ bytes \d+", "counter", rules)


def other_engines() -> list[int]:
    """dockerd/containerd processes still running (ours are all gone when this is asked)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            comm = (d / "comm").read_text().strip() if d.name.isdigit() else ""
        except OSError:
            continue
        if comm in ("dockerd", "containerd") or comm.startswith("containerd-shim"):
            out.append(int(d.name))
    return out


class Engine(rb.PrivateDockerd):
    """A dockerd of our own inside the lab's network namespace with Docker's default networking,
    all its state in `work` (bench/run_bench.py's starter)."""

    networking = True

    def __init__(self, lab: World, work: Path):
        dockerd = shutil.which("dockerd")
        super().__init__(dockerd, rb.find_docker_cli(dockerd), lab.name, work, f"{lab.name}-docker")
        self.lab = lab
        self.env = self.cli_env()
        self.tracked = rb.Tracked()

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The docker CLI against this engine."""
        if self.cli is None:
            raise RuntimeError("no docker CLI found")
        p = subprocess.run([self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-600:]}")
        return p

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:])[-800:] or "(empty log)"

    def import_busybox(self, tag: str) -> None:
        rootfs = self.work / "rootfs"
        rb.make_busybox_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([self.cli, "import", "-", tag], stdin=tar.stdout, env=self.env, capture_output=True,
                             text=True, timeout=60)
        tar.stdout.close()
        tar.wait()
        if tar.returncode != 0 or imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr.strip()[-400:]}")

    def stop(self) -> list[str]:
        """Remove the containers, stop dockerd and everything it started; what could not be removed."""
        left = []
        self.tracked.add(rb.pids_mentioning(str(self.work)))
        if self.proc is not None and self.proc.poll() is None:
            try:  # SIGKILL the containers now rather than wait out dockerd's 15 s shutdown timeout
                ids = self.run("ps", "-aq", check=False, timeout=20).stdout.split()
                if ids:
                    self.run("rm", "-f", *ids, check=False, timeout=30)
            except subprocess.TimeoutExpired:
                left.append("docker rm -f timed out")
            self.proc.send_signal(signal.SIGTERM)  # nsenter execs dockerd: this pid is dockerd
            try:
                self.proc.wait(rb.DOCKERD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        steps = [("processes", lambda: rb.end_processes(self.work, self.tracked)),  # containerd, shims, proxies
                 ("mounts", lambda: rb.unmount_under(self.work))]
        for name, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - every later step still has to run
                left.append(f"{name} clean-up failed: {e}")
        left += [f"cgroup {d}" for d in rb.remove_cgroup_tree(self.cgroup_parent)]
        if not rb.mounts_under(self.work):
            shutil.rmtree(self.work, ignore_errors=True)
        if not other_engines():  # another engine (another test, a bench) may be using /run/containerd now
            left += [f"path {p}" for p in rb.remove_created(self.host_paths_before)]
        left += [f"mount {m}" for m in rb.mounts_under(self.work)]
        if self.work.exists():
            left.append(f"dir {self.work}")
        running = sorted(set(self.tracked.running()) | set(rb.pids_mentioning(str(self.work))))
        if running:
            left.append(f"processes {running}")
        return left


class DockerLab:
    def __init__(self, lab: World, engine: Engine):
        self.lab, self.engine = lab, engine

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.engine.run(*args, **kw)

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]


@contextlib.contextmanager
def docker_lab(tmp: Path, setup=None):
    """A lab host running a private Docker engine (busybox imported as IMAGE), DOCKER_HOST set in
    the lab's environment, an httpd in the outside namespace. `setup(d)` runs the test's own
    docker commands first. Everything is removed at the end and checked for leaks."""
    root_before = root_netns_state()
    lab = World(state_dir=tmp / "ndroot")
    lab.create()
    engine = None
    left: list[str] = []
    try:
        engine = Engine(lab, Path(tempfile.mkdtemp(prefix="nddock-")))  # short: socket paths fit 108 bytes
        d, error = DockerLab(lab, engine), None
        try:
            engine.start()
            engine.import_busybox(IMAGE)
            if setup is not None:
                setup(d)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            error = str(e)
        if error:
            pytest.fail(f"private dockerd in the lab: {error}\n{engine.log_tail()}", pytrace=False)
        lab.env["DOCKER_HOST"] = f"unix://{engine.sock}"  # how netdiag finds the engine
        lab.outside_server(tmp)
        yield d
    finally:
        for what, step in (("engine", lambda: left.extend(engine.stop() if engine else [])), ("lab", lab.destroy)):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - the other steps and checks still run
                left.append(f"{what} clean-up failed: {e}")
        left += leaks(lab)
        root_after = root_netns_state()
        if root_after[0] != root_before[0]:
            left.append(f"root netns links CHANGED:\n{root_before[0]}\n---\n{root_after[0]}")
        if root_after[1] != root_before[1]:
            left.append(f"root netns nftables ruleset CHANGED:\n{root_before[1]}\n---\n{root_after[1]}")
    assert not left, "left behind: " + "; ".join(left)
