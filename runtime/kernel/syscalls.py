"""The few Linux syscalls Python 3.11's os module lacks, via libc (no subprocesses, no strings)."""
import contextlib
import ctypes
import errno
import io
import os
import signal
from collections.abc import Iterator

from ..errors import KernelError
from .procs import pid_alive, proc_start_time  # noqa: F401  (where callers have long found them)

# glibc's soname, loaded directly: ctypes.util.find_library would spawn `ldconfig -p` on every command.
# The one libc handle: other modules call libc.syscall/prctl/capset through it.
libc = _libc = ctypes.CDLL("libc.so.6", use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

SYS_pivot_root = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)

NS_FLAGS = {
    "mnt": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
}


def open_owned(path: str) -> io.FileIO:
    """`path` opened read-only (O_CLOEXEC), held by an object from the moment it exists. CPython runs
    a Ctrl-C's handler right after a call returns, before its result is stored: `fd = os.open(...)`
    then loses the int and the descriptor stays open for good, where a FileIO dropped with the frame
    closes itself. For namespace files opened in a process the user can interrupt."""
    return io.FileIO(path, "r")


@contextlib.contextmanager
def signals_blocked(*signums: int) -> Iterator[None]:
    """This thread does not take `signums` in the block: they stay pending and act right after it.
    The mask is read before it is changed, inside the try: CPython acts on a Ctrl-C when a call
    returns, so `old = pthread_sigmask(SIG_BLOCK, ...)` could lose `old` with the mask changed, and
    the thread would ignore Ctrl-C and TERM for good."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, signums)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def check(ret: int, what: str) -> int:
    """ret, or OSError with errno and `what` when a libc call failed (returned < 0)."""
    return _check(ret, what)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def own_pid_ns_for_children() -> None:
    """New children in this process's own PID namespace again, after unshare(CLONE_NEWPID) sent
    them into one whose init has since exited (where fork fails with ENOMEM)."""
    fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWPID)
    finally:
        os.close(fd)


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    ret = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(ret, f"mount {fstype or ''} {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(SYS_pivot_root, new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    data = name.encode()
    _check(_libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname")


def prctl(option: int, *args: int, what: str = "prctl") -> int:
    ulong = [ctypes.c_ulong(a) for a in (list(args) + [0, 0, 0, 0])[:4]]
    ret = _libc.prctl(ctypes.c_int(option), *ulong)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise KernelError(
            f"Cannot {action} as uid {os.geteuid()}",
            "creating namespaces, mounts and cgroups needs root (CAP_SYS_ADMIN)",
            "run the command as root, e.g. with sudo",
        )


__all__ = [n for n in dir() if not n.startswith("_")] + ["errno"]
