"""The one netlink boundary: every kernel network object netdiag makes is made here, via pyroute2.

Functions act in the network namespace the process is in, unless given a namespace path (e.g.
/proc/PID/ns/net). pyroute2 is imported on first use: commands that need no netlink never pay it.
Creation checks kinds ("ensure" tolerates an existing object of the right kind only); deletion
succeeds when the object is already gone (like CNI's DEL).
"""
from __future__ import annotations

import contextlib
import errno
import os
from ipaddress import IPv4Address, IPv4Network
from typing import Iterator

from .errors import Conflict, KernelError


@contextlib.contextmanager
def ipr(netns: str | None = None) -> Iterator:
    from pyroute2 import IPRoute

    r = IPRoute(netns=netns) if netns else IPRoute()
    try:
        yield r
    finally:
        r.close()


def _index(r, name: str) -> int | None:
    found = r.link_lookup(ifname=name)
    return found[0] if found else None


def link_kind(r, index: int) -> str | None:
    link = r.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def ensure_bridge(name: str, address: IPv4Address, subnet: IPv4Network, mtu: int = 1500) -> bool:
    """Create bridge `name` with the gateway address and bring it up. Returns True if created."""
    with ipr() as r:
        idx = _index(r, name)
        created = idx is None
        if created:
            r.link("add", ifname=name, kind="bridge", mtu=mtu)
            idx = _index(r, name)
        elif link_kind(r, idx) != "bridge":
            raise Conflict(f"Interface {name} exists and is not a bridge", "netdiag will not take over another interface",
                           "choose another bridge name (-o com.docker.network.bridge.name=...)")
        have = {a.get_attr("IFA_ADDRESS") for a in r.get_addr(index=idx, family=2)}
        if str(address) not in have:
            r.addr("add", index=idx, address=str(address), prefixlen=subnet.prefixlen)
        r.link("set", index=idx, state="up")
        return created


def delete_link(name: str, netns: str | None = None) -> None:
    """Delete a link; fine when it is already gone."""
    from . import rtnl

    with rtnl.netns(netns) if netns else contextlib.nullcontext():
        idx = rtnl.index(name)
        if idx is None:
            return
        try:
            rtnl.delete(idx)
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise


def link_exists(name: str, netns: str | None = None) -> bool:
    from . import rtnl

    with rtnl.netns(netns) if netns else contextlib.nullcontext():
        return rtnl.index(name) is not None


def add_veth_to_bridge(host_name: str, peer_name: str, peer_netns: str, bridge: str, mtu: int, peer_mac: str) -> None:
    """Create a veth pair whose peer is born in `peer_netns` (no move), host end enslaved, up, and
    in hairpin mode (a container reaching its own published port is DNAT'd back out of its port).
    The hot path of every `run`: raw rtnetlink (runtime/rtnl.py), no pyroute2 import."""
    from . import rtnl

    br = rtnl.index(bridge)
    if br is None:
        raise KernelError(f"Bridge {bridge} is missing", "its network's device was deleted", "recreate the network or run 'netdiag network ls' to restore it")
    fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        rtnl.create_veth(host_name, peer_name, fd, mtu, peer_mac)
    finally:
        os.close(fd)
    idx = rtnl.index(host_name)
    rtnl.set_up(idx, master=br)
    rtnl.set_hairpin(idx)


def configure_endpoint(netns: str, ifname: str, ip: IPv4Address, subnet: IPv4Network, gateway: IPv4Address | None) -> None:
    """Inside the container's namespace: address, link up, and the default route via the gateway."""
    from . import rtnl

    with rtnl.netns(netns):
        idx = rtnl.index(ifname)
        rtnl.add_address(idx, ip, subnet.prefixlen)
        rtnl.set_up(idx)
        if gateway is not None:
            rtnl.add_default_route(gateway, idx)


def routes_v4(netns: str | None = None) -> list[tuple[IPv4Network, str]]:
    """(destination, device) of every IPv4 route in every table, for overlap checks."""
    out = []
    with ipr(netns) as r:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in r.get_links()}
        for route in r.get_routes(family=2):  # a dump: every table
            dst = route.get_attr("RTA_DST")
            if dst is None or route["dst_len"] == 0:
                continue
            if route.get_attr("RTA_TABLE") == 255:  # local table: host addresses, not subnets
                continue
            out.append((IPv4Network(f"{dst}/{route['dst_len']}", strict=False), names.get(route.get_attr("RTA_OIF"), "")))
    return out


def set_sysctl(path: str, value: str) -> None:
    """Write /proc/sys/PATH in the current network namespace (e.g. net/ipv4/ip_forward)."""
    full = "/proc/sys/" + path
    with open(full) as f:
        if f.read().strip() == value:
            return
    with open(full, "w") as f:
        f.write(value)
