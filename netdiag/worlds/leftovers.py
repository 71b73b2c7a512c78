"""What a world leaves behind, and how to take it away: namespaces, mounts, processes (found by
(pid, start time), or by a unique directory on their command line or in their environment),
cgroups, and the root namespace's links and nftables tables (which no world may change).

Shared by every world of netdiag.worlds; imports only runtime.kernel, runtime.records and
runtime.containers.cgroups, each lazily.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

CGROUP_BASE = Path("/sys/fs/cgroup")
NETNS_DIR = "/run/netns"


def _quiet(_msg: str) -> None:
    pass


def netns_left(names) -> list[str]:
    """The named network namespaces of `names` that still exist."""
    return [f"netns {n}" for n in names if n and os.path.exists(f"{NETNS_DIR}/{n}")]


def processes_left(needle: str, grace: float = 3.0) -> list[str]:
    """Processes whose command line or environment mentions `needle` (a world's own directory),
    after `grace` seconds for those already killed to finish dying."""
    return _still(lambda: pids_mentioning(needle), grace, "process {pid}: {cmd}")


def _still(find, grace: float, say: str) -> list[str]:
    """`say` (with pid and cmd) for each process find() still returns after `grace` seconds."""
    deadline = time.monotonic() + grace
    while (pids := find()) and time.monotonic() < deadline:
        time.sleep(0.05)
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
        except OSError:
            continue
        out.append(say.format(pid=pid, cmd=cmd))
    return out


def namespace_ids(paths) -> dict[int, int]:
    """{inode: cookie} of the network namespaces at `paths` (those that can be entered)."""
    from runtime.kernel import ns

    out = {}
    for path in paths:
        try:
            out[os.stat(path).st_ino] = ns.cookie(path)
        except OSError:
            pass
    return out


def pids_in(inodes) -> set[int]:
    """Every process (but this one) whose network namespace has one of `inodes`."""
    me, found = os.getpid(), set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inodes:
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def processes_in(ids: dict[int, int], grace: float = 3.0) -> list[str]:
    """Processes still in a world's network namespaces (`ids` from namespace_ids: the namespace's
    name may be gone, the process keeps it alive), after `grace` seconds for the killed to finish
    dying. The cookie tells a namespace of the world from a later one that got its inode number."""
    from runtime.kernel import ns

    def left() -> list[int]:
        out = []
        for pid in pids_in(ids):
            try:
                path = f"/proc/{pid}/ns/net"
                if ids.get(os.stat(path).st_ino) == ns.cookie(path):
                    out.append(pid)
            except OSError:  # gone meanwhile
                continue
        return out

    return _still(left, grace, "process {pid} in the world's namespace: {cmd}")


def root_namespace_state() -> frozenset[str]:
    """The nftables tables of the namespace this process runs in (the machine's root namespace,
    where tests and benches run): a world must leave them as it found them. Links are not compared:
    on a shared host other runtimes' containers come and go (a Docker container's veth), and other
    worlds built at the same time pass theirs through it; the session's root-namespace check covers
    routes, rules, tables and forwarding."""
    try:
        from runtime.kernel import nft

        return frozenset(f"nft {line.strip()}" for line in nft.run("list tables").splitlines() if line.strip())
    except Exception:  # noqa: BLE001 - no libnftables (or no root): nothing to compare
        return frozenset()


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below prefix, deepest first (from /proc/self/mountinfo)."""
    found = []
    pre = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == pre or mp.startswith(pre + "/"):
                found.append(mp)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def unmount_under(prefix: Path) -> None:
    for _ in range(3):
        mps = mounts_under(prefix)
        if not mps:
            return
        for mp in mps:
            if subprocess.run(["umount", "-R", mp], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True)


def pids_mentioning(needle: str) -> list[int]:
    """PIDs whose command line or environment mentions needle (a unique work directory): only
    processes its owner started."""
    out = []
    raw = needle.encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if raw in (d / "cmdline").read_bytes() or raw in (d / "environ").read_bytes():
                out.append(int(d.name))
        except OSError:
            pass
    return out


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of pid, or None when it is gone."""
    from runtime.kernel.procs import stat_fields

    fields = stat_fields(pid)
    return (fields[0], int(fields[19])) if fields else None


class Tracked:
    """Processes we started, remembered by (pid, start time) so a reused pid is never touched."""

    def __init__(self):
        self.procs: dict[int, int] = {}

    def add(self, pids) -> None:
        for pid in pids:
            st = proc_stat(pid)
            if st and pid not in self.procs:
                self.procs[pid] = st[1]

    def _mine(self, pid: int) -> tuple[str, int] | None:
        st = proc_stat(pid)
        return st if st and st[1] == self.procs[pid] else None

    def running(self) -> list[int]:
        return [p for p in self.procs if (st := self._mine(p)) and st[0] != "Z"]

    def zombies(self) -> list[int]:
        return [p for p in self.procs if (st := self._mine(p)) and st[0] == "Z"]

    def signal_all(self, sig: int) -> None:
        for pid in self.running():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def end_processes(work: Path, tracked: Tracked, timeout: float = 10.0, log: Callable[[str], None] = _quiet) -> None:
    """Wait for every process that mentions `work` (dockerd's containerd and shims, netdiag's
    monitors) to end; SIGKILL what still runs after timeout; then give their parents a moment to reap."""
    deadline = time.monotonic() + timeout
    while True:
        tracked.add(pids_mentioning(str(work)))
        if not tracked.running():
            break
        if time.monotonic() > deadline:
            log(f"cleanup: SIGKILL to stragglers {tracked.running()}")
            tracked.signal_all(signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.1)
    end = time.monotonic() + 5  # orphans are reaped by PID 1, not by us
    while tracked.zombies() and time.monotonic() < end:
        time.sleep(0.1)


def cgroup_hierarchies() -> list[Path]:
    if (CGROUP_BASE / "cgroup.controllers").exists():  # v2 only
        return [CGROUP_BASE]
    return [d for d in CGROUP_BASE.iterdir() if d.is_dir() and (d / "cgroup.procs").exists()]


def remove_cgroup_tree(name: str) -> list[str]:
    """rmdir /sys/fs/cgroup/<hier>/<name> bottom-up in every hierarchy; returns what is left."""
    left = []
    for h in cgroup_hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        for _ in range(50):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in dirs + [top]:
                try:
                    d.rmdir()
                except OSError:
                    pass
            if not top.exists():
                break
            time.sleep(0.1)
        if top.exists():
            left.append(str(top))
    return left


def kill_recorded(state_dir: Path, cgroup_parent: str) -> None:
    """SIGKILL every monitor and container process a state dir's records or cgroups know."""
    from runtime.records import recorded_pids

    pids = recorded_pids(Path(state_dir))
    for parent in cgroup_parents(cgroup_parent):
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


def cgroup_parents(cgroup_parent: str) -> list[Path]:
    """Where netdiag's runtime puts the cgroups of a state's containers, in every hierarchy."""
    if (CGROUP_BASE / "cgroup.controllers").exists():
        return [CGROUP_BASE / cgroup_parent]
    from runtime.containers.cgroups import V1_CONTROLLERS

    return [CGROUP_BASE / c / cgroup_parent for c in V1_CONTROLLERS]


def remove_cgroups(cgroup_parent: str, kill, timeout: float = 5.0) -> None:
    """rmdir the containers' cgroups under `cgroup_parent` and the parent, calling `kill` between
    tries (a process still in one keeps it busy)."""
    deadline = time.monotonic() + timeout
    for parent in cgroup_parents(cgroup_parent):
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
