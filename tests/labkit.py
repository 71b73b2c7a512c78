"""Throwaway worlds for integration tests: a private netdiag state root and cgroup parent, and a
lab network namespace that plays the host (its own eth0 to an "outside" namespace).

Everything made here is removed in teardown, also when the test failed; `leaks()` says what is left.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "ndt"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass
class World:
    root: Path
    cgroup_parent: str
    netns: str | None = None
    outside: str | None = None
    env: dict = field(default_factory=dict)

    def cmd(self, *args: str) -> list[str]:
        base = [sys.executable, "-m", "netdiag", *args]
        if self.netns:
            return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *base]
        return base

    def run(self, *args: str, timeout: float = 60, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """Run the netdiag CLI (in the lab's namespace, if there is a lab)."""
        p = subprocess.run(self.cmd(*args), env=self.env, capture_output=True, text=True, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"netdiag {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def ok(self, *args: str, timeout: float = 60) -> str:
        return self.run(*args, timeout=timeout, check=True).stdout

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*args), env=self.env, **kw)

    def in_lab(self, *argv: str) -> subprocess.CompletedProcess:
        """Run a plain command in the lab's namespace (e.g. `ip addr`)."""
        prefix = ["nsenter", f"--net=/run/netns/{self.netns}", "--"] if self.netns else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=30)


def make_world(tmp: Path, lab: bool) -> World:
    tag = secrets.token_hex(3)
    w = World(root=tmp / "ndroot", cgroup_parent=f"{PREFIX}-{tag}")
    w.env = {**os.environ, "NETDIAG_ROOT": str(w.root), "NETDIAG_CGROUP_PARENT": w.cgroup_parent, "PYTHONDONTWRITEBYTECODE": "1"}
    if lab:
        w.netns, w.outside = f"{PREFIX}lab-{tag}", f"{PREFIX}out-{tag}"
        try:
            _ip("netns", "add", w.netns)
            _ip("netns", "add", w.outside)
            for ns in (w.netns, w.outside):
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", w.netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", w.outside)
            _ip("-n", w.netns, "addr", "add", "198.18.0.2/24", "dev", "eth0")
            _ip("-n", w.outside, "addr", "add", "198.18.0.1/24", "dev", "eth0")
            for ns in (w.netns, w.outside):
                _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", w.netns, "route", "add", "default", "via", "198.18.0.1")
        except BaseException:
            destroy_world(w)
            raise
    return w


def _kill_everything(w: World) -> None:
    """SIGKILL every monitor and container process the world's records or cgroups know."""
    import json

    cdir = w.root / "containers"
    pids: set[int] = set()
    if cdir.is_dir():
        for d in cdir.iterdir():
            try:
                st = json.loads((d / "state.json").read_text())
            except (OSError, ValueError):
                continue
            pids.update(int(st.get(k) or 0) for k in ("MonitorPid", "Pid"))
    for ctl in ("memory", "cpu", "pids", "unified", ""):
        parent = Path("/sys/fs/cgroup") / ctl / w.cgroup_parent
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


def destroy_world(w: World) -> None:
    import shutil
    import time

    _kill_everything(w)
    deadline = time.monotonic() + 5
    for ctl in ("memory", "cpu", "pids", "unified", ""):
        parent = Path("/sys/fs/cgroup") / ctl / w.cgroup_parent
        if not parent.is_dir() or (ctl == "" and not (parent / "cgroup.procs").exists()):
            continue
        for child in sorted(parent.iterdir()):
            while child.is_dir():
                try:
                    child.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    _kill_everything(w)
                    time.sleep(0.02)
        try:
            parent.rmdir()
        except OSError:
            pass
    for ns in (w.netns, w.outside):
        if ns:
            _ip("netns", "del", ns, check=False)
    shutil.rmtree(w.root, ignore_errors=True)


def leaks(w: World) -> list[str]:
    out = []
    for ns in (w.netns, w.outside):
        if ns and Path(f"/run/netns/{ns}").exists():
            out.append(f"netns {ns}")
    for ctl in ("memory", "cpu", "pids", "unified"):
        if (Path("/sys/fs/cgroup") / ctl / w.cgroup_parent).exists():
            out.append(f"cgroup {ctl}/{w.cgroup_parent}")
    with open("/proc/mounts") as f:
        out += [line.split()[1] for line in f if str(w.root) in line]
    return out
