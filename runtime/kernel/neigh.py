"""Neighbour tables: ARP entries (AF_INET) and the bridge/VXLAN forwarding database (AF_BRIDGE)."""
from __future__ import annotations

import socket

from . import wire
from .wire import NDA


def dump(family: int = socket.AF_INET) -> list[dict]:
    """ifindex, state, flags, dst, lladdr, master index, vni of every entry of `family`."""
    out = []
    for data, body, end in wire.dump(wire.RTM.GETNEIGH, wire.NDMSG.pack(family, 0, 0, 0, 0)):
        _, ifindex, state, flags, _ = wire.NDMSG.unpack_from(data, body)
        a = wire.attrs(data, body + wire.NDMSG.size, end)
        out.append({"ifindex": ifindex, "state": state, "flags": flags, "dst": wire.ip(a.get(NDA.DST)),
                    "lladdr": wire.mac(a.get(NDA.LLADDR)), "master": wire.u32(a.get(NDA.MASTER)), "vni": wire.u32(a.get(NDA.VNI))})
    return out


def fdb() -> list[dict]:
    return dump(socket.AF_BRIDGE)
