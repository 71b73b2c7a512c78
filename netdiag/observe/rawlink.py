"""Links and neighbour/FDB entries from raw rtnetlink dumps. On a host whose bridge has hundreds of
ports these dumps have thousands of messages; pyroute2 decodes each through its asyncio core
(about half a second per thousand), this reads them in a few milliseconds. Same fields as before."""
from __future__ import annotations

import socket
import struct

from .collect import _netlink_dump

RTM_GETLINK, RTM_GETNEIGH = 18, 30
OPERSTATES = {0: "UNKNOWN", 1: "NOTPRESENT", 2: "DOWN", 3: "LOWERLAYERDOWN", 4: "TESTING", 5: "DORMANT", 6: "UP"}
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_LINK_NETNSID = 1, 3, 4, 5, 10, 16, 18, 37
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VXLAN = {1: "vni", 2: "group", 3: "link", 4: "local", 7: "learning", 15: "port", 29: "df"}
BRPORT_STATE, BRPORT_MODE, BRPORT_ISOLATED = 1, 4, 33
NDA_DST, NDA_LLADDR, NDA_VNI, NDA_MASTER = 1, 2, 7, 9


def attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[start + 4: start + length]
        start += (length + 3) & ~3
    return out


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack("=I", raw[:4])[0] if raw else None


def _str(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode() if raw is not None else None


def _mac(raw: bytes | None) -> str | None:
    return ":".join(f"{b:02x}" for b in raw) if raw else None


def _ip(raw: bytes | None) -> str | None:
    if not raw:
        return None
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def links() -> list[dict]:
    """Every link: index, name, kind, mac, mtu, operstate, flags, master index, peer index/netnsid,
    VXLAN and bridge-port details (raw values; collect.py turns indexes into names)."""
    out = []
    for data, body, end in _netlink_dump(0, RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)):
        _, _, index, flags, _ = struct.unpack_from("=BxHiII", data, body)
        a = attrs(data, body + 16, end)
        info = attrs(a[IFLA_LINKINFO], 0, len(a[IFLA_LINKINFO])) if IFLA_LINKINFO in a else {}
        netnsid = a.get(IFLA_LINK_NETNSID)
        entry = {"index": index, "flags": flags, "name": _str(a.get(IFLA_IFNAME)), "mac": _mac(a.get(IFLA_ADDRESS)),
                 "mtu": _u32(a.get(IFLA_MTU)), "state": OPERSTATES.get(a[IFLA_OPERSTATE][0], "UNKNOWN") if IFLA_OPERSTATE in a else None,
                 "master": _u32(a.get(IFLA_MASTER)), "link": _u32(a.get(IFLA_LINK)),
                 "link_netnsid": struct.unpack("=i", netnsid[:4])[0] if netnsid else None,
                 "kind": _str(info.get(IFLA_INFO_KIND)), "slave_kind": _str(info.get(IFLA_INFO_SLAVE_KIND))}
        if entry["kind"] == "vxlan" and IFLA_INFO_DATA in info:
            d = attrs(info[IFLA_INFO_DATA], 0, len(info[IFLA_INFO_DATA]))
            entry["vxlan"] = {"vni": _u32(d.get(1)), "group": _ip(d.get(2)), "link": _u32(d.get(3)), "local": _ip(d.get(4)),
                              "learning": bool(d[7][0]) if 7 in d else False,
                              "port": struct.unpack("!H", d[15][:2])[0] if 15 in d else None,
                              "df": d[29][0] if 29 in d else 0}
        if entry["slave_kind"] == "bridge" and IFLA_INFO_SLAVE_DATA in info:
            d = attrs(info[IFLA_INFO_SLAVE_DATA], 0, len(info[IFLA_INFO_SLAVE_DATA]))
            entry["bridge_port"] = {"hairpin": bool(d[BRPORT_MODE][0]) if BRPORT_MODE in d else False,
                                    "isolated": bool(d[BRPORT_ISOLATED][0]) if BRPORT_ISOLATED in d else False,
                                    "state": d[BRPORT_STATE][0] if BRPORT_STATE in d else None}
        out.append(entry)
    return out


