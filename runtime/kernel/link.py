"""Links: dumped raw (every field netdiag reads: kind, peer index and netnsid, VXLAN and bridge-port
data), and made raw on the run path (a veth pair born in the container's namespace, never moved:
moving costs ~20 ms); a bridge is made through pyroute2, off the hot path. `ensure` tolerates an
existing object of the right kind only; delete succeeds when it is already gone (like CNI's DEL)."""
from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Network

from ..errors import Conflict, KernelError
from . import wire
from .ns import netns
from .wire import IFLA


def index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def exists(name: str, ns_path: str | None = None) -> bool:
    with netns(ns_path):
        return index(name) is not None


def names() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def dump() -> list[dict]:
    """Every link of this namespace: index, flags, name, mac, mtu, state, master index, peer index
    and netnsid, kind, slave kind, VXLAN and bridge-port details (raw values)."""
    out = []
    for data, body, end in wire.dump(wire.RTM.GETLINK, wire.IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        _, _, idx, flags, _ = wire.IFINFOMSG.unpack_from(data, body)
        a = wire.attrs(data, body + wire.IFINFOMSG.size, end)
        info = wire.attrs(a[IFLA.LINKINFO], 0, len(a[IFLA.LINKINFO])) if IFLA.LINKINFO in a else {}
        entry = {"index": idx, "flags": flags, "name": wire.string(a.get(IFLA.IFNAME)), "mac": wire.mac(a.get(IFLA.ADDRESS)),
                 "mtu": wire.u32(a.get(IFLA.MTU)), "master": wire.u32(a.get(IFLA.MASTER)), "link": wire.u32(a.get(IFLA.LINK)),
                 "state": wire.OPERSTATES.get(a[IFLA.OPERSTATE][0], "UNKNOWN") if IFLA.OPERSTATE in a else None,
                 "link_netnsid": wire.s32(a.get(IFLA.LINK_NETNSID)),
                 "kind": wire.string(info.get(IFLA.INFO_KIND)), "slave_kind": wire.string(info.get(IFLA.INFO_SLAVE_KIND))}
        if entry["kind"] == "vxlan" and IFLA.INFO_DATA in info:
            d = wire.attrs(info[IFLA.INFO_DATA], 0, len(info[IFLA.INFO_DATA]))
            entry["vxlan"] = {"vni": wire.u32(d.get(1)), "group": wire.ip(d.get(2)), "link": wire.u32(d.get(3)),
                              "local": wire.ip(d.get(4)), "learning": bool(d[7][0]) if 7 in d else False,
                              "proxy": bool(d[11][0]) if 11 in d else False,
                              "port": struct.unpack("!H", d[15][:2])[0] if 15 in d else None, "df": d[29][0] if 29 in d else 0}
        if entry["slave_kind"] == "bridge" and IFLA.INFO_SLAVE_DATA in info:
            d = wire.attrs(info[IFLA.INFO_SLAVE_DATA], 0, len(info[IFLA.INFO_SLAVE_DATA]))
            entry["bridge_port"] = {"hairpin": bool(d[IFLA.BRPORT_MODE][0]) if IFLA.BRPORT_MODE in d else False,
                                    "isolated": bool(d[IFLA.BRPORT_ISOLATED][0]) if IFLA.BRPORT_ISOLATED in d else False,
                                    "state": d[IFLA.BRPORT_STATE][0] if IFLA.BRPORT_STATE in d else None}
        out.append(entry)
    return out


def _ifinfo(idx: int = 0, flags: int = 0, change: int = 0, family: int = 0) -> bytes:
    return wire.IFINFOMSG.pack(family, 0, idx, flags, change)


def create_veth(host_name: str, peer_name: str, peer_netns_fd: int, mtu: int = 1500, peer_mac: str | None = None) -> None:
    """A veth pair: `host_name` here, `peer_name` born in the namespace of `peer_netns_fd`."""
    mac = wire.attr(IFLA.ADDRESS, bytes.fromhex(peer_mac.replace(":", ""))) if peer_mac else b""
    peer = _ifinfo() + wire.name_attr(IFLA.IFNAME, peer_name) + mac \
        + wire.u32_attr(IFLA.MTU, mtu) + wire.u32_attr(IFLA.NET_NS_FD, peer_netns_fd)
    info = wire.nested(IFLA.LINKINFO, wire.attr(IFLA.INFO_KIND, b"veth\0"),
                       wire.nested(IFLA.INFO_DATA, wire.attr(IFLA.VETH_INFO_PEER, peer)))
    wire.request(wire.RTM.NEWLINK, _ifinfo() + wire.name_attr(IFLA.IFNAME, host_name) + wire.u32_attr(IFLA.MTU, mtu) + info,
                 wire.NLM_F_CREATE | wire.NLM_F_EXCL)


def set_up(idx: int, master: int | None = None) -> None:
    extra = wire.u32_attr(IFLA.MASTER, master) if master is not None else b""
    wire.request(wire.RTM.NEWLINK, _ifinfo(idx, wire.IFF_UP, wire.IFF_UP) + extra)


def set_hairpin(idx: int) -> None:
    """Hairpin mode on a bridge port: a container reaching its own published port is DNATed back out of it."""
    wire.request(wire.RTM.SETLINK, _ifinfo(idx, family=socket.AF_BRIDGE) +
                 wire.nested(IFLA.PROTINFO, wire.attr(IFLA.BRPORT_MODE, b"\x01")))


def delete(name: str, ns_path: str | None = None) -> None:
    """Delete a link; fine when it is already gone."""
    with netns(ns_path):
        idx = index(name)
        if idx is None:
            return
        try:
            wire.request(wire.RTM.DELLINK, _ifinfo(idx))
        except OSError as e:
            if e.errno != errno.ENODEV:
                raise


def veth_to_bridge(host_name: str, peer_name: str, peer_ns_path: str, bridge: str, mtu: int, peer_mac: str) -> None:
    """A veth pair whose peer is born in `peer_ns_path`, the host end enslaved to `bridge`, up, in
    hairpin mode. The hot path of every `run`."""
    br = index(bridge)
    if br is None:
        raise KernelError(f"Bridge {bridge} is missing", "its network's device was deleted",
                          "recreate the network or run 'netdiag network ls' to restore it")
    fd = os.open(peer_ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        create_veth(host_name, peer_name, fd, mtu, peer_mac)
    finally:
        os.close(fd)
    idx = index(host_name)
    set_up(idx, master=br)
    set_hairpin(idx)


def ensure_bridge(name: str, address: IPv4Address | None, subnet: IPv4Network | None, mtu: int = 1500) -> bool:
    """Bridge `name` with the gateway address (none for an overlay's bridge, which only switches),
    up. True if this call created it. Through pyroute2: made once per network, so its import cost
    does not matter here."""
    from pyroute2 import IPRoute

    with IPRoute() as r:
        found = r.link_lookup(ifname=name)
        created = not found
        if created:
            r.link("add", ifname=name, kind="bridge", mtu=mtu)
            found = r.link_lookup(ifname=name)
        else:
            info = r.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
            if (info.get_attr("IFLA_INFO_KIND") if info else None) != "bridge":
                raise Conflict(f"Interface {name} exists and is not a bridge", "netdiag will not take over another interface",
                               "choose another bridge name (-o com.docker.network.bridge.name=...)")
        idx = found[0]
        have = {a.get_attr("IFA_ADDRESS") for a in r.get_addr(index=idx, family=2)}
        if address is not None and str(address) not in have:
            r.addr("add", index=idx, address=str(address), prefixlen=subnet.prefixlen)
        r.link("set", index=idx, state="up")
        return created
