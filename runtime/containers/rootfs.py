"""Inside the new mount namespace: overlay root, /proc, a minimal /dev, read-only /sys, pivot_root.

Runs in the container's first process before exec. The overlay is mounted only in the container's
own mount namespace, so it disappears with the container: nothing is left mounted on the host.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .. import fsroot
from ..kernel import link, syscalls as sc
from ..errors import ContainerError

_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))


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
    lower = ":".join(os.path.relpath(p, base) for p in top_first_once(lower_dirs))
    sc.mount("overlay", str(merged), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


def top_first_once(lower_dirs: list[Path]) -> list[Path]:
    """The lowerdirs top first, each once: overlayfs refuses a directory twice (ELOOP), yet an image
    may repeat a layer (two RUNs making the same change). Applying the same diff again on top
    gives what its topmost copy alone gives, so the lower copies are dropped."""
    seen: set[Path] = set()
    out = []
    for p in reversed(lower_dirs):
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def setup(merged: Path, binds: dict[str, Path], own_netns: bool, hostname: str | None, mounts: list[dict] = (),
          tmpfs: dict[str, str] | None = None, read_only: bool = False, workdir: str = "") -> None:
    """Finish the root at `merged` and pivot into it. `binds` maps in-container file -> host file;
    `mounts` are the container's volumes (volumes.parse), bound after them; `tmpfs` are
    HostConfig.Tmpfs (path -> options); `read_only` makes the root itself read-only, last, so that
    the mount points above could still be made.

    Every target is resolved inside the root (runtime/fsroot.py) and mounted onto its descriptor,
    so an image's symlinks (an /etc that links to a host directory, say) never reach the host."""
    m = str(merged)
    root = os.open(m, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _mount_on(root, "/proc", "proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, kernel_fs=True)
        _KERNEL_FS.add(_dev_of(root, "/proc"))
        _setup_dev(root)
        ro = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
        if own_netns:
            _mount_on(root, "/sys", "sysfs", "sysfs", ro, kernel_fs=True)
        else:  # sysfs belongs to the netns that mounts it; with the host's network, bind the host's
            _mount_on(root, "/sys", "/sys", None, sc.MS_BIND | sc.MS_REC, kernel_fs=True)
            _mount_on(root, "/sys", None, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY, kernel_fs=True)
        _KERNEL_FS.add(_dev_of(root, "/sys"))
        for inside, host_file in binds.items():
            _bind_file(root, inside, host_file)
        for mount in mounts:
            _bind_volume(root, mount)
        for inside, options in (tmpfs or {}).items():
            _mount_on(root, inside, "tmpfs", "tmpfs", *tmpfs_options(options))
        if read_only:
            if workdir:  # made now, as Docker makes it, while the root is still writable
                os.close(_open_dir(root, workdir, mkdir_mode=0o755))
            sc.mount(None, m, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    finally:
        os.close(root)

    os.chdir(m)
    sc.pivot_root(".", ".")  # stack the new root over the old one, then detach the old one
    sc.umount(".", sc.MNT_DETACH)
    os.chdir("/")
    if hostname:
        sc.sethostname(hostname)
    if own_netns:
        link.set_up(link.index("lo"))


_TMPFS_FLAGS = {"ro": (sc.MS_RDONLY, True), "rw": (sc.MS_RDONLY, False), "noexec": (sc.MS_NOEXEC, True),
                "exec": (sc.MS_NOEXEC, False), "nosuid": (sc.MS_NOSUID, True), "suid": (sc.MS_NOSUID, False),
                "nodev": (sc.MS_NODEV, True), "dev": (sc.MS_NODEV, False)}


def tmpfs_options(text: str) -> tuple[int, str]:
    """Mount flags and data of a --tmpfs PATH:OPTIONS: Docker's default noexec,nosuid,nodev, then
    the options given (exec undoes noexec; size=, mode=, uid= ... go to the kernel)."""
    flags = sc.MS_NOEXEC | sc.MS_NOSUID | sc.MS_NODEV
    data = []
    for opt in filter(None, text.split(",")):
        if opt in _TMPFS_FLAGS:
            bit, on = _TMPFS_FLAGS[opt]
            flags = flags | bit if on else flags & ~bit
        else:
            data.append(opt)
    return flags, ",".join(data)


def _setup_dev(root: int) -> None:
    """A tmpfs /dev with the usual nodes, its own devpts and shm. Where the image's /dev links to
    another directory of the image, that is where it goes (runc resolves it the same way)."""
    _mount_on(root, "/dev", "tmpfs", "tmpfs", sc.MS_NOSUID, "mode=755,size=65536k")
    dev = _open_dir(root, "/dev")  # resolved again: now the fresh tmpfs, which holds nothing of the image
    try:
        for name, major, minor in _DEVICES:
            os.mknod(name, 0o666 | stat.S_IFCHR, os.makedev(major, minor), dir_fd=dev)
            os.chmod(name, 0o666, dir_fd=dev)
        os.mkdir("pts", 0o755, dir_fd=dev)
        os.mkdir("shm", 0o1777, dir_fd=dev)
        os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, name, dir_fd=dev)
    finally:
        os.close(dev)
    _mount_on(root, "/dev/pts", "devpts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    _mount_on(root, "/dev/shm", "shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=1777,size=65536k")


def _fail(inside: str, why: str) -> ContainerError:
    return ContainerError(f"Cannot prepare {inside} in the container's root", why,
                          "fix the image: rebuild it with a plain directory or file there")


def _open(root: int, inside: str, **kw) -> int:
    """`inside` resolved within the root, as an O_PATH descriptor."""
    try:
        return fsroot.open_in_root(root, inside, **kw)
    except OSError as e:
        raise _fail(inside, f"the image's path to it is unusable ({e.strerror})") from None


def _open_dir(root: int, inside: str, **kw) -> int:
    fd = _open(root, inside, **kw)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise _fail(inside, "the image has a file there, not a directory")
    return _not_kernel_fs(fd, inside)


# procfs and sysfs as mounted here: an image link must not send a mount or a bind onto them (runc's
# checkProcMount), where it would cover what the kernel shows or what confinement masks there.
_KERNEL_FS: set[int] = set()


def _dev_of(root: int, inside: str) -> int:
    fd = _open(root, inside, follow_last=False)
    try:
        return os.fstat(fd).st_dev
    finally:
        os.close(fd)


def _not_kernel_fs(fd: int, inside: str) -> int:
    if os.fstat(fd).st_dev in _KERNEL_FS:
        os.close(fd)
        raise _fail(inside, "the image's links send it into /proc or /sys")
    return fd


def _kernel_fs_dir(root: int, inside: str, fstype: str) -> int:
    """procfs and sysfs go onto a real directory at exactly /proc or /sys, as runc demands ("must be
    mounted on ordinary directory", CVE-2019-19921): following an image's link would mount them
    elsewhere and leave the container without them. A missing directory is made."""
    name = inside.lstrip("/")
    try:
        st = os.stat(name, dir_fd=root, follow_symlinks=False)
    except FileNotFoundError:
        os.mkdir(name, 0o555, dir_fd=root)
        st = os.stat(name, dir_fd=root, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        fd = _open(root, inside, follow_last=False)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
    kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
    raise ContainerError(f"The image's {inside} is {kind}",
                         f"{fstype} must be mounted on an ordinary directory at {inside}; runc refuses such an image too",
                         f"rebuild the image with {inside} as an empty directory")


def _mount_on(root: int, inside: str, source: str | None, fstype: str | None, flags: int = 0,
              data: str | None = None, *, kernel_fs: bool = False) -> None:
    fd = _kernel_fs_dir(root, inside, fstype or "sysfs") if kernel_fs else _open_dir(root, inside, mkdir_mode=0o755)
    try:
        sc.mount(source, fsroot.fd_path(fd), fstype, flags, data)
    finally:
        os.close(fd)


def _bind_file(root: int, inside: str, host_file: Path) -> None:
    """Bind a host file (hosts, resolv.conf, hostname) over `inside`. Its directory is resolved in
    the root; an image symlink in its place is replaced, so the bind never lands where a link says."""
    parent = _open_dir(root, os.path.dirname(inside), mkdir_mode=0o755)
    name = os.path.basename(inside)
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=parent)
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise _fail(inside, "the image has a directory there, and a file is bound onto it")
        if st is None:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent))
        target = _not_kernel_fs(os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent), inside)
    finally:
        os.close(parent)
    try:
        sc.mount(str(host_file), fsroot.fd_path(target), None, sc.MS_BIND)
    finally:
        os.close(target)


def _bind_volume(root: int, m: dict) -> None:
    """A volume or a bind mount (a directory, or a file onto a file) at its destination, resolved
    in the root; read-only as a second step, which is how the kernel takes MS_RDONLY for a bind."""
    inside, source = m["Destination"], m["Source"]
    try:
        is_dir = stat.S_ISDIR(os.stat(source).st_mode)
    except OSError as e:
        raise ContainerError(f"Cannot mount {source} at {inside}", e.strerror or str(e), "check the volume's source path") from None
    if is_dir:
        _mount_on(root, inside, source, None, sc.MS_BIND | sc.MS_REC)
    else:
        _bind_file(root, inside, Path(source))
    if not m.get("RW", True):
        target = _not_kernel_fs(_open(root, inside), inside)
        try:
            sc.mount(None, fsroot.fd_path(target), None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
        finally:
            os.close(target)
