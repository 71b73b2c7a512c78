"""A lab whose host is a rootful Podman host (Debian's podman 4.3 with netavark, aardvark-dns, crun).

Podman has no daemon to point somewhere else: it writes fixed host paths (/run/containers,
/run/libpod, /var/lib/containers, /etc/containers/networks, /dev/shm/libpod_lock and its network
namespaces under /run/netns). So the world's host is a network namespace (the lab) *and* a mount
namespace of its own, held by a keeper process: inside it those paths are directories of the
world's work directory (bind mounts) or fresh tmpfs, private to it. Every `podman` the world runs,
and netdiag run as the world's host, join the keeper's network and mount namespaces; netavark's
iptables-nft rules, its bridges and aardvark-dns live in the lab's network namespace. When the
keeper's mount namespace goes, every mount in it goes too: the machine keeps nothing.

    lab = PodmanLab().create()
    lab.podman("run", "-d", "--name", "web", "-p", "8080:80", lab.image, "httpd", "-f")
    lab.netdiag("inspect", "--net", "podman:web")
    lab.destroy()                     # containers, conmon, aardvark-dns, keeper, mounts, lab

`PodmanDockerLab` is a DockerLab that is a Podman host too (both engines, as on hosts that have
both). `PodmanHost` is the Podman part alone, for a lab made elsewhere (a scenario's): found again
from any process by its work directory (on the keeper's command line, with what the machine had
before it started in `host.json`), so a `scenario stop` in another process removes it. Containers
run without cgroups of their own (crun, cgroups = "disabled"): nothing to remove under /sys/fs/cgroup.

Root here lacks CAP_SYS_RESOURCE: Podman's default ulimits fail, so containers.conf sets lower ones.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .docker import DockerLab
from .dockerd import make_busybox_rootfs
from .host import Lab
from .leftovers import NETNS_DIR, Tracked, mounts_under, pids_mentioning

PODMAN_IMAGE = "localhost/bbox"  # the busybox image every Podman world has (podman import names it so)
# Podman's host paths, each made private to the world: bound from the work directory (kept
# state: images, network configs) or a fresh tmpfs (run-time state that dies with the keeper)
BOUND = {"/var/lib/containers": "storage", "/etc/containers": "etc"}
TMPFS = ("/run/containers", "/run/libpod", "/run/netns", "/dev/shm", "/var/tmp")
# crun refuses a hybrid cgroup layout (v1 controllers plus an empty v2 hierarchy, as here); the world's
# containers run without cgroups of their own (containers.conf), so the v2 mount is hidden from it
HIDDEN = ("/sys/fs/cgroup/unified",)
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
cgroups = "disabled"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"

[network]
network_backend = "netavark"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""
KEEPER_CODE = "import signal\nsignal.pause()"
STOP_TIMEOUT = 10.0


def find_podman() -> str | None:
    from runtime.kernel import tools

    return tools.find("podman")


def _private_mounts(work: Path, netns_names: tuple[str, ...]) -> None:
    """In a fresh mount namespace (the keeper's, before it execs): Podman's host paths private. The
    world's own named namespaces (`netns_names`) stay visible under the private /run/netns, so
    `ns:NAME` names them there as on the machine."""
    from runtime.kernel.syscalls import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REC, mount, unshare

    kept = {name: os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in netns_names}
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here shows in the machine's namespace
    for path, sub in BOUND.items():
        os.makedirs(path, exist_ok=True)
        mount(str(work / sub), path, None, MS_BIND)
    for path in TMPFS:
        os.makedirs(path, exist_ok=True)
        mount("tmpfs", path, "tmpfs", 0, "mode=1777" if path in ("/dev/shm", "/var/tmp") else "mode=0755")
    for name, fd in kept.items():
        open(f"{NETNS_DIR}/{name}", "x").close()
        mount(f"/proc/self/fd/{fd}", f"{NETNS_DIR}/{name}", None, MS_BIND)
        os.close(fd)
    for path in HIDDEN:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY, "mode=0555")


class PodmanHost:
    """Rootful Podman on the host that network namespace `netns` (a name under /run/netns) plays, in
    a mount namespace of its own held by a keeper process; all its state in `work`. `netns_names`
    are the world's named namespaces, kept visible (by name) inside the private /run/netns."""

    def __init__(self, netns: str, work: Path, netns_names: tuple[str, ...] = (), image: str = PODMAN_IMAGE):
        self.netns, self.work, self.image = netns, Path(work), image
        self.netns_names = tuple(dict.fromkeys((netns, *netns_names)))
        self.keeper: subprocess.Popen | None = None

    # -- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Podman's private paths, the keeper, and the busybox image; RuntimeError without podman."""
        if find_podman() is None:
            raise RuntimeError("podman is not installed (Debian: apt-get install podman netavark aardvark-dns crun; "
                               "scripts/setup does it)")
        etc = self.work / "etc"
        if os.path.isdir("/etc/containers"):  # the host's registries and policy, never its networks
            shutil.copytree("/etc/containers", etc, ignore=shutil.ignore_patterns("networks", "containers.conf", "storage.conf"))
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "containers.conf").write_text(CONTAINERS_CONF)
        (etc / "storage.conf").write_text(STORAGE_CONF)
        (self.work / "storage").mkdir(exist_ok=True)
        # bind targets that did not exist are made on the machine (empty dirs): removed again at the end
        created = [p for p in (*BOUND, *TMPFS) if not os.path.exists(p)]
        (self.work / "host.json").write_text(json.dumps({"netns": self.netns, "created_paths": created}))
        from runtime.kernel.ns import Namespace

        enter_lab, work, names = Namespace.named(self.netns).preexec(), self.work, self.netns_names

        def keeper_setup() -> None:
            enter_lab()
            _private_mounts(work, names)

        self.keeper = subprocess.Popen([sys.executable, "-I", "-S", "-c", KEEPER_CODE, str(self.work)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=keeper_setup)
        self._wait_keeper()
        self.import_busybox(self.image)

    def _wait_keeper(self) -> None:
        deadline = time.monotonic() + 5
        mine = os.stat("/proc/self/ns/mnt").st_ino
        while time.monotonic() < deadline:
            if self.keeper.poll() is not None:
                raise RuntimeError(f"the Podman host's mount-namespace keeper exited {self.keeper.returncode}")
            try:
                if os.stat(f"/proc/{self.keeper.pid}/ns/mnt").st_ino != mine and \
                        os.path.exists(f"/proc/{self.keeper.pid}/root/run/libpod"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("the Podman host's mount-namespace keeper did not start")

    def keeper_pid(self) -> int | None:
        """The keeper's pid while it runs: the process we started, or the one whose command line
        names this work directory (from another process)."""
        if self.keeper is not None:
            return self.keeper.pid if self.keeper.poll() is None else None
        for pid in pids_mentioning(str(self.work)):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if KEEPER_CODE.encode() in argv and str(self.work).encode() in argv:
                return pid
        return None

    # -- using it ---------------------------------------------------------------------------------
    def enter(self):
        """A preexec_fn that moves a child onto the Podman host: the keeper's network and mount namespaces."""
        pid = self.keeper_pid()
        if pid is None:
            raise RuntimeError(f"the Podman host of {self.netns} is not running")
        from runtime.kernel.ns import join_process

        return lambda: join_process(pid, ("net", "mnt"))

    def run(self, argv, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(list(argv), preexec_fn=self.enter(), **kw)

    def import_busybox(self, tag: str) -> None:
        rootfs = self.work / "rootfs"
        make_busybox_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            p = self.run(["podman", "import", "-q", "-", tag], stdin=tar.stdout, timeout=120)
        finally:
            tar.stdout.close()
            tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        if tar.returncode != 0 or p.returncode != 0:
            raise RuntimeError(f"podman import failed: {p.stderr.strip()[-400:]}")

    # -- tearing down -----------------------------------------------------------------------------
    def _pids(self, keeper: int) -> list[int]:
        """Every process of this Podman host: those in the keeper's mount namespace (podman, conmon,
        aardvark-dns), those in Podman's network namespaces, and their descendants (a container's
        processes are conmon's children, in a mount namespace of their own). Not every process of
        the lab's network namespace: another engine (a dockerd) may live there too."""
        from runtime.kernel.procs import stat_fields

        try:
            mnt = os.stat(f"/proc/{keeper}/ns/mnt").st_ino
            run_netns = Path(f"/proc/{keeper}/root/run/netns")
            nets = {os.stat(p).st_ino for p in run_netns.iterdir() if p.name.startswith("netns-")} if run_netns.is_dir() else set()
        except OSError:
            return []
        parent, found = {}, set()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) in (keeper, os.getpid()):
                continue
            pid = int(d.name)
            try:
                if os.stat(d / "ns/mnt").st_ino == mnt or os.stat(d / "ns/net").st_ino in nets:
                    found.add(pid)
            except OSError:
                continue
            fields = stat_fields(pid)
            if fields:
                parent[pid] = int(fields[1])
        grown = True
        while grown:  # descendants of what was found
            more = {pid for pid, ppid in parent.items() if ppid in found and pid not in found}
            found |= more
            grown = bool(more)
        return sorted(found)

    def remove(self) -> list[str]:
        """Containers (netavark removes its rules and bridges), conmon, aardvark-dns, the keeper (its
        mount namespace and every mount in it go with it), the paths made on the machine, the work
        directory. Works from any process; returns what could not be removed."""
        left: list[str] = []
        keeper = self.keeper_pid()
        if keeper is not None:
            try:
                self.run(["podman", "rm", "-a", "-f", "-t", "0"], timeout=60)
            except subprocess.TimeoutExpired:
                left.append("podman rm -af timed out")
            tracked = Tracked()
            tracked.add([*self._pids(keeper), keeper])
            tracked.signal_all(signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
            while tracked.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.keeper is not None:
                self.keeper.wait(5)
            if tracked.running():
                left.append(f"processes {sorted(tracked.running())}")
        try:
            created = json.loads((self.work / "host.json").read_text()).get("created_paths", [])
        except (OSError, ValueError):
            created = []
        for p in created:
            if os.path.isdir(p) and not os.listdir(p) and not mounts_under(Path(p)):
                os.rmdir(p)
        left += [f"path {p} made for the Podman host" for p in created if os.path.exists(p)]
        if not mounts_under(self.work):
            shutil.rmtree(self.work, ignore_errors=True)
        if self.work.exists():
            left.append(f"dir {self.work}")
        return left


class _PodmanOnTheHost:
    """What makes a host lab (Lab or DockerLab, mixed in before it) a Podman host too: a PodmanHost
    on its namespace, run_in/netdiag as the host entering Podman's namespaces, removed first."""

    image: str
    podman_host: PodmanHost | None = None
    _podman_left: tuple[str, ...] | list[str] = ()

    def _build(self) -> None:
        super()._build()
        self.podman_host = PodmanHost(self.name, Path(tempfile.mkdtemp(prefix="ndpod-")), (self.outside,), PODMAN_IMAGE)
        self.podman_host.start()

    def enter(self, where: str | None = None):
        """The world's host is the keeper's network and mount namespaces (Podman's state is there)."""
        if where not in (None, "host") or self.podman_host is None or self.podman_host.keeper_pid() is None:
            return super().enter(where)
        return self.podman_host.enter()

    def podman(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The podman CLI on the world's host; RuntimeError on a failure when `check`."""
        p = self.run_in(None, ["podman", *args], env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-600:]}")
        return p

    def destroy(self) -> None:
        """Podman first (its containers live in the lab's namespace), then the rest, whatever fails."""
        try:
            if self.podman_host is not None:
                self._podman_left = self.podman_host.remove()
        finally:
            super().destroy()

    def _leftovers(self) -> list[str]:
        return [f"podman: {x}" for x in self._podman_left] + super()._leftovers()


class PodmanLab(_PodmanOnTheHost, Lab):
    """A host lab that is a rootful Podman host (PodmanHost); `podman(...)` runs its CLI there."""

    def __init__(self, name: str | None = None, state_dir: Path | None = None):
        super().__init__(name, state_dir)
        self.image = PODMAN_IMAGE


class PodmanDockerLab(_PodmanOnTheHost, DockerLab):
    """A host lab where a Docker engine (DockerLab: `docker(...)`, its image `image`) and rootful
    Podman (`podman(...)`, its image `podman_image`) both run, as on hosts that have both."""

    podman_image = PODMAN_IMAGE

    def _build(self) -> None:
        super()._build()
        # podman reads DOCKER_CONFIG's config.json for registry logins and refuses to run when the
        # variable names a directory without one (DockerLab's client directory starts empty)
        config = Path(self.env["DOCKER_CONFIG"]) / "config.json"
        if not config.exists():
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text("{}\n")
