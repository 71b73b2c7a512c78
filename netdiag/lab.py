"""A lab: a network namespace that plays a whole host, so trying netdiag never touches the real one.

The lab host has its own `eth0`, a veth to an "outside" namespace that plays the internet
(203.0.113.1, TEST-NET-3; the lab host is 203.0.113.2 behind it), its own nftables and its own
netdiag state (NETDIAG_ROOT, cgroup parent). Nothing is routed off the machine: the outside
namespace has no other interface. `destroy()` kills what ran in the lab and removes everything.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

OUTSIDE_IP, HOST_IP, PREFIX = "203.0.113.1", "203.0.113.2", 24


class Lab:
    def __init__(self, name: str | None = None, state_dir: Path | None = None):
        tag = secrets.token_hex(3)
        self.name = name or f"ndlab-{tag}"
        self.outside = f"{self.name}-out"[:32]
        self.state_dir = Path(state_dir or f"/tmp/{self.name}")
        self.cgroup_parent = f"{self.name}"
        # the lab's upstream DNS is the outside namespace, never the machine's own resolver
        self.env = {**os.environ, "NETDIAG_ROOT": str(self.state_dir), "NETDIAG_CGROUP_PARENT": self.cgroup_parent,
                    "NETDIAG_DNS_UPSTREAM": OUTSIDE_IP}

    # -- building and tearing down -------------------------------------------------------------
    def create(self) -> "Lab":
        import ipaddress

        from runtime.kernel import addr, link, ns, route

        try:
            host, outside = ns.create(self.name), ns.create(self.outside)
            with ns.netns(host):
                fd = os.open(outside, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    link.create_veth("eth0", "eth0", fd)
                finally:
                    os.close(fd)
            for path, ip, gateway in ((host, HOST_IP, OUTSIDE_IP), (outside, OUTSIDE_IP, None)):
                with ns.netns(path):
                    eth0 = link.index("eth0")
                    addr.add(eth0, ipaddress.IPv4Address(ip), PREFIX)
                    link.set_up(eth0)
                    link.set_up(link.index("lo"))
                    if gateway:
                        route.add_default(ipaddress.IPv4Address(gateway), eth0)
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Kill every process netdiag started in the lab, remove its cgroups, namespaces, state."""
        from runtime.kernel import ns

        kill_recorded(self.state_dir, self.cgroup_parent)
        remove_cgroups(self.cgroup_parent, lambda: kill_recorded(self.state_dir, self.cgroup_parent))
        for name in (self.name, self.outside):
            ns.remove(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "Lab":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- running things in it ---------------------------------------------------------------------
    def enter(self, ns: str | None = None):
        """A preexec_fn that moves a child process into the lab's (or `ns`'s) network namespace."""
        from runtime.kernel.ns import enter

        return enter(f"/run/netns/{ns or self.name}")

    def netdiag(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run the netdiag CLI as if on the lab host."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("env", self.env)
        return subprocess.run([sys.executable, "-m", "netdiag", *args], preexec_fn=self.enter(), **kw)

    def outside_run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(list(argv), preexec_fn=self.enter(self.outside), **kw)


def kill_recorded(state_dir: Path, cgroup_parent: str) -> None:
    """SIGKILL every monitor and container process a state dir's records or cgroups know."""
    from runtime.records import recorded_pids

    pids = recorded_pids(Path(state_dir))
    for parent in _cgroup_parents(cgroup_parent):
        for procs in parent.glob("*/cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except OSError:
                pass
    for pid in pids - {0}:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _cgroup_parents(cgroup_parent: str) -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base / cgroup_parent]
    from runtime.containers.cgroups import V1_CONTROLLERS

    return [base / c / cgroup_parent for c in V1_CONTROLLERS]


def remove_cgroups(cgroup_parent: str, kill, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for parent in _cgroup_parents(cgroup_parent):
        if not parent.is_dir():
            continue
        for child in sorted(p for p in parent.iterdir() if p.is_dir()):
            while child.is_dir():
                try:
                    child.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    kill()
                    time.sleep(0.02)
        parent.rmdir()


def leaks(lab: Lab) -> list[str]:
    """What a destroyed lab left behind (should be nothing)."""
    out = [f"netns {ns}" for ns in (lab.name, lab.outside) if os.path.exists(f"/run/netns/{ns}")]
    out += [f"cgroup {p}" for p in _cgroup_parents(lab.cgroup_parent) if p.exists()]
    with open("/proc/mounts") as f:
        out += [line.split()[1] for line in f if str(lab.state_dir) in line]
    if lab.state_dir.exists():
        out.append(str(lab.state_dir))
    return out
