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

Root here lacks CAP_SYS_RESOURCE: Podman's default ulimits fail, so containers.conf sets lower ones.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .dockerd import make_busybox_rootfs
from .host import Lab
from .leftovers import NETNS_DIR, Tracked, mounts_under

IMAGE = "localhost/bbox"  # the busybox image every Podman world has (podman import names it so)
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


class PodmanLab(Lab):
    """A host lab running rootful Podman in its own mount namespace; `podman(...)` runs its CLI."""

    def __init__(self, name: str | None = None, state_dir: Path | None = None, image: str = IMAGE):
        super().__init__(name, state_dir)
        self.image = image
        self.work: Path | None = None
        self.keeper: subprocess.Popen | None = None
        self._podman_left: list[str] = []
        self.created_paths: list[str] = []

    # -- building -------------------------------------------------------------------------------
    def _build(self) -> None:
        super()._build()
        if find_podman() is None:
            raise RuntimeError("podman is not installed (Debian: apt-get install podman netavark aardvark-dns crun; "
                               "scripts/setup does it)")
        self.work = Path(tempfile.mkdtemp(prefix="ndpod-"))
        etc = self.work / "etc"
        if os.path.isdir("/etc/containers"):  # the host's registries and policy, never its networks
            shutil.copytree("/etc/containers", etc, ignore=shutil.ignore_patterns("networks", "containers.conf", "storage.conf"))
        etc.mkdir(exist_ok=True)
        (etc / "containers.conf").write_text(CONTAINERS_CONF)
        (etc / "storage.conf").write_text(STORAGE_CONF)
        (self.work / "storage").mkdir()
        # bind targets that did not exist are made on the machine (empty dirs): removed again at the end
        self.created_paths = [p for p in (*BOUND, *TMPFS) if not os.path.exists(p)]
        from runtime.kernel.ns import Namespace

        enter_lab = Namespace.named(self.name).preexec()
        work = self.work

        def keeper_setup() -> None:
            enter_lab()
            _private_mounts(work, (self.name, self.outside))

        self.keeper = subprocess.Popen([sys.executable, "-I", "-S", "-c", KEEPER_CODE, str(self.work)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=keeper_setup)
        self._wait_keeper()
        self.env = {**self.env, "CONTAINERS_CONF": "/etc/containers/containers.conf"}
        self.import_busybox(self.image)

    def _wait_keeper(self) -> None:
        deadline = time.monotonic() + 5
        mine = os.stat("/proc/self/ns/mnt").st_ino
        while time.monotonic() < deadline:
            if self.keeper.poll() is not None:
                raise RuntimeError(f"the Podman world's mount-namespace keeper exited {self.keeper.returncode}")
            try:
                if os.stat(f"/proc/{self.keeper.pid}/ns/mnt").st_ino != mine and \
                        os.path.exists(f"/proc/{self.keeper.pid}/root/run/libpod"):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("the Podman world's mount-namespace keeper did not start")

    def import_busybox(self, tag: str) -> None:
        rootfs = self.work / "rootfs"
        make_busybox_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            p = self.run_in(None, ["podman", "import", "-q", "-", tag], stdin=tar.stdout, env=self.env, timeout=120)
        finally:
            tar.stdout.close()
            tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        if tar.returncode != 0 or p.returncode != 0:
            raise RuntimeError(f"podman import failed: {p.stderr.strip()[-400:]}")

    # -- running things in it -------------------------------------------------------------------
    def enter(self, where: str | None = None):
        """The world's host is the keeper's network and mount namespaces (Podman's state is there)."""
        if where not in (None, "host") or self.keeper is None:
            return super().enter(where)
        from runtime.kernel.ns import join_process

        pid = self.keeper.pid
        return lambda: join_process(pid, ("net", "mnt"))

    def podman(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The podman CLI on the world's host; RuntimeError on a failure when `check`."""
        p = self.run_in(None, ["podman", *args], env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-600:]}")
        return p

    # -- tearing down ---------------------------------------------------------------------------
    def _world_pids(self) -> list[int]:
        """Every process of the world's Podman: in the keeper's mount namespace (conmon, aardvark-dns,
        podman), or in a network namespace of the lab's host or of Podman's (the containers)."""
        pid = self.keeper.pid
        try:
            mnt = os.stat(f"/proc/{pid}/ns/mnt").st_ino
            nets = {os.stat(f"/proc/{pid}/ns/net").st_ino}
            run_netns = Path(f"/proc/{pid}/root/run/netns")
            nets |= {os.stat(p).st_ino for p in run_netns.iterdir()} if run_netns.is_dir() else set()
        except OSError:
            return []
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) in (pid, os.getpid()):
                continue
            try:
                if os.stat(d / "ns/mnt").st_ino == mnt or os.stat(d / "ns/net").st_ino in nets:
                    out.append(int(d.name))
            except OSError:
                pass
        return out

    def _remove_podman(self) -> list[str]:
        left: list[str] = []
        if self.keeper is None or self.keeper.poll() is not None:
            return left
        try:  # the clean way first: netavark removes its rules and bridges, conmon ends
            self.podman("rm", "-a", "-f", "-t", "0", check=False, timeout=60)
        except subprocess.TimeoutExpired:
            left.append("podman rm -af timed out")
        tracked = Tracked()
        tracked.add(self._world_pids())
        tracked.signal_all(signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT
        while tracked.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.keeper.kill()  # its mount namespace, and every mount in it, goes with it
        self.keeper.wait(5)
        if tracked.running():
            left.append(f"processes {sorted(tracked.running())}")
        return left

    def destroy(self) -> None:
        """Podman's processes and the keeper first (they live in the lab's namespace), then the lab."""
        try:
            self._podman_left = self._remove_podman()
        finally:
            try:
                for p in self.created_paths:
                    if os.path.isdir(p) and not os.listdir(p) and not mounts_under(Path(p)):
                        os.rmdir(p)
                if self.work is not None and not mounts_under(self.work):
                    shutil.rmtree(self.work, ignore_errors=True)
            finally:
                super().destroy()

    def _leftovers(self) -> list[str]:
        out = [f"podman: {x}" for x in self._podman_left]
        if self.work is not None and self.work.exists():
            out.append(f"podman: dir {self.work}")
        out += [f"podman: path {p} made by the world" for p in self.created_paths if os.path.exists(p)]
        return out + super()._leftovers()
