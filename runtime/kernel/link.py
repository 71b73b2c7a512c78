"""Links, raw: dumped (every field netdiag reads: kind, peer index and netnsid, VXLAN and bridge-port
data), a veth pair made on the run path (born in the container's namespace, never moved: moving
costs ~20 ms), any link's settings (MAC, MTU, master, state, bridge-port flags) changed, and deleted
(fine when it is already gone, like CNI's DEL). Bridges and VXLAN devices: bridge.py, vxlan.py."""
from __future__ import annotations

import errno
import socket
import struct

from ..errors import KernelError
from . import wire
from .ns import netns
from .syscalls import open_owned
from .wire import IFLA


def index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def require_index(name: str) -> int:
    """The index of `name`; OSError(ENODEV) when there is no such link here."""
    idx = index(name)
    if idx is None:
        raise OSError(errno.ENODEV, f"no interface {name}")
    return idx


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


def create(name: str, kind: str, data: bytes = b"", mtu: int | None = None, mac: str | None = None) -> None:
    """A link of `kind` (bridge, vxlan ...) with its IFLA_INFO_DATA attributes `data`; EEXIST if a
    link of that name is there."""
    info = wire.attr(IFLA.INFO_KIND, kind.encode() + b"\0") + (wire.nested(IFLA.INFO_DATA, data) if data else b"")
    body = _ifinfo() + wire.name_attr(IFLA.IFNAME, name) + wire.nested(IFLA.LINKINFO, info)
    body += (wire.u32_attr(IFLA.MTU, mtu) if mtu else b"") + (wire.attr(IFLA.ADDRESS, wire.mac_bytes(mac)) if mac else b"")
    wire.request(wire.RTM.NEWLINK, body, wire.NLM_F_CREATE | wire.NLM_F_EXCL)


def get(idx: int) -> dict | None:
    """dump()'s entry of the link with index `idx`."""
    return next((x for x in dump() if x["index"] == idx), None)


def configure(name: str, *, mac: str | None = None, mtu: int | None = None, master: str | None = None,
              up: bool | None = None) -> None:
    """Set what is given: MAC, MTU, master (by name), admin state."""
    idx = require_index(name)
    body = b""
    if mac:
        body += wire.attr(IFLA.ADDRESS, wire.mac_bytes(mac))
    if mtu:
        body += wire.u32_attr(IFLA.MTU, mtu)
    if master:
        body += wire.u32_attr(IFLA.MASTER, require_index(master))
    if body or up is not None:
        wire.request(wire.RTM.NEWLINK, _ifinfo(idx, wire.IFF_UP if up else 0, 0 if up is None else wire.IFF_UP) + body)


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


def set_port(name: str, *, hairpin: bool, isolated: bool | None = None) -> None:
    """Flags of a bridge port (the link must be enslaved). Hairpin mode: a container reaching its own
    published port is DNATed back out of the port it came in by."""
    flags = wire.u8_attr(IFLA.BRPORT_MODE, int(hairpin))
    if isolated is not None:
        flags += wire.u8_attr(IFLA.BRPORT_ISOLATED, int(isolated))
    wire.request(wire.RTM.SETLINK, _ifinfo(require_index(name), family=socket.AF_BRIDGE) + wire.nested(IFLA.PROTINFO, flags))


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
    with open_owned(peer_ns_path) as peer_ns:
        create_veth(host_name, peer_name, peer_ns.fileno(), mtu, peer_mac)
    idx = index(host_name)
    set_up(idx, master=br)
    set_port(host_name, hairpin=True)
