"""The connection tracking table, raw (ctnetlink over NETLINK_NETFILTER): each IPv4 entry's original
tuple and status. Read for full snapshots only. ctnetlink's numbers are big-endian."""
from __future__ import annotations

import socket
import struct

from . import wire

IPCTNL_MSG_CT_GET = (1 << 8) | 1  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
NFGENMSG = struct.Struct("!BBH")  # family, version, res_id
CTA_TUPLE_ORIG, CTA_STATUS = 1, 3
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3


def _nested(raw: bytes | None) -> dict[int, bytes]:
    return wire.attrs(raw, 0, len(raw)) if raw else {}


def _be(raw: bytes | None, fmt: str) -> int | None:
    return struct.unpack(fmt, raw[:struct.calcsize(fmt)])[0] if raw else None


def dump() -> list[dict]:
    """src, dst, proto, sport, dport (None for protocols without ports), status of every entry."""
    out = []
    for data, body, end in wire.dump(IPCTNL_MSG_CT_GET, NFGENMSG.pack(socket.AF_INET, 0, 0), wire.NETLINK_NETFILTER):
        a = wire.attrs(data, body + NFGENMSG.size, end)
        tup = _nested(a.get(CTA_TUPLE_ORIG))
        ip, pr = _nested(tup.get(CTA_TUPLE_IP)), _nested(tup.get(CTA_TUPLE_PROTO))
        out.append({"src": wire.ip(ip.get(CTA_IP_V4_SRC)), "dst": wire.ip(ip.get(CTA_IP_V4_DST)),
                    "proto": pr[CTA_PROTO_NUM][0] if CTA_PROTO_NUM in pr else None,
                    "sport": _be(pr.get(CTA_PROTO_SRC_PORT), "!H"), "dport": _be(pr.get(CTA_PROTO_DST_PORT), "!H"),
                    "status": _be(a.get(CTA_STATUS), "!I")})
    return out
