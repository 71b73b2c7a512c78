"""Bridges, raw: made (with a given MTU and MAC, as a replay needs) and ensured (a network's bridge
with its gateway address, up). `ensure` tolerates an existing bridge only: another kind of link of
that name is someone else's. Ports are links: link.set_port, link.configure(master=...)."""
from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Network

from ..errors import Conflict
from . import addr, link


def create(name: str, mtu: int | None = None, mac: str | None = None) -> None:
    link.create(name, "bridge", mtu=mtu, mac=mac)


def ensure(name: str, address: IPv4Address | None, subnet: IPv4Network | None, mtu: int = 1500) -> bool:
    """Bridge `name` with the gateway address (none for an overlay's bridge, which only switches),
    up. True if this call created it."""
    idx = link.index(name)
    created = idx is None
    if created:
        try:
            create(name, mtu)
        except OSError as e:
            if e.errno != errno.EEXIST:  # made meanwhile by a parallel command: check its kind below
                raise
        idx = link.require_index(name)
    if (link.get(idx) or {}).get("kind") != "bridge":
        raise Conflict(f"Interface {name} exists and is not a bridge", "netdiag will not take over another interface",
                       "choose another bridge name (-o com.docker.network.bridge.name=...)")
    if address is not None and str(address) not in {a["local"] or a["address"] for a in addr.dump() if a["index"] == idx}:
        addr.add(idx, address, subnet.prefixlen)
    link.set_up(idx)
    return created
