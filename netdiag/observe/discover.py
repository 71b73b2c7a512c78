"""Namespace discovery: who owns each network namespace: netdiag containers, Docker and Podman containers, `ip netns` names, any
process, and the namespace netdiag runs in. A namespace is known by its inode ("ns-<inode>")."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class NsRef:
    inode: int
    path: str                    # something to open for setns: /run/netns/X or /proc/PID/ns/net
    kind: str = "pid"            # host | container | netns | pid
    name: str = ""
    runtime: str = ""            # netdiag | docker | podman | cni | ""
    container: dict = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    netns_names: list[str] = field(default_factory=list)
    on: str = ""                 # a container of another netdiag root: the label of the namespace its monitor runs in

    @property
    def id(self) -> str:
        return f"ns-{self.inode}"

    def label(self) -> str:
        if self.kind == "host":
            return "host"
        if self.kind == "container" and self.runtime == "cni":
            return f"{self.name} (CNI pod on {', '.join(self.container.get('networks') or {}) or '?'})"
        if self.kind == "container" and self.container.get("infra"):  # a Podman pod: its infra container holds the namespace
            return f"{self.name} ({self.runtime} pod: {', '.join(self.container.get('members') or []) or 'no other container'})"
        if self.kind == "container":
            return f"{self.name} ({self.runtime} container)"
        if self.kind == "netns":
            return f"ns:{self.name}"
        if self.on:
            return f"{self.name} ({self.runtime} container on {self.on})"
        return f"pid:{self.pids[0]}" + (f" ({self.name})" if self.name else "")


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


_PF_KTHREAD = 0x00200000


def _machine_ns() -> int | None:
    """The inode of the machine's own network namespace: init's, or (where init's cannot be read,
    as under a sandbox's init) that of kthreadd, a kernel thread, which always lives in it."""
    ino = _inode("/proc/1/ns/net")
    if ino is not None:
        return ino
    from runtime.kernel.procs import stat_fields

    fields = stat_fields(2)
    return _inode("/proc/2/ns/net") if fields and int(fields[6]) & _PF_KTHREAD else None


_HOST_FD: int | None = None


def _host_path() -> str:
    """A path to the namespace we started in that stays right after this thread joins another one
    (/proc/self/ns/net would then name the other): an fd kept open for the process's lifetime."""
    global _HOST_FD
    if _HOST_FD is None:
        _HOST_FD = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return f"/proc/self/fd/{_HOST_FD}"


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            pairs = f.read().split(b"\0")
    except OSError:
        return {}
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


def _ppid(pid: int) -> int | None:
    from runtime.kernel.procs import stat_fields

    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def _name_other_roots_containers(refs: dict[int, NsRef]) -> None:
    """Namespaces no one here claims whose process a netdiag monitor of another state root started
    (in a lab, the pods of the next node, whose namespaces this shared kernel shows): named after
    that root's container record and the namespace its monitor runs in, not pid:N. They stay
    kind "pid": they are not this host's containers, so no command here resolves or recreates them."""
    from runtime import paths, records

    mine = str(paths.root())
    by_root: dict[str, list[tuple[NsRef, int]]] = {}
    for ref in refs.values():
        if ref.kind != "pid":
            continue
        for pid in ref.pids[:4]:  # the container's init is among the first; its parent is the monitor
            parent = _ppid(pid)
            root = _environ(parent).get("NETDIAG_ROOT") if parent else None
            if root and root != mine:
                by_root.setdefault(root, []).append((ref, parent))
                break
    for root, found in by_root.items():
        by_pid = {c["pid"]: c for c in records.containers_at(Path(root))}
        for ref, monitor in found:
            c = next((by_pid[p] for p in ref.pids if p in by_pid), None)
            host = refs.get(_inode(f"/proc/{monitor}/ns/net") or -1)
            if c is not None and host is not None:
                ref.name, ref.runtime, ref.on = c["name"], "netdiag", host.label()


def discover(errors: list[dict]) -> tuple[dict[int, NsRef], list[dict], list[dict]]:
    """Every network namespace visible from here, with its owner. Returns (refs, containers, other
    runtimes' networks: Docker's, Podman's, and the CNI networks of pods in the CNI result cache)."""
    refs: dict[int, NsRef] = {}
    host_ino = _inode("/proc/self/ns/net")
    refs[host_ino] = NsRef(host_ino, _host_path(), kind="host", name="host", pids=[os.getpid()])
    # Run in another namespace (a lab playing the host), netdiag leaves the machine's own one out of
    # its world: that namespace's addresses would shadow the lab's equal ones, and a fix printed for
    # it would change the machine.
    init_ino = _machine_ns()
    outside = {init_ino} if init_ino not in (None, host_ino) else set()

    # every process: the namespaces that have something running in them
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        ino = _inode(f"/proc/{entry.name}/ns/net")
        if ino is None or ino in outside:
            continue
        pid = int(entry.name)
        ref = refs.setdefault(ino, NsRef(ino, f"/proc/{pid}/ns/net", name=_comm(pid)))
        ref.pids.append(pid)

    # ip netns names (a namespace may have no process at all)
    try:
        for name in sorted(os.listdir("/run/netns")):
            path = f"/run/netns/{name}"
            ino = _inode(path)
            if ino is None or ino in outside:
                continue
            ref = refs.setdefault(ino, NsRef(ino, path))
            ref.netns_names.append(name)
            if ref.kind in ("pid",):
                ref.kind, ref.name, ref.path = "netns", name, path
    except FileNotFoundError:
        pass

    containers = []
    try:
        from runtime import records

        containers += records.containers()
    except Exception as e:  # noqa: BLE001 - a broken state dir must not hide the rest
        errors.append({"what": "netdiag containers", "error": str(e)})
    docker_nets: list[dict] = []
    from . import docker_api

    sock = docker_api.socket_path()
    if sock:
        try:
            containers += docker_api.containers(sock)
            docker_nets = docker_api.networks(sock)
        except OSError as e:
            errors.append({"what": f"Docker API at {sock}", "error": str(e)})
    from . import podman_state

    podman_containers, podman_nets = podman_state.discover(errors)
    containers += podman_containers
    docker_nets += podman_nets
    for c in containers:
        ino = _inode(f"/proc/{c['pid']}/ns/net") if c.get("pid") else None
        if ino is None or ino in outside:
            continue
        c["ns"] = f"ns-{ino}"
        ref = refs.setdefault(ino, NsRef(ino, f"/proc/{c['pid']}/ns/net"))
        if ref.kind == "host" or str(c.get("network_mode") or "").startswith("container:"):
            continue  # --network host or container:X: the namespace is the host's or X's, named after them
        ref.kind, ref.name, ref.runtime, ref.container = "container", c["name"], c["runtime"], c
        ref.path = f"/proc/{c['pid']}/ns/net"
    podman_state.name_pods(refs, containers)
    _name_other_roots_containers(refs)
    from .cni_pods import add_pods

    docker_nets += add_pods(refs, containers, outside, errors)  # a kubelet's pods: the CNI result cache
    for ref in refs.values():
        ref.pids.sort()
        if ref.kind == "pid" and ref.pids:
            ref.path = f"/proc/{ref.pids[0]}/ns/net"
        if ref.kind == "host":
            ref.path = _host_path()
    return refs, containers, docker_nets
