"""IPv4 routes and policy rules, raw: dumped (every table), the one route the run path adds, and
routes and rules of any table and type made or removed from a description (a replayed snapshot:
dst "default" or "a.b.c.d/len", dev by name, type and scope by name)."""
from __future__ import annotations

import errno
import socket
from ipaddress import IPv4Address, IPv4Network

from . import wire
from .wire import FRA, RTA

RT_TABLE_MAIN, RT_TABLE_LOCAL, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 255, 3, 0, 1
RTNH_F_ONLINK = 4
TYPES = {"unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5, "blackhole": 6,
         "unreachable": 7, "prohibit": 8, "throw": 9}
SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}


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


def _table(table: int) -> int:
    return table if table < 256 else wire.RT_TABLE_COMPAT


def _route_body(route: dict, proto: int = 0, flags: int = 0) -> bytes:
    from .link import require_index

    dst = route["dst"]
    dst_len = 0 if dst == "default" else int(dst.split("/")[1])
    table = route["table"]
    body = wire.RTMSG.pack(socket.AF_INET, dst_len, 0, 0, _table(table), proto, SCOPES[route.get("scope") or "global"],
                           TYPES[route["type"]], flags) + wire.u32_attr(RTA.TABLE, table)
    if dst != "default":
        body += wire.attr(RTA.DST, IPv4Address(dst.split("/")[0]).packed)
    if route.get("gateway"):
        body += wire.attr(RTA.GATEWAY, IPv4Address(route["gateway"]).packed)
    if route.get("prefsrc"):
        body += wire.attr(RTA.PREFSRC, IPv4Address(route["prefsrc"]).packed)
    if route.get("metric"):
        body += wire.u32_attr(RTA.PRIORITY, route["metric"])
    if route.get("dev"):
        body += wire.u32_attr(RTA.OIF, require_index(route["dev"]))
    return body


def add(route: dict, replace: bool = False) -> None:
    """A route as a snapshot describes it. A gateway the kernel finds unreachable is added `onlink`
    (it was reachable where the snapshot was taken only because someone said so)."""
    flags = wire.NLM_F_CREATE | (wire.NLM_F_REPLACE if replace else wire.NLM_F_EXCL)
    proto = route.get("proto") or RTPROT_BOOT
    try:
        wire.request(wire.RTM.NEWROUTE, _route_body(route, proto), flags)
    except OSError as e:
        if e.errno != errno.ENETUNREACH or not route.get("gateway"):
            raise
        wire.request(wire.RTM.NEWROUTE, _route_body(route, proto, RTNH_F_ONLINK), flags)


def replace(route: dict) -> None:
    add(route, replace=True)


def delete(route: dict) -> None:
    wire.request(wire.RTM.DELROUTE, _route_body(route))


def _rule_body(rule: dict) -> bytes:
    prefixes = {key: rule[key].split("/") for key in ("src", "dst") if rule.get(key)}
    table = rule["table"]
    body = wire.FIB_RULE_HDR.pack(socket.AF_INET, int(prefixes["dst"][1]) if "dst" in prefixes else 0,
                                  int(prefixes["src"][1]) if "src" in prefixes else 0, 0, _table(table), 0, 0,
                                  rule["action"], wire.FIB_RULE_INVERT if rule.get("invert") else 0)
    body += wire.u32_attr(FRA.PRIORITY, rule["priority"]) + wire.u32_attr(FRA.TABLE, table)
    if rule.get("suppress_prefixlen") is not None:
        body += wire.u32_attr(FRA.SUPPRESS_PREFIXLEN, rule["suppress_prefixlen"])
    for key, kind in (("src", FRA.SRC), ("dst", FRA.DST)):
        if key in prefixes:
            body += wire.attr(kind, IPv4Address(prefixes[key][0]).packed)
    if rule.get("iif"):
        body += wire.name_attr(FRA.IIFNAME, rule["iif"])
    if rule.get("oif"):
        body += wire.name_attr(FRA.OIFNAME, rule["oif"])
    if rule.get("fwmark") is not None:
        body += wire.u32_attr(FRA.FWMARK, rule["fwmark"])
    return body


def add_rule(rule: dict) -> None:
    """A policy rule as `rules()` describes one (priority, table, action, src/dst, iif/oif, fwmark,
    invert, suppress_prefixlen)."""
    wire.request(wire.RTM.NEWRULE, _rule_body(rule), wire.NLM_F_CREATE | wire.NLM_F_EXCL)


def delete_rule(rule: dict) -> None:
    wire.request(wire.RTM.DELRULE, _rule_body(rule))
