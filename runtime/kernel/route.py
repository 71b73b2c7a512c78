"""IPv4 routes and policy rules: dumped raw (every table), and the one route the run path adds."""
from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Network

from . import wire
from .wire import FRA, RTA

RT_TABLE_MAIN, RT_TABLE_LOCAL, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 255, 3, 0, 1


def dump() -> list[dict]:
    """dst/dst_len, table, type, scope, protocol, oif, gateway, prefsrc, metric of every route."""
    out = []
    for data, body, end in wire.dump(wire.RTM.GETROUTE, wire.RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
        _, dst_len, _, _, table, proto, scope, rtype, _ = wire.RTMSG.unpack_from(data, body)
        a = wire.attrs(data, body + wire.RTMSG.size, end)
        out.append({"dst": wire.ip(a.get(RTA.DST)), "dst_len": dst_len, "table": wire.u32(a.get(RTA.TABLE)) or table,
                    "proto": proto, "scope": scope, "type": rtype, "oif": wire.u32(a.get(RTA.OIF)),
                    "gateway": wire.ip(a.get(RTA.GATEWAY)), "prefsrc": wire.ip(a.get(RTA.PREFSRC)),
                    "metric": wire.u32(a.get(RTA.PRIORITY)) or 0})
    return out


def rules() -> list[dict]:
    """IPv4 policy rules: priority, table, src/dst prefixes, iif/oif names, fwmark, action; and, only
    where set, `invert` (`ip rule not ...`) and `suppress_prefixlen` (a VPN's `table main
    suppress_prefixlength 0`: main's routes of that prefix length or shorter are ignored)."""
    out = []
    for data, body, end in wire.dump(wire.RTM.GETRULE, wire.FIB_RULE_HDR.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
        _, dst_len, src_len, _, table, _, _, action, flags = wire.FIB_RULE_HDR.unpack_from(data, body)
        a = wire.attrs(data, body + wire.FIB_RULE_HDR.size, end)
        src, dst = wire.ip(a.get(FRA.SRC)), wire.ip(a.get(FRA.DST))
        rule = {"priority": wire.u32(a.get(FRA.PRIORITY)) or 0, "table": wire.u32(a.get(FRA.TABLE)) or table,
                "src": f"{src}/{src_len}" if src else None, "dst": f"{dst}/{dst_len}" if dst else None,
                "iif": wire.string(a.get(FRA.IIFNAME)), "oif": wire.string(a.get(FRA.OIFNAME)),
                "fwmark": wire.u32(a.get(FRA.FWMARK)), "action": action}
        if flags & wire.FIB_RULE_INVERT:
            rule["invert"] = True
        suppress = wire.u32(a.get(FRA.SUPPRESS_PREFIXLEN))
        if suppress is not None and suppress != 0xFFFFFFFF:  # the kernel dumps -1 when unset
            rule["suppress_prefixlen"] = suppress
        out.append(rule)
    return out


def subnets() -> list[tuple[IPv4Network, str]]:
    """(destination, device) of every IPv4 route but default and local ones, for overlap checks."""
    from .link import dump as links

    names = {link["index"]: link["name"] for link in links()}
    return [(IPv4Network(f"{r['dst']}/{r['dst_len']}", strict=False), names.get(r["oif"], ""))
            for r in dump() if r["dst"] and r["dst_len"] and r["table"] != RT_TABLE_LOCAL]


def add_default(gateway: IPv4Address, oif: int) -> None:
    body = wire.RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    wire.request(wire.RTM.NEWROUTE, body + wire.attr(RTA.GATEWAY, gateway.packed) + wire.u32_attr(RTA.OIF, oif),
                 wire.NLM_F_CREATE | wire.NLM_F_EXCL)
