"""Where a resolver listens: an address of its own namespace (bind), or, for the overlays'
resolver, 127.0.0.11:53 inside a container's network namespace (open_sandbox), as Docker's
embedded DNS does it: its sockets are bound to 127.0.0.11 on a free port, and a DNAT rule in the
container's namespace (its own nftables table, netdiag_dns) sends 127.0.0.11:53 there, so port 53
stays free for a DNS server the container runs itself. Conntrack turns the replies back into
127.0.0.11:53. A socket keeps the namespace it was made in, so the process never stays in one:
it enters, makes its sockets and the rule, and is back at once. A namespace is opened by its /proc
path and used only while it is the inode the runtime recorded: a pid reused by another process
is never served."""
from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from typing import Iterator

SANDBOX_ADDRESS = "127.0.0.11"  # Docker's embedded DNS address, inside each container
TABLE = "netdiag_dns"


def bind(listen_ip: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on listen_ip:port. With port 0 both get the same free port."""
    family = socket.AF_INET6 if ipaddress.ip_address(listen_ip).version == 6 else socket.AF_INET
    for attempt in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((listen_ip, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((listen_ip, udp.getsockname()[1]))
            tcp.listen(64)
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            if port != 0 or e.errno != 98 or attempt == 19:  # EADDRINUSE: pick another free port
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _inside(netns: str, inode: int) -> Iterator[bool]:
    """In the namespace at `netns` for the block, if it still is `inode` (else yields False)."""
    from runtime.kernel.ns import Namespace

    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        if os.fstat(fd).st_ino != inode:
            yield False
            return
        with Namespace(f"/proc/self/fd/{fd}").inside():
            yield True
    finally:
        os.close(fd)


def redirect(port: int) -> str:
    """The nft script that sends 127.0.0.11:53 (UDP and TCP) to the resolver's port, replacing any
    earlier one (one transaction)."""
    rules = "".join(f"        ip daddr {SANDBOX_ADDRESS} {proto} dport 53 dnat to {SANDBOX_ADDRESS}:{int(port)}\n"
                    for proto in ("udp", "tcp"))
    return (f"table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n    chain output {{\n"
            f"        type nat hook output priority -100; policy accept;\n{rules}    }}\n}}\n")


def open_sandbox(netns: str, inode: int) -> tuple[socket.socket, socket.socket] | tuple[()]:
    """UDP and TCP sockets answering 127.0.0.11:53 inside the namespace; () when it is gone, is
    another one now, or refuses the rule."""
    from runtime.errors import NetdiagError
    from runtime.kernel import nft

    socks: tuple = ()
    try:
        with _inside(netns, inode) as there:
            if not there:
                return ()
            socks = bind(SANDBOX_ADDRESS, 0)
            nft.run(redirect(socks[0].getsockname()[1]))
            return socks
    except (OSError, NetdiagError):
        for s in socks:
            s.close()
        return ()


def close_sandbox(netns: str, inode: int) -> None:
    """Remove the rule from a namespace still running (a container that left its last overlay)."""
    from runtime.errors import NetdiagError
    from runtime.kernel import nft

    try:
        with _inside(netns, inode) as there:
            if there:
                nft.run(f"table ip {TABLE}\ndelete table ip {TABLE}\n")
    except (OSError, NetdiagError):
        pass  # gone with its namespace
