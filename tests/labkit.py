"""Integration-test worlds built on netdiag.worlds (a host lab, a cluster lab, a Docker lab), so
tests, the demo, the scenarios and the benches share one way of building and tearing down a
host-in-a-host; this module adds only test conveniences."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from netdiag.worlds import ClusterLab, DockerLab, Lab


def open_fds() -> dict[str, str]:
    """This process's open descriptors and what each is (a leak check that names what leaked)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, closed by now
            pass
    return out


def fds_left(before: dict[str, str]) -> dict[str, str]:
    """Descriptors open now that were not open (as the same thing) before."""
    return {fd: what for fd, what in open_fds().items() if before.get(fd) != what}


def wait_for(pred, timeout: float = 5.0) -> bool:
    """Poll `pred` until it is true (True) or `timeout` seconds pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


class LabTools:
    """Test conveniences for a host lab (or a Docker lab). `run` returns the CompletedProcess;
    `ok` asserts exit 0; processes kept in `_procs` are killed by destroy()."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._procs: list[subprocess.Popen] = []

    @property
    def root(self) -> Path:
        return self.state_dir

    def run(self, *args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
        return self.netdiag(*args, timeout=timeout, input=input)

    def ok(self, *args: str, timeout: float = 60) -> str:
        p = self.run(*args, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"netdiag {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p.stdout

    def inspect(self, name: str) -> dict:
        """`netdiag inspect NAME`: the container's Docker-style record."""
        import json

        return json.loads(self.ok("inspect", name))[0]

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        import sys

        return subprocess.Popen([sys.executable, "-m", "netdiag", *args], env=self.env, preexec_fn=self.enter(), **kw)

    def in_lab(self, *argv: str) -> subprocess.CompletedProcess:
        return self.run_in(None, argv, timeout=30)

    def outside_server(self, tmp_path: Path, port: int = 80, body: str = "outside\n") -> subprocess.Popen:
        """busybox httpd in the outside namespace, logging client addresses to its stderr."""
        www = tmp_path / f"www-{port}"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text(body)
        return self.serve_in(self.outside, ["busybox", "httpd", "-f", "-v", "-p", str(port), "-h", str(www)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def serve_in(self, where: str | None, argv: list[str], **kw) -> subprocess.Popen:
        """A server in the namespace `where` names, in a session of its own: destroy() kills it with
        what it forked (busybox httpd's child per connection outlives its parent when the
        connection hangs, e.g. behind an MTU black hole)."""
        p = subprocess.Popen(argv, preexec_fn=self.enter(where), start_new_session=True, **kw)
        self._procs.append(p)
        return p

    def outside_get(self, url: str, timeout: int = 3) -> subprocess.CompletedProcess:
        return self.run_in("outside", ["timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url], timeout=timeout + 5)

    def lab_get(self, url: str, timeout: int = 3) -> subprocess.CompletedProcess:
        return self.run_in(None, ["timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url], timeout=timeout + 5)

    def destroy(self) -> None:
        import signal

        for p in getattr(self, "_procs", []):
            try:
                os.killpg(p.pid, signal.SIGKILL)  # a server of serve_in, with its children
            except ProcessLookupError:  # not a group leader: one process
                p.kill()
            p.wait()
        super().destroy()


class World(LabTools, Lab):
    """A host lab with test conveniences."""


class DockerWorld(LabTools, DockerLab):
    """A lab running its own dockerd, with test conveniences (tests/dockerkit.py's docker_lab)."""


class Cluster(ClusterLab):
    """A ClusterLab with test conveniences: `ok(i, ...)` runs the CLI on host i and asserts exit 0,
    `in_ctr(i, name, argv)` runs a host binary in a container's network namespace."""

    def run(self, i: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.hosts[i].netdiag(*args, timeout=timeout)

    def ok(self, i: int, *args: str, timeout: float = 60) -> str:
        p = self.run(i, *args, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"h{i + 1}: netdiag {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p.stdout

    def pid(self, i: int, name: str) -> int:
        import json

        return json.loads(self.ok(i, "inspect", name))[0]["State"]["Pid"]

    def in_ctr(self, i: int, name: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.run_in(f"/proc/{self.pid(i, name)}/ns/net", argv, timeout=timeout)

    def in_host(self, i: int, *argv: str, timeout: float = 30, input_text: str | None = None) -> subprocess.CompletedProcess:
        return self.hosts[i].run_in(None, argv, timeout=timeout, input=input_text)


def joined_cluster(state_dir: Path, hosts: int = 2, ttl: int = 3):
    """A Cluster made and joined (a module fixture's body: `yield from joined_cluster(...)`), destroyed
    after, also on failure, and checked for leftovers."""
    c = Cluster(hosts=hosts, state_dir=state_dir)
    c.create()
    try:
        c.join_all(ttl=ttl)
        yield c
    finally:
        c.destroy()
    assert not c.leaks(), c.leaks()
