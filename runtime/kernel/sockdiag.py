"""Sockets of this namespace from the kernel's sock_diag netlink (SOCK_DIAG_BY_FAMILY)."""
from __future__ import annotations

import socket
import struct

from . import wire

SOCK_DIAG_BY_FAMILY = 20
TCP_SYN_SENT = 1 << 2
TCP_LISTEN = 1 << 10
ALL_STATES = 0xFFF


def sockets(family: int, protocol: int, states: int) -> list[tuple[str, int, int]]:
    """(local address, port, inode) per socket. An IPv6 socket bound to :: also accepts IPv4
    (unless v6only), which is how busybox httpd listens: "*:80"."""
    req = struct.pack("=BBBBI", family, protocol, 0, 0, states) + bytes(48) + struct.pack("=II", 0xFFFFFFFF, 0xFFFFFFFF)
    out = []
    for data, body, _ in wire.dump(SOCK_DIAG_BY_FAMILY, req, wire.NETLINK_SOCK_DIAG):
        sport = struct.unpack_from("!H", data, body + 4)[0]
        src = socket.inet_ntop(family, data[body + 8: body + (12 if family == socket.AF_INET else 24)])
        inode = struct.unpack_from("=I", data, body + 68)[0]
        out.append((src, sport, inode))
    return out


def connecting() -> set[tuple[str, int, str, int]]:
    """(local address, port, remote address, port) of this namespace's IPv4 TCP sockets whose
    connect waits for an answer (SYN_SENT)."""
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, TCP_SYN_SENT) + bytes(48) + \
        struct.pack("=II", 0xFFFFFFFF, 0xFFFFFFFF)
    out = set()
    for data, body, _ in wire.dump(SOCK_DIAG_BY_FAMILY, req, wire.NETLINK_SOCK_DIAG):
        sport, dport = struct.unpack_from("!HH", data, body + 4)
        src = socket.inet_ntop(socket.AF_INET, data[body + 8: body + 12])
        dst = socket.inet_ntop(socket.AF_INET, data[body + 24: body + 28])
        out.add((src, sport, dst, dport))
    return out


def listening() -> list[dict]:
    """Listening TCP and bound UDP sockets (IPv4 and IPv6)."""
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for proto, number, states in (("tcp", socket.IPPROTO_TCP, TCP_LISTEN), ("udp", socket.IPPROTO_UDP, ALL_STATES)):
            for local, port, inode in sockets(family, number, states):
                if proto == "udp" and port == 0:
                    continue
                if local.startswith("::ffff:") and "." in local:
                    local = local[7:]  # an IPv4 address on an IPv6 socket
                out.append({"proto": proto, "state": "LISTEN" if proto == "tcp" else "UNCONN", "local": local,
                            "family": 6 if ":" in local else 4, "port": port, "inode": inode,
                            "loopback_only": local.startswith("127.") or local == "::1"})
    return out
