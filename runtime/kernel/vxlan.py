"""VXLAN devices: made through pyroute2 (once per overlay network and host, off the hot path).

An overlay's device is unicast only: no multicast group, `nolearning` (remote MACs come from the
cluster store, never from received traffic) and `proxy` (ARP requests are answered from the
device's neighbour table, so nothing is flooded to other hosts)."""
from __future__ import annotations

from ipaddress import IPv4Address

from ..errors import Conflict
from . import link

PORT = 4789  # IANA's VXLAN port (Linux's own default, 8472, is the pre-standard one)


def ensure(name: str, vni: int, local: IPv4Address, underlay: str, mtu: int, bridge: str) -> bool:
    """VXLAN device `name` (VNI `vni`, source `local` on `underlay`), enslaved to `bridge`, up.
    True if this call created it; an existing device must be a VXLAN with the same VNI."""
    from pyroute2 import IPRoute

    with IPRoute() as r:
        found = r.link_lookup(ifname=name)
        created = not found
        if created:
            dev = r.link_lookup(ifname=underlay)
            r.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=str(local), vxlan_port=PORT,
                   vxlan_learning=0, vxlan_proxy=1, mtu=mtu, **({"vxlan_link": dev[0]} if dev else {}))
            found = r.link_lookup(ifname=name)
        else:
            info = r.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            data = info.get_attr("IFLA_INFO_DATA") if kind == "vxlan" else None
            if kind != "vxlan" or data.get_attr("IFLA_VXLAN_ID") != vni:
                raise Conflict(f"Interface {name} exists and is not the VXLAN device of VNI {vni}",
                               "netdiag will not take over another interface", f"remove {name} or the network that made it")
        r.link("set", index=found[0], master=link.index(bridge), state="up")
        return created
