"""The connection tracking table, raw (ctnetlink over NETLINK_NETFILTER): each IPv4 entry's original
tuple and status, as a full dump or as the events a namespace's conntrack multicasts (new, update,
destroy: what `watch` makes UDP and ICMP flows without a reply of). ctnetlink's numbers are big-endian."""
from __future__ import annotations

import errno
import socket
import struct

from . import sockfilter, wire
from .ns import netns
from .sockfilter import JEQ, LDB, LDH, RET

IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NFNL_SUBSYS_CTNETLINK = 1
NFGENMSG = struct.Struct("!BBH")  # family, version, res_id
CTA_TUPLE_ORIG, CTA_STATUS = 1, 3
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE = 1, 2, 3, 4, 5
NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY = 1, 2, 3
NLM_F_CREATE = 0x400
IPS_SEEN_REPLY = 1 << 1
# Where an IPv4 event says its protocol: the original tuple is a message's first attribute, its
# addresses two fixed-size attributes, then the protocol number's attribute (nla_len 5, type 1;
# loaded big-endian: 0x0500, 0x0100). Offsets from the netlink header.
FAMILY_AT, PROTO_NLA_AT, PROTO_AT = 16, 48, 52
# The kernel drops IPv6 and TCP events before they are queued (TCP is the tracepoints' business: a
# busy host's connects would cost watch thousands of messages a second); a message not laid out as
# expected is kept, for the decoder to judge.
UDP_AND_ICMP = sockfilter.assemble([
    ("", LDB, "", "", FAMILY_AT),
    ("", JEQ, "", "drop", socket.AF_INET),
    ("", LDH, "", "", PROTO_NLA_AT),
    ("", JEQ, "", "keep", 0x0500),
    ("", LDH, "", "", PROTO_NLA_AT + 2),
    ("", JEQ, "", "keep", 0x0100),
    ("", LDB, "", "", PROTO_AT),
    ("", JEQ, "drop", "keep", socket.IPPROTO_TCP),
    ("keep", RET, "", "", 0xFFFFFFFF),
    ("drop", RET, "", "", 0),
])
SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20  # a burst of new flows (a scan) arrives at once: room for tens of thousands of events


def _nested(raw: bytes | None) -> dict[int, bytes]:
    return wire.attrs(raw, 0, len(raw)) if raw else {}


def _be(raw: bytes | None, fmt: str) -> int | None:
    return struct.unpack(fmt, raw[:struct.calcsize(fmt)])[0] if raw else None


def _entry(data: bytes, body: int, end: int) -> dict:
    a = wire.attrs(data, body + NFGENMSG.size, end)
    tup = _nested(a.get(CTA_TUPLE_ORIG))
    ip, pr = _nested(tup.get(CTA_TUPLE_IP)), _nested(tup.get(CTA_TUPLE_PROTO))
    out = {"src": wire.ip(ip.get(CTA_IP_V4_SRC)), "dst": wire.ip(ip.get(CTA_IP_V4_DST)),
           "proto": pr[CTA_PROTO_NUM][0] if CTA_PROTO_NUM in pr else None,
           "sport": _be(pr.get(CTA_PROTO_SRC_PORT), "!H"), "dport": _be(pr.get(CTA_PROTO_DST_PORT), "!H"),
           "status": _be(a.get(CTA_STATUS), "!I")}
    if CTA_PROTO_ICMP_ID in pr:  # an ICMP echo: its id (what tells two pings apart) and type
        out["icmp_id"], out["icmp_type"] = _be(pr[CTA_PROTO_ICMP_ID], "!H"), pr.get(CTA_PROTO_ICMP_TYPE, b"\xff")[0]
    return out


def dump() -> list[dict]:
    """src, dst, proto, sport, dport (None for protocols without ports), status of every entry."""
    return [_entry(*m) for m in wire.dump((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                                          NFGENMSG.pack(socket.AF_INET, 0, 0), wire.NETLINK_NETFILTER)]


def subscribe(path: str | None) -> socket.socket:
    """A non-blocking socket that receives the conntrack events (new, update, destroy) of the network
    namespace at `path` (None: this one), wherever it is read from. Raises OSError."""
    with netns(path):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                             wire.NETLINK_NETFILTER)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sockfilter.attach(sock, UDP_AND_ICMP)
        groups = (1 << (NFNLGRP_CONNTRACK_NEW - 1)) | (1 << (NFNLGRP_CONNTRACK_UPDATE - 1)) | (1 << (NFNLGRP_CONNTRACK_DESTROY - 1))
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


def parse_events(data: bytes) -> list[dict]:
    """The IPv4 entries of one datagram of events, each with "event": new, update or destroy."""
    out = []
    off = 0
    while off + 16 <= len(data):
        length, mtype, flags = struct.unpack_from("=IHH", data, off)
        if length < 16:
            break
        kind = {IPCTNL_MSG_CT_NEW: "new" if flags & NLM_F_CREATE else "update", IPCTNL_MSG_CT_DELETE: "destroy"}.get(mtype & 0xff)
        if mtype >> 8 == NFNL_SUBSYS_CTNETLINK and kind and data[off + 16] == socket.AF_INET:
            out.append({"event": kind, **_entry(data, off + 16, off + length)})
        off += (length + 3) & ~3
    return out


def read_events(sock: socket.socket) -> tuple[list[dict], int]:
    """Every event waiting on a subscribed socket (non-blocking) and how many overruns were reported
    (ENOBUFS: the kernel dropped events the socket had no room for)."""
    out, overruns = [], 0
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return out, overruns
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            overruns += 1
            continue
        if not data:
            return out, overruns
        out += parse_events(data)
