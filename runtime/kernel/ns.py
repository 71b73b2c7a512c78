"""Network namespaces: the one way into one. `netns(path)` moves this thread into a namespace for
a block and back (setns; no helper process, no fork; sockets opened inside stay bound to it);
`enter(path)` is a preexec_fn that moves a child process before it execs; `NsidQuery` asks a
namespace which nsid it gave others (how veth peers are found across namespaces)."""
from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import Iterator

from . import wire
from .syscalls import CLONE_NEWNET, setns


@contextlib.contextmanager
def netns(path: str | None) -> Iterator[None]:
    """This thread in the network namespace at `path` for the block (None: stay where it is)."""
    if path is None:
        yield
        return
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(target)
        raise
    try:
        setns(target, CLONE_NEWNET)
        yield
    finally:
        setns(home, CLONE_NEWNET)
        os.close(home)
        os.close(target)


def enter(path: str):
    """A preexec_fn: the child joins the namespace at `path` (for good) before it execs."""
    def _enter():
        fd = os.open(path, os.O_RDONLY)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
    return _enter


def join(path: str) -> None:
    """Move this thread (a forked child that stays there) into the namespace at `path`."""
    enter(path)()


def create(name: str) -> str:
    """A named namespace, like `ip netns add NAME` (/run/netns/NAME); through pyroute2, which does
    the shared-mount dance ip(8) does. Off every hot path: labs and tests."""
    from pyroute2 import netns as pr_netns

    pr_netns.create(name)
    return f"/run/netns/{name}"


def remove(name: str) -> None:
    """`ip netns del NAME`; fine when it is already gone."""
    if os.path.exists(f"/run/netns/{name}"):
        from pyroute2 import netns as pr_netns

        pr_netns.remove(name)


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
