"""Namespaces: the one way into one. A `Namespace` is a network namespace by path (/run/netns/NAME,
/proc/PID/ns/net, /proc/self/fd/N):

    with Namespace(path).inside(): ...       this thread, for the block (setns; no helper process, no
                                             fork; sockets opened inside stay bound to it)
    Popen(..., preexec_fn=Namespace(path).preexec())   a child, before it execs
    Namespace(path).join()                   this thread (a forked child that stays there), for good

`join_process(pid, kinds)` moves this process into several namespaces of another (exec in a
container); `create`/`remove` make and delete named namespaces like `ip netns add/del`, raw (a
thread unshares and bind-mounts its new namespace: no fork, no pyroute2); `NsidQuery` asks a
namespace which nsid it gave others (how veth peers are found across namespaces).

`netns(path)`, `enter(path)` and `join(path)` are the same entries by path, kept as the short names
the callers use (this module keeps its name `ns` for them: some sixty imports in labs, fault
worlds, probes and tests)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator

from . import wire
from .syscalls import _libc, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, \
    MS_REC, MS_SHARED, NS_FLAGS, mount, open_owned, setns, umount, unshare

RUN_DIR = "/run/netns"


class Namespace:
    """A network namespace, by the path of something that names it."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def named(cls, name: str) -> "Namespace":
        return cls(f"{RUN_DIR}/{name}")

    def __repr__(self) -> str:
        return f"Namespace({self.path!r})"

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """This thread in the namespace for the block, back where it was after (also on errors).
        Only this thread moves: other threads keep theirs."""
        target = open_owned(self.path)
        try:
            home = open_owned("/proc/thread-self/ns/net")
            try:
                back = home.fileno()  # an int before leaving: the way home must be one C call
                try:
                    setns(target.fileno(), CLONE_NEWNET)
                    yield
                finally:
                    # A Ctrl-C is raised at the first call after it lands, in this block too: go home
                    # with one C call (a Python function could be interrupted before its syscall)
                    if _libc.setns(back, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns back to the thread's namespace failed")
            finally:
                home.close()
        finally:
            target.close()

    def join(self) -> None:
        """This thread into the namespace for good (a forked child, or a preexec_fn)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)

    def preexec(self, hide_names: bool = False) -> Callable[[], None]:
        """A preexec_fn: the child joins the namespace before it execs. With `hide_names` it first
        gets a private mount namespace whose /run/netns is empty, so no `ip netns exec NAME` or
        `ip -n NAME` in what it runs reaches a real namespace (a fix tried on a replica)."""
        if not hide_names:
            return self.join

        def enter() -> None:
            fd = os.open(self.path, os.O_RDONLY)  # before /run/netns is covered: the path may be under it
            try:
                unshare(CLONE_NEWNS)
                mount(None, "/", None, MS_REC | MS_PRIVATE)
                if os.path.isdir(RUN_DIR):
                    mount("none", RUN_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k,mode=0755")
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
        return enter


def netns(path: str | None):
    """Namespace(path).inside(), or nothing when path is None (stay where it is)."""
    return contextlib.nullcontext() if path is None else Namespace(path).inside()


def enter(path: str) -> Callable[[], None]:
    return Namespace(path).preexec()


SO_NETNS_COOKIE = 71


def cookie(path: str) -> int:
    """The network namespace's cookie: unique while the machine runs, where an inode number is
    reused as soon as its namespace is gone (OSError when it cannot be entered)."""
    with netns(path), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]


def join(path: str) -> None:
    Namespace(path).join()


def join_process(pid: int, kinds: tuple[str, ...]) -> None:
    """This process into the namespaces `kinds` (in that order) of process `pid`, those it does not
    share already. All are opened before the first is joined: after "mnt" /proc is another one.
    Joining "pid" applies to children forked after."""
    files = []
    try:
        for kind in kinds:
            path = f"/proc/{pid}/ns/{kind}"
            if os.stat(path).st_ino != os.stat(f"/proc/self/ns/{kind}").st_ino:
                files.append((open_owned(path), NS_FLAGS[kind]))
        for f, flag in files:
            setns(f.fileno(), flag)
    finally:
        for f, _ in files:
            f.close()


@contextlib.contextmanager
def own_pid_namespace_for_children() -> Iterator[None]:
    """Children forked in the block are born in this process's own PID namespace. A container's
    monitor unshared CLONE_NEWPID for the container's init: without this, a helper it starts (a
    network's DNS resolver) would be a process of the container and die with its init. Restored
    after the block; nothing to do in a process that never unshared one."""
    own, next_ = "/proc/self/ns/pid", "/proc/self/ns/pid_for_children"
    if os.stat(own).st_ino == os.stat(next_).st_ino:
        yield
        return
    back = open_owned(next_)
    try:
        with open_owned(own) as f:
            setns(f.fileno(), CLONE_NEWPID)
        try:
            yield
        finally:
            setns(back.fileno(), CLONE_NEWPID)
    finally:
        back.close()


def _share_run_dir() -> None:
    """/run/netns a shared mount (a bind mount of itself first if it is none), as ip(8) does: the
    namespaces bound under it then show in every mount namespace that copies it later."""
    os.makedirs(RUN_DIR, exist_ok=True)
    try:
        mount(None, RUN_DIR, None, MS_SHARED | MS_REC)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        mount(RUN_DIR, RUN_DIR, None, MS_BIND | MS_REC)
        mount(None, RUN_DIR, None, MS_SHARED | MS_REC)


def create(name: str) -> str:
    """A named namespace, like `ip netns add NAME` (/run/netns/NAME): a short-lived thread unshares
    its network namespace and binds it to the name, so the caller's threads stay where they are."""
    _share_run_dir()
    path = f"{RUN_DIR}/{name}"
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    failed: list[BaseException] = []

    def bind() -> None:
        try:
            unshare(CLONE_NEWNET)
            mount("/proc/thread-self/ns/net", path, None, MS_BIND)
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
            failed.append(e)

    import threading  # only to make a named namespace: not on every command's path

    worker = threading.Thread(target=bind, name=f"netns-create-{name}")
    worker.start()
    worker.join()
    if failed:
        os.unlink(path)
        raise failed[0]
    return path


def remove(name: str) -> None:
    """`ip netns del NAME`; fine when it is already gone."""
    path = f"{RUN_DIR}/{name}"
    if not os.path.exists(path):
        return
    try:
        umount(path, MNT_DETACH)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: not mounted (a half-made name)
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class NsidQuery:
    """Which nsid this namespace gave other namespaces (RTM_GETNSID with NETNSA_FD), over one
    netlink socket opened here: one small request per candidate, no library round trip."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, wire.NETLINK_ROUTE)
        self.seq = 0

    def nsid(self, fd: int) -> int | None:
        self.seq += 1
        body = wire.RTGENMSG.pack(socket.AF_UNSPEC) + struct.pack("=HHI", 8, wire.NETNSA.FD, fd)
        self.sock.send(wire.HEADER.pack(16 + len(body), wire.RTM.GETNSID, wire.NLM_F_REQUEST, self.seq, 0) + body)
        data = self.sock.recv(4096)
        length, mtype = struct.unpack_from("=IH", data, 0)
        if mtype == wire.NLMSG_ERROR:
            return None
        value = wire.s32(wire.attrs(data, 16 + 4, length).get(wire.NETNSA.NSID))
        return None if value is None or value < 0 else value

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
