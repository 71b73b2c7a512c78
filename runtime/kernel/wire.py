"""Netlink on the wire, declared once: message layouts and attribute numbers as named tables (the
way pyroute2 declares its nla_map), attribute packing and parsing, one acknowledged request and one
dump. Sockets are opened in the calling thread, so they belong to the network namespace that
thread is in (see ns.netns). A kernel error becomes OSError(errno).

Raw netlink, not pyroute2, for every kernel object (the figures: this package's docstring):
pyroute2's import alone costs more than every request of a container's attach together, and it
decodes a dump of a 500-port bridge in seconds where this takes milliseconds.
"""
from __future__ import annotations

import os
import socket
import struct

# -- protocols and message types -------------------------------------------------------------------
NETLINK_ROUTE, NETLINK_SOCK_DIAG, NETLINK_NETFILTER = 0, 4, 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLM_F_REPLACE, NLM_F_APPEND = 0x100, 0x800
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10  # acks without a copy of the request: batches stay small
NLA_F_NESTED = 0x8000
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid


class RTM:
    NEWLINK, DELLINK, GETLINK, SETLINK = 16, 17, 18, 19
    NEWADDR, DELADDR, GETADDR = 20, 21, 22
    NEWROUTE, DELROUTE, GETROUTE = 24, 25, 26
    NEWNEIGH, DELNEIGH, GETNEIGH = 28, 29, 30
    NEWRULE, DELRULE, GETRULE = 32, 33, 34
    GETNSID = 90


# -- message bodies (struct layouts) -----------------------------------------------------------------
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
FIB_RULE_HDR = RTMSG  # fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags
RTGENMSG = struct.Struct("=Bxxx")


# -- attribute numbers ---------------------------------------------------------------------------------
class IFLA:
    ADDRESS, IFNAME, MTU, LINK, MASTER, PROTINFO, OPERSTATE, LINKINFO, NET_NS_FD, LINK_NETNSID = 1, 3, 4, 5, 10, 12, 16, 18, 28, 37
    INFO_KIND, INFO_DATA, INFO_SLAVE_KIND, INFO_SLAVE_DATA = 1, 2, 4, 5
    VETH_INFO_PEER = 1
    BRPORT_STATE, BRPORT_MODE, BRPORT_ISOLATED = 1, 4, 33
    # IFLA_VXLAN_*: the attributes netdiag reads and writes of a VXLAN device
    VXLAN_ID, VXLAN_LINK, VXLAN_LOCAL, VXLAN_LEARNING, VXLAN_PROXY, VXLAN_PORT = 1, 3, 4, 7, 11, 15
    VXLAN = {1: "vni", 2: "group", 3: "link", 4: "local", 7: "learning", 11: "proxy", 15: "port", 29: "df"}


class IFA:
    ADDRESS, LOCAL = 1, 2


class RTA:
    DST, OIF, GATEWAY, PRIORITY, PREFSRC, TABLE = 1, 4, 5, 6, 7, 15


class FRA:
    DST, SRC, IIFNAME, PRIORITY, FWMARK, SUPPRESS_PREFIXLEN, TABLE, OIFNAME = 1, 2, 3, 6, 10, 14, 15, 17


FIB_RULE_INVERT = 0x2  # fib_rule_hdr.flags: `ip rule not ...` (the rule matches what its selectors do not)


RT_TABLE_COMPAT = 252  # the header's table when the real one (in RTA_TABLE/FRA_TABLE) needs 32 bits


class NDA:
    DST, LLADDR, VNI, MASTER = 1, 2, 7, 9


# neighbour states and flags (ndm_state, ndm_flags): a VXLAN forwarding entry is NTF_SELF (the
# device's own table, with a remote VTEP); the bridge's entry for the same MAC is NTF_MASTER and
# "static" (NUD_NOARP; NUD_PERMANENT there would mean a local address of the bridge)
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF, NTF_MASTER = 0x02, 0x04


class NETNSA:
    NSID, FD = 1, 3


IFF_UP = 0x1
OPERSTATES = {0: "UNKNOWN", 1: "NOTPRESENT", 2: "DOWN", 3: "LOWERLAYERDOWN", 4: "TESTING", 5: "DORMANT", 6: "UP"}


# -- attributes ------------------------------------------------------------------------------------------
def attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def u8_attr(kind: int, value: int) -> bytes:
    return attr(kind, bytes([value]))


def name_attr(kind: int, name: str) -> bytes:
    return attr(kind, name.encode() + b"\0")


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """Attribute type (flags masked) -> payload, for the attributes between start and end."""
    out = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[start + 4: start + length]
        start += (length + 3) & ~3
    return out


def u32(raw: bytes | None) -> int | None:
    return struct.unpack("=I", raw[:4])[0] if raw else None


def s32(raw: bytes | None) -> int | None:
    return struct.unpack("=i", raw[:4])[0] if raw else None


def string(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode() if raw is not None else None


def mac(raw: bytes | None) -> str | None:
    return ":".join(f"{b:02x}" for b in raw) if raw else None


def ip(raw: bytes | None) -> str | None:
    if not raw:
        return None
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


# -- talking ----------------------------------------------------------------------------------------------
def request(msg_type: int, body: bytes, flags: int = 0, protocol: int = NETLINK_ROUTE) -> None:
    """Send one request and wait for its acknowledgement; OSError(errno) if the kernel refuses."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol) as nl:
        nl.send(HEADER.pack(16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, 1, 0) + body)
        while True:
            data = nl.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if mtype == NLMSG_ERROR:
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                off += (length + 3) & ~3


def request_many(messages: list[tuple[int, bytes, int]], protocol: int = NETLINK_ROUTE, chunk: int = 256) -> list[OSError | None]:
    """Many requests (type, body, flags) on one socket, acknowledged one by one: the kernel handles
    each on send, so a batch of hundreds of FDB entries costs one socket and a few syscalls. Returns
    each request's error (None when it was applied), in order."""
    out: list[OSError | None] = [None] * len(messages)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol) as nl:
        try:
            nl.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        except OSError:
            pass
        for start in range(0, len(messages), chunk):
            part = messages[start:start + chunk]
            for i, (msg_type, body, flags) in enumerate(part, start + 1):
                nl.send(HEADER.pack(16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, i, 0) + body)
            waiting = set(range(start + 1, start + len(part) + 1))
            while waiting:
                data = nl.recv(65536)
                off = 0
                while off + 16 <= len(data):
                    length, mtype, _, seq, _ = HEADER.unpack_from(data, off)
                    if mtype == NLMSG_ERROR:
                        err = struct.unpack_from("=i", data, off + 16)[0]
                        if err:
                            out[seq - 1] = OSError(-err, os.strerror(-err))
                        waiting.discard(seq)
                    off += (length + 3) & ~3
    return out


def dump(msg_type: int, payload: bytes, protocol: int = NETLINK_ROUTE):
    """One NLM_F_DUMP request; yields (data, body start, end) for each answer message."""
    msg = HEADER.pack(16 + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + payload
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol) as nl:
        nl.send(msg)
        while True:
            data = nl.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if mtype in (NLMSG_DONE, NLMSG_ERROR) or length < 16:
                    return
                yield data, off + 16, off + length
                off += (length + 3) & ~3
