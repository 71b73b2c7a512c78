"""A VXLAN device's forwarding entries over raw netlink: one appended as a snapshot describes it (a
replay), or in bulk (hundreds per batch in a few milliseconds). Each remote MAC of an overlay gets
the device's own entry (NTF_SELF, the remote VTEP as dst) and the bridge's static entry
(NTF_MASTER), so unicast to it is neither flooded on the bridge nor sent anywhere but its host."""
from __future__ import annotations

import socket
from ipaddress import IPv4Address

from . import neigh, wire
from .wire import NDA


def _body(ifindex: int, mac: str, state: int, flags: int, dst: IPv4Address | None = None) -> bytes:
    body = wire.NDMSG.pack(socket.AF_BRIDGE, ifindex, state, flags, 0) + wire.attr(NDA.LLADDR, wire.mac_bytes(mac))
    return body + (wire.attr(NDA.DST, dst.packed) if dst is not None else b"")


def append(dev: str, lladdr: str, dst: str, vni: int | None = None) -> None:
    """One more forwarding entry of `dev` (like `bridge fdb append`): frames for `lladdr` (00:..:00 =
    every unknown one, which may have several VTEPs) go to VTEP `dst`."""
    from .link import require_index

    body = _body(require_index(dev), lladdr, wire.NUD_PERMANENT, wire.NTF_SELF, IPv4Address(dst))
    wire.request(wire.RTM.NEWNEIGH, body + (wire.u32_attr(NDA.VNI, vni) if vni is not None else b""),
                 wire.NLM_F_CREATE | wire.NLM_F_APPEND)


def entries(ifindex: int) -> dict[str, str]:
    """MAC -> remote VTEP of the device's own (NTF_SELF) entries that carry a destination."""
    return {f["lladdr"]: f["dst"] for f in neigh.fdb() if f["ifindex"] == ifindex and f["dst"] and f["flags"] & wire.NTF_SELF
            and f["master"] is None}


def replace(ifindex: int, remotes: dict[str, IPv4Address]) -> list[OSError | None]:
    """Point each MAC at its VTEP (replacing a stale destination), with the bridge's static entry."""
    create = wire.NLM_F_CREATE | wire.NLM_F_REPLACE
    msgs = []
    for mac, vtep in remotes.items():
        msgs.append((wire.RTM.NEWNEIGH, _body(ifindex, mac, wire.NUD_PERMANENT, wire.NTF_SELF, vtep), create))
        msgs.append((wire.RTM.NEWNEIGH, _body(ifindex, mac, wire.NUD_NOARP, wire.NTF_MASTER), create))
    return wire.request_many(msgs)


def remove(ifindex: int, macs: list[str]) -> list[OSError | None]:
    """Remove both entries of each MAC; an entry already gone is fine."""
    msgs = []
    for mac in macs:
        msgs.append((wire.RTM.DELNEIGH, _body(ifindex, mac, 0, wire.NTF_SELF), 0))
        msgs.append((wire.RTM.DELNEIGH, _body(ifindex, mac, 0, wire.NTF_MASTER), 0))
    return [e for e in wire.request_many(msgs) if e is not None and e.errno != 2]  # ENOENT: already gone
