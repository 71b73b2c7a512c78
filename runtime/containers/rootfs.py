"""Inside the new mount namespace: overlay root, /proc, a minimal /dev, read-only /sys, pivot_root.

Runs in the container's first process before exec. The overlay is mounted only in the container's
own mount namespace, so it disappears with the container: nothing is left mounted on the host.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .. import syscalls as sc

_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))


def _mkdir(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def _touch(path: str) -> None:
    if not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass


def mount_overlay(lower_dirs: list[Path], upper: Path, work: Path, merged: Path) -> None:
    """lower_dirs bottom first. Relative lowerdirs keep the mount data under the page-size limit."""
    if not lower_dirs:
        empty = upper.parent / "empty-lower"
        empty.mkdir(exist_ok=True)
        lower_dirs = [empty]
    base = os.path.commonpath([str(p) for p in lower_dirs])
    if not os.path.isdir(base):
        base = os.path.dirname(base)
    os.chdir(base)
    lower = ":".join(os.path.relpath(p, base) for p in reversed(lower_dirs))
    sc.mount("overlay", str(merged), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


def setup(merged: Path, binds: dict[str, Path], own_netns: bool, hostname: str | None) -> None:
    """Finish the root at `merged` and pivot into it. `binds` maps in-container file -> host file."""
    m = str(merged)
    _mkdir(f"{m}/proc", 0o555)
    sc.mount("proc", f"{m}/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)

    dev = f"{m}/dev"
    _mkdir(dev)
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID, "mode=755,size=65536k")
    for name, major, minor in _DEVICES:
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    _mkdir(f"{dev}/pts")
    sc.mount("devpts", f"{dev}/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    _mkdir(f"{dev}/shm", 0o1777)
    sc.mount("shm", f"{dev}/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=1777,size=65536k")
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{link}")

    _mkdir(f"{m}/sys", 0o555)
    ro = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    if own_netns:
        sc.mount("sysfs", f"{m}/sys", "sysfs", ro)
    else:  # sysfs belongs to the netns that mounts it; with the host's network, bind the host's
        sc.mount("/sys", f"{m}/sys", None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, f"{m}/sys", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)

    for inside, host_file in binds.items():
        target = f"{m}{inside}"
        if os.path.islink(target):  # never let an image's symlink redirect a bind onto the host
            os.unlink(target)
        _touch(target)
        sc.mount(str(host_file), target, None, sc.MS_BIND)

    os.chdir(m)
    sc.pivot_root(".", ".")  # stack the new root over the old one, then detach the old one
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")
    if hostname:
        sc.sethostname(hostname)
    if own_netns:
        sc.set_link_up("lo")