def neighbours(family: int) -> list[dict]:
    """ARP entries (AF_INET) or bridge/VXLAN FDB entries (AF_BRIDGE): ifindex, state, flags, dst,
    lladdr, master index, vni."""
    out = []
    for data, body, end in _netlink_dump(0, RTM_GETNEIGH, struct.pack("=BxxxiHBB", family, 0, 0, 0, 0)):
        _, ifindex, state, flags, _ = struct.unpack_from("=BxxxiHBB", data, body)
        a = attrs(data, body + 12, end)
        out.append({"ifindex": ifindex, "state": state, "flags": flags, "dst": _ip(a.get(NDA_DST)),
                    "lladdr": _mac(a.get(NDA_LLADDR)), "master": _u32(a.get(NDA_MASTER)), "vni": _u32(a.get(NDA_VNI))})
    return out


class NsidQuery:
    """Ask this namespace which nsid it gave other namespaces (RTM_GETNSID with NETNSA_FD), over one
    netlink socket opened here: one small request per candidate namespace, no library round trip."""

    RTM_GETNSID, NETNSA_NSID, NETNSA_FD = 90, 1, 3

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.seq = 0

    def nsid(self, fd: int) -> int | None:
        self.seq += 1
        body = struct.pack("=Bxxx", socket.AF_UNSPEC) + struct.pack("=HHI", 8, self.NETNSA_FD, fd)
        self.sock.send(struct.pack("=IHHII", 16 + len(body), self.RTM_GETNSID, 1, self.seq, 0) + body)
        data = self.sock.recv(4096)
        length, mtype = struct.unpack_from("=IH", data, 0)
        if mtype == 2:  # NLMSG_ERROR
            return None
        a = attrs(data, 16 + 4, length)
        raw = a.get(self.NETNSA_NSID)
        value = struct.unpack("=i", raw[:4])[0] if raw else -1
        return None if value < 0 else value

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def addresses() -> list[dict]:
    """IPv4 addresses: ifindex, prefixlen, scope, address, local."""
    out = []
    for data, body, end in _netlink_dump(0, 22, struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)):  # RTM_GETADDR
        _, prefixlen, _, scope, index = struct.unpack_from("=BBBBI", data, body)
        a = attrs(data, body + 8, end)
        out.append({"index": index, "prefixlen": prefixlen, "scope": scope, "address": _ip(a.get(1)), "local": _ip(a.get(2))})
    return out


def routes() -> list[dict]:
    """IPv4 routes of every table: dst/dst_len, table, type, scope, protocol, oif, gateway, prefsrc, metric."""
    out = []
    for data, body, end in _netlink_dump(0, 26, struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):  # RTM_GETROUTE
        _, dst_len, _, _, table, proto, scope, rtype, _ = struct.unpack_from("=BBBBBBBBI", data, body)
        a = attrs(data, body + 12, end)
        out.append({"dst": _ip(a.get(1)), "dst_len": dst_len, "table": _u32(a.get(15)) or table, "proto": proto,
                    "scope": scope, "type": rtype, "oif": _u32(a.get(4)), "gateway": _ip(a.get(5)),
                    "prefsrc": _ip(a.get(7)), "metric": _u32(a.get(6)) or 0})
    return out


def rules() -> list[dict]:
    """IPv4 policy rules: priority, table, src/dst prefixes, iif/oif names, fwmark, action."""
    out = []
    for data, body, end in _netlink_dump(0, 34, struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):  # RTM_GETRULE
        _, dst_len, src_len, _, table, _, _, action, _ = struct.unpack_from("=BBBBBBBBI", data, body)
        a = attrs(data, body + 12, end)
        src, dst = _ip(a.get(2)), _ip(a.get(1))
        out.append({"priority": _u32(a.get(6)) or 0, "table": _u32(a.get(15)) or table,
                    "src": f"{src}/{src_len}" if src else None, "dst": f"{dst}/{dst_len}" if dst else None,
                    "iif": _str(a.get(3)), "oif": _str(a.get(17)), "fwmark": _u32(a.get(10)), "action": action})
    return out
