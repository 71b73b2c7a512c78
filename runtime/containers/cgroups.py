"""Per-container cgroups for memory, CPU and pids, on cgroup v2 or v1, whichever the host has, plus
the devices allow-list: the devices controller on v1, an eBPF device filter on v2 (devices_bpf)."""
from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from .. import paths
from . import devices_bpf

BASE = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "pids", "devices")


def is_v2() -> bool:
    return (BASE / "cgroup.controllers").exists()


def _dirs(container_id: str) -> list[Path]:
    rel = Path(paths.cgroup_parent()) / container_id[:12]
    if is_v2():
        return [BASE / rel]
    return [BASE / c / rel for c in V1_CONTROLLERS if (BASE / c).is_dir()]


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def create(container_id: str, memory: int = 0, nano_cpus: int = 0, pids: int = 0,
           devices: tuple[tuple[bool, str], ...] = ()) -> None:
    """Make the container's cgroups and set its limits (0 = no limit). `devices`: (allow, "c 1:3 rwm")
    rules in order, written to devices.allow/deny on v1; on v2, which has no devices files, turned
    into runc's BPF_PROG_TYPE_CGROUP_DEVICE program and attached to the container's cgroup."""
    if is_v2():
        parent = BASE
        for part in Path(paths.cgroup_parent()).parts:
            _enable_controllers(parent)
            parent = parent / part
            parent.mkdir(exist_ok=True)
        _enable_controllers(parent)
        d = _dirs(container_id)[0]
        d.mkdir(exist_ok=True)
        if memory:
            _write(d / "memory.max", str(memory))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
        if nano_cpus:
            _write(d / "cpu.max", f"{nano_cpus * 100000 // 10**9} 100000")
        if pids:
            _write(d / "pids.max", "max" if pids < 0 else str(pids))
        if devices:  # nothing is attached for --privileged (its rules allow every device)
            try:
                devices_bpf.attach(d, devices)
            except BaseException:
                try:  # no process is in it yet: a start that fails leaves no cgroup behind
                    d.rmdir()
                except OSError:
                    pass
                raise
        return
    for d in _dirs(container_id):
        d.mkdir(parents=True, exist_ok=True)
        controller = d.relative_to(BASE).parts[0]
        if controller == "memory" and memory:
            _write(d / "memory.limit_in_bytes", str(memory))
            if (d / "memory.memsw.limit_in_bytes").exists():
                _write(d / "memory.memsw.limit_in_bytes", str(memory))
        elif controller == "cpu" and nano_cpus:
            _write(d / "cpu.cfs_period_us", "100000")
            _write(d / "cpu.cfs_quota_us", str(nano_cpus * 100000 // 10**9))
        elif controller == "pids" and pids:
            _write(d / "pids.max", "max" if pids < 0 else str(pids))
        elif controller == "devices":
            for allow, rule in devices:  # the first rule ("deny a") empties what the parent allowed
                _write(d / ("devices.allow" if allow else "devices.deny"), rule)


def _enable_controllers(d: Path) -> None:
    try:
        available = (d / "cgroup.controllers").read_text().split()
        wanted = " ".join(f"+{c}" for c in ("memory", "cpu", "pids") if c in available)
        if wanted:
            _write(d / "cgroup.subtree_control", wanted)
    except OSError:
        pass


def add(container_id: str, pid: int) -> None:
    for d in _dirs(container_id):
        if d.is_dir():
            _write(d / "cgroup.procs", str(pid))


def join(pid: int, me: int) -> None:
    """Move process `me` into every cgroup process `pid` is in, on every mounted hierarchy (v1
    controllers, named v1 hierarchies, the v2 one): what `exec` needs to be limited and counted
    like the container's init. Read from the caller's mount namespace, so call it before setns."""
    mounts = _hierarchies()
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        key = "" if hid == "0" else frozenset(controllers.split(","))
        where = mounts.get(key)
        if where is None:
            continue
        mountpoint, root = where
        if root != "/" and not (path == root or path.startswith(root + "/")):
            continue  # that cgroup lies outside what this mount shows
        rel = path[len(root):] if root != "/" else path
        _write(Path(mountpoint + rel.rstrip("/")) / "cgroup.procs", str(me))


def _hierarchies() -> dict:
    """{frozenset of v1 controllers (or name=X), or "" for v2: (mount point, root inside the fs)}."""
    out: dict = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
                continue
            root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
            if rfields[0] == "cgroup2":
                out.setdefault("", (mountpoint, root))
                continue
            opts = set(rfields[2].split(","))
            ctrl = frozenset(o for o in opts if o in _V1_ALL or o.startswith("name="))
            out.setdefault(ctrl, (mountpoint, root))
    return out


_V1_ALL = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio", "blkio", "perf_event",
           "hugetlb", "pids", "rdma", "misc"}


def _unescape(field: str) -> str:
    return field.replace(r"\040", " ").replace(r"\011", "\t").replace(r"\012", "\n").replace(r"\134", "\\")


def procs(container_id: str) -> set[int]:
    out: set[int] = set()
    for d in _dirs(container_id):
        try:
            out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        except FileNotFoundError:
            pass
    return out


def oom_killed(container_id: str) -> bool:
    for d in _dirs(container_id):
        for name in ("memory.events", "memory.oom_control"):
            try:
                for line in (d / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            except FileNotFoundError:
                continue
    return False


def remove(container_id: str, timeout: float = 2.0) -> None:
    """Kill whatever is left in the cgroups, then remove them. Succeeds when already gone."""
    deadline = time.monotonic() + timeout
    for d in _dirs(container_id):
        while d.exists():
            try:
                d.rmdir()
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                for pid in procs(container_id):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)


def orphans(live_ids: set[str]) -> list[str]:
    """Short ids of container cgroups under netdiag's parent that no known container owns."""
    found: set[str] = set()
    for d in _parent_dirs():
        if d.is_dir():
            found.update(p.name for p in d.iterdir() if p.is_dir())
    live_short = {i[:12] for i in live_ids}
    return sorted(found - live_short)


def _parent_dirs() -> list[Path]:
    rel = Path(paths.cgroup_parent())
    if is_v2():
        return [BASE / rel]
    return [BASE / c / rel for c in V1_CONTROLLERS if (BASE / c).is_dir()]


def remove_parent() -> None:
    """Remove netdiag's (empty) parent cgroups, e.g. at the end of a test lab."""
    for d in _parent_dirs():
        for part in range(len(Path(paths.cgroup_parent()).parts)):
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
