"""Paths inside a root filesystem, resolved inside it: the one place the runtime turns an image path
(/etc/hosts, /proc, /dev/pts, a COPY destination) into something it writes to or mounts over.

An image's symlinks are the image's to choose, so a symlink is followed as if the root were '/':
an absolute target restarts at the root and '..' stops there (what openat2's RESOLVE_IN_ROOT does,
and runc's securejoin). Nothing ever follows a link out of the root onto the host.

- `open_in_root` gives an O_PATH descriptor; mount onto `fd_path(fd)` (as runc does), so the target
  cannot be swapped between the check and the mount. openat2(2) when the kernel has it; otherwise
  (and to create missing directories) a walk one component at a time, each opened with O_NOFOLLOW
  relative to the descriptor of its parent.
- `resolve` is the same rule over any lookup, for trees that are not one directory (the builder's
  view of an image's layers).
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable

SYS_openat2 = 437  # the same number on x86_64 and aarch64 (new syscalls share one table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_SYMLINKS = 40  # the kernel's limit (ELOOP past it)

_PATH = os.O_PATH | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_ok: bool | None = None  # None: not tried yet; tests set False to exercise the walk


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def fd_path(fd: int) -> str:
    """A path naming exactly what `fd` is (for mount(2), which takes no descriptor)."""
    return f"/proc/self/fd/{fd}"


def resolve(path: str, readlink: Callable[[tuple[str, ...]], str | None], *, follow_last: bool = True) -> tuple[str, ...]:
    """The components of `path` with symlinks followed inside the root. `readlink(parts)` returns the
    target when the entry at `parts` is a symlink, else None. Missing components stay as written."""
    todo = components(path)
    done: list[str] = []
    hops = 0
    while todo:
        comp = todo.pop(0)
        if comp == "..":
            if done:
                done.pop()
            continue
        target = readlink(tuple(done + [comp])) if (todo or follow_last) else None
        if target is None:
            done.append(comp)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if target.startswith("/"):
            done = []
        todo[:0] = components(target)
    return tuple(done)


def open_in_root(root_fd: int, path: str, *, follow_last: bool = True, mkdir_mode: int | None = None) -> int:
    """An O_PATH descriptor (close it) for `path` inside the directory `root_fd`.

    With `mkdir_mode`, missing directories on the way, the last one included, are created with it
    (inside the root: a dangling link to /x makes <root>/x). Raises OSError (ENOENT, ENOTDIR, ELOOP)."""
    global _openat2_ok
    if _openat2_ok is not False:
        try:
            return _openat2(root_fd, path, _PATH | (0 if follow_last else os.O_NOFOLLOW))
        except FileNotFoundError:
            if mkdir_mode is None:
                raise
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM):  # no openat2, or a seccomp filter refusing it
                _openat2_ok = False
            elif e.errno not in (errno.EAGAIN, errno.EXDEV):  # EAGAIN: a rename raced the lookup; walk
                raise
    return _walk(root_fd, path, follow_last, mkdir_mode)


def read_in_root(root: str, path: str, limit: int) -> bytes:
    """The bytes of the regular file `path` inside the directory `root` (a container's
    /proc/PID/root): its links followed inside the root, never to the host's files (the kernel
    would resolve an absolute link under /proc/PID/root against netdiag's own root), and read as
    runtime.bounded reads (a FIFO or device refused without blocking, at most `limit` bytes).
    Raises bounded.Refused."""
    from . import bounded

    display = f"{root}{path}"
    try:
        pfd = _under(root, path)
    except OSError as e:
        raise bounded.Refused(display, None, e.strerror or str(e)) from None
    try:
        if not stat.S_ISREG(os.fstat(pfd).st_mode):  # before any open: a FIFO's open could block
            return bounded.read_fd(pfd, limit, display)  # refuses it, naming what it is
        fd = os.open(fd_path(pfd), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise bounded.Refused(display, None, e.strerror or str(e)) from None
    finally:
        os.close(pfd)
    try:
        return bounded.read_fd(fd, limit, display)
    finally:
        os.close(fd)


def list_in_root(root: str, path: str) -> list[str] | None:
    """The names in the directory `path` inside `root` (resolved as read_in_root does); None when
    it is missing or no directory."""
    try:
        pfd = _under(root, path)
    except OSError:
        return None
    try:
        if not stat.S_ISDIR(os.fstat(pfd).st_mode):
            return None
        fd = os.open(fd_path(pfd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(pfd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _under(root: str, path: str) -> int:
    rfd = os.open(root, _PATH | os.O_DIRECTORY)
    try:
        return open_in_root(rfd, path)
    finally:
        os.close(rfd)


def _openat2(dirfd: int, path: str, flags: int) -> int:
    from .kernel.syscalls import libc

    how = _OpenHow(flags, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = libc.syscall(SYS_openat2, ctypes.c_int(dirfd), path.encode() or b".", ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _walk(root_fd: int, path: str, follow_last: bool, mkdir_mode: int | None) -> int:
    todo = components(path)
    stack = [root_fd]  # descriptors of the directories walked so far; [0] is the caller's
    hops = 0
    try:
        while todo:
            comp = todo.pop(0)
            if comp == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                fd = os.open(comp, _PATH | os.O_NOFOLLOW, dir_fd=stack[-1])
            except FileNotFoundError:
                if mkdir_mode is None:
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
                try:
                    os.mkdir(comp, mkdir_mode, dir_fd=stack[-1])
                except FileExistsError:
                    pass  # made meanwhile by someone else: open what is there now
                fd = os.open(comp, _PATH | os.O_NOFOLLOW, dir_fd=stack[-1])
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode) and (todo or follow_last):
                try:
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo[:0] = components(target)
                continue
            if todo and not stat.S_ISDIR(mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(fd)
        return stack.pop() if len(stack) > 1 else os.open(".", _PATH | os.O_DIRECTORY, dir_fd=root_fd)
    finally:
        for fd in stack[1:]:
            os.close(fd)
