"""Neighbour tables, raw: ARP entries (AF_INET) and the bridge/VXLAN forwarding database (AF_BRIDGE)
dumped; permanent ARP entries made, replaced and removed one by one (a replay) or in bulk (an
overlay's remote endpoints: one socket for hundreds). VXLAN forwarding entries: fdb.py."""
from __future__ import annotations

import socket
from ipaddress import IPv4Address

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


def _arp(ifindex: int, ip: IPv4Address, state: int, mac: str | None = None) -> bytes:
    body = wire.NDMSG.pack(socket.AF_INET, ifindex, state, 0, 0) + wire.attr(NDA.DST, ip.packed)
    return body + (wire.attr(NDA.LLADDR, wire.mac_bytes(mac)) if mac else b"")


def add(dev: str, address: str, lladdr: str, replace: bool = False) -> None:
    """A permanent ARP entry `address` -> `lladdr` on `dev` (EEXIST unless `replace`)."""
    from .link import require_index

    flags = wire.NLM_F_CREATE | (wire.NLM_F_REPLACE if replace else wire.NLM_F_EXCL)
    wire.request(wire.RTM.NEWNEIGH, _arp(require_index(dev), IPv4Address(address), wire.NUD_PERMANENT, lladdr), flags)


def replace(dev: str, address: str, lladdr: str) -> None:
    add(dev, address, lladdr, replace=True)


def delete(dev: str, address: str) -> None:
    from .link import require_index

    wire.request(wire.RTM.DELNEIGH, _arp(require_index(dev), IPv4Address(address), 0))


def arp_entries(ifindex: int) -> dict[str, str]:
    """IP -> MAC of the permanent ARP entries on one device."""
    return {n["dst"]: n["lladdr"] for n in dump() if n["ifindex"] == ifindex and n["state"] & wire.NUD_PERMANENT and n["lladdr"]}


def replace_arp(ifindex: int, entries: dict[IPv4Address, str]) -> list[OSError | None]:
    """Permanent entries IP -> MAC on one device (a VXLAN device with `proxy` answers ARP from them)."""
    flags = wire.NLM_F_CREATE | wire.NLM_F_REPLACE
    return wire.request_many([(wire.RTM.NEWNEIGH, _arp(ifindex, ip, wire.NUD_PERMANENT, mac), flags) for ip, mac in entries.items()])


def remove_arp(ifindex: int, ips: list[IPv4Address]) -> list[OSError | None]:
    errors = wire.request_many([(wire.RTM.DELNEIGH, _arp(ifindex, ip, 0), 0) for ip in ips])
    return [e for e in errors if e is not None and e.errno != 2]
