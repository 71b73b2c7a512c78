"""VXLAN devices, raw: made from a description (a replay) and ensured (an overlay's device, once per
network and host).

An overlay's device is unicast only: no multicast group, `nolearning` (remote MACs come from the
cluster store, never from received traffic) and `proxy` (ARP requests are answered from the
device's neighbour table, so nothing is flooded to other hosts). Its forwarding entries: fdb.py."""
from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Address

from ..errors import Conflict
from . import link, wire
from .wire import IFLA

PORT = 4789  # IANA's VXLAN port (Linux's own default, 8472, is the pre-standard one)


def create(name: str, vni: int, port: int = PORT, local: str | None = None, dev: str | None = None,
           learning: bool = False, mtu: int | None = None, mac: str | None = None, proxy: bool = False) -> None:
    """VXLAN device `name` (VNI `vni`, UDP `port`, source `local` on underlay `dev`)."""
    data = wire.u32_attr(IFLA.VXLAN_ID, vni) + wire.attr(IFLA.VXLAN_PORT, struct.pack("!H", port)) \
        + wire.u8_attr(IFLA.VXLAN_LEARNING, int(learning)) + wire.u8_attr(IFLA.VXLAN_PROXY, int(proxy))
    if local:
        data += wire.attr(IFLA.VXLAN_LOCAL, IPv4Address(local).packed)
    if dev:
        data += wire.u32_attr(IFLA.VXLAN_LINK, link.require_index(dev))
    link.create(name, "vxlan", data, mtu=mtu, mac=mac)


def ensure(name: str, vni: int, local: IPv4Address, underlay: str, mtu: int, bridge: str) -> bool:
    """VXLAN device `name` (VNI `vni`, source `local` on `underlay`), enslaved to `bridge`, up.
    True if this call created it; an existing device must be a VXLAN with the same VNI."""
    idx = link.index(name)
    created = idx is None
    if created:
        try:
            create(name, vni, PORT, str(local), underlay if link.index(underlay) is not None else None, proxy=True, mtu=mtu)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        idx = link.require_index(name)
    found = link.get(idx) or {}
    if found.get("kind") != "vxlan" or (found.get("vxlan") or {}).get("vni") != vni:
        raise Conflict(f"Interface {name} exists and is not the VXLAN device of VNI {vni}",
                       "netdiag will not take over another interface", f"remove {name} or the network that made it")
    link.set_up(idx, master=link.require_index(bridge))
    return created
