"""IPv4 addresses: dumped raw (cheap enough to ask every namespace on a host with hundreds when
looking for who owns an address), added raw on the run path, deleted raw."""
from __future__ import annotations

import socket
from ipaddress import IPv4Address

from . import wire
from .wire import IFA


def dump() -> list[dict]:
    """index, prefixlen, scope, address, local of every IPv4 address of this namespace."""
    out = []
    for data, body, end in wire.dump(wire.RTM.GETADDR, wire.IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
        _, prefixlen, _, scope, idx = wire.IFADDRMSG.unpack_from(data, body)
        a = wire.attrs(data, body + wire.IFADDRMSG.size, end)
        out.append({"index": idx, "prefixlen": prefixlen, "scope": scope, "address": wire.ip(a.get(IFA.ADDRESS)),
                    "local": wire.ip(a.get(IFA.LOCAL))})
    return out


def ipv4() -> list[str]:
    """This namespace's own IPv4 addresses."""
    return [a["local"] or a["address"] for a in dump()]


def add(idx: int, ip: IPv4Address, prefixlen: int) -> None:
    body = wire.IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, 0, idx) + wire.attr(IFA.LOCAL, ip.packed) + wire.attr(IFA.ADDRESS, ip.packed)
    wire.request(wire.RTM.NEWADDR, body, wire.NLM_F_CREATE | wire.NLM_F_EXCL)


def delete(idx: int, ip: IPv4Address, prefixlen: int) -> None:
    body = wire.IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, 0, idx) + wire.attr(IFA.LOCAL, ip.packed)
    wire.request(wire.RTM.DELADDR, body)
