"""Linux IPv4 routing over a snapshot namespace: policy rules, tables, longest prefix, reverse path."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

RT_TABLE_LOCAL, RT_TABLE_MAIN = 255, 254
FR_ACT_TO_TBL, FR_ACT_BLACKHOLE, FR_ACT_UNREACHABLE, FR_ACT_PROHIBIT = 1, 6, 7, 8


@dataclass(frozen=True)
class Route:
    dst: str
    type: str             # unicast | local | broadcast | blackhole | unreachable | prohibit | none
    dev: str | None
    gateway: str | None
    prefsrc: str | None
    table: int
    rule_priority: int | None = None

    @property
    def text(self) -> str:
        if self.type == "none":
            return "no route"
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev {self.dev}" if self.dev else ""
        tbl = "" if self.table in (RT_TABLE_MAIN, RT_TABLE_LOCAL) else f" table {self.table}"
        kind = "" if self.type == "unicast" else f"{self.type} "
        return f"{kind}{self.dst}{via}{dev}{tbl}"


def _net(dst: str) -> ipaddress.IPv4Network:
    return ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst, strict=False)


def _rule_matches(rule: dict, src: str | None, dst: str, iif: str | None) -> bool:
    """The kernel's fib_rule_match: every selector matches, or, for `ip rule not ...` (invert),
    not all of them do (a VPN's `not fwmark 51820 table 51820` takes every unmarked packet)."""
    return _selectors_match(rule, src, dst, iif) != bool(rule.get("invert"))


def _selectors_match(rule: dict, src: str | None, dst: str, iif: str | None) -> bool:
    if rule.get("src") and (src is None or ipaddress.ip_address(src) not in _net(rule["src"])):
        return False
    if rule.get("dst") and ipaddress.ip_address(dst) not in _net(rule["dst"]):
        return False
    if rule.get("iif") and rule["iif"] != (iif or "lo"):
        return False
    if rule.get("fwmark"):
        return False  # our probes carry no mark
    return True


def _table_lookup(ns: dict, table: int, dst: str) -> Route | None:
    addr = ipaddress.ip_address(dst)
    best = None
    for r in ns["routes"]:
        if r["table"] != table:
            continue
        net = _net(r["dst"])
        if addr not in net:
            continue
        key = (net.prefixlen, -(r.get("metric") or 0))
        if best is None or key > best[0]:
            best = (key, r)
    if best is None:
        return None
    r = best[1]
    return Route(r["dst"], r["type"], r.get("dev"), r.get("gateway"), r.get("prefsrc"), table)


def lookup(ns: dict, dst: str, src: str | None = None, iif: str | None = None) -> Route:
    """The route the kernel would pick. With no policy rules (or an empty dump): local, then main."""
    rules = sorted(ns.get("rules") or [], key=lambda r: r["priority"])
    if not rules:
        rules = [{"priority": 0, "table": RT_TABLE_LOCAL, "action": FR_ACT_TO_TBL},
                 {"priority": 32766, "table": RT_TABLE_MAIN, "action": FR_ACT_TO_TBL}]
    for rule in rules:
        if not _rule_matches(rule, src, dst, iif):
            continue
        action = rule.get("action", FR_ACT_TO_TBL)
        if action in (FR_ACT_BLACKHOLE, FR_ACT_UNREACHABLE, FR_ACT_PROHIBIT):
            kind = {FR_ACT_BLACKHOLE: "blackhole", FR_ACT_UNREACHABLE: "unreachable", FR_ACT_PROHIBIT: "prohibit"}[action]
            return Route("rule", kind, None, None, None, 0, rule["priority"])
        if action != FR_ACT_TO_TBL:
            continue
        found = _table_lookup(ns, rule["table"], dst)
        if found and rule.get("suppress_prefixlen") is not None and _net(found.dst).prefixlen <= rule["suppress_prefixlen"]:
            found = None  # `suppress_prefixlength N`: a route this short is ignored, the next rule decides
        if found:
            return Route(found.dst, found.type, found.dev, found.gateway, found.prefsrc, found.table, rule["priority"])
    return Route("none", "none", None, None, None, 0)


DEFAULT_RULES = {(0, RT_TABLE_LOCAL), (32766, RT_TABLE_MAIN), (32767, 253)}


def rule_of(ns: dict, route: Route) -> dict | None:
    """The policy rule that led to `route` (None when the namespace has no rule dump)."""
    if route.rule_priority is None:
        return None
    return next((r for r in ns.get("rules") or [] if r["priority"] == route.rule_priority
                 and (route.dst == "rule" or r.get("table") == route.table)), None)


def is_default_rule(rule: dict) -> bool:
    """One of the three rules every namespace starts with (local, main, default)."""
    return (rule["priority"], rule.get("table")) in DEFAULT_RULES and not any(
        rule.get(k) for k in ("src", "dst", "iif", "oif", "fwmark", "invert")) and rule.get("suppress_prefixlen") is None


def rule_args(rule: dict) -> list[str]:
    """`ip rule` arguments that name exactly this rule: its priority and its selectors."""
    out = ["priority", str(rule["priority"])]
    if rule.get("invert"):
        out.append("not")
    for key, word in (("src", "from"), ("dst", "to"), ("iif", "iif"), ("oif", "oif"), ("fwmark", "fwmark")):
        if rule.get(key):
            out += [word, str(rule[key])]
    action = rule.get("action", FR_ACT_TO_TBL)
    if action == FR_ACT_TO_TBL:
        out += ["lookup", str(rule.get("table"))]
        if rule.get("suppress_prefixlen") is not None:
            out += ["suppress_prefixlength", str(rule["suppress_prefixlen"])]
    else:
        out.append({FR_ACT_BLACKHOLE: "blackhole", FR_ACT_UNREACHABLE: "unreachable", FR_ACT_PROHIBIT: "prohibit"}.get(action, ""))
    return [a for a in out if a]


def rule_text(rule: dict) -> str:
    return " ".join(rule_args(rule))


def local_addresses(ns: dict) -> set[str]:
    out = {a.get("local") or a["address"] for a in ns["addresses"]}
    if any(link["kind"] == "loopback" and link["up"] for link in ns["links"]):
        out.add("127.0.0.1")
    return out


def is_local(ns: dict, ip: str) -> bool:
    if ip.startswith("127."):
        return any(link["kind"] == "loopback" and link["up"] for link in ns["links"])
    return ip in local_addresses(ns)


def source_for(ns: dict, route: Route) -> str | None:
    """The address the kernel picks as source for packets sent along `route`."""
    if route.prefsrc:
        return route.prefsrc
    addrs = [a for a in ns["addresses"] if a["ifname"] == route.dev]
    if route.gateway:
        for a in addrs:
            if ipaddress.ip_address(route.gateway) in ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False):
                return a.get("local") or a["address"]
    return (addrs[0].get("local") or addrs[0]["address"]) if addrs else None


def rp_filter_mode(ns: dict, ifname: str) -> int:
    """Effective rp_filter on an interface: the max of 'all' and the interface's value."""
    s = ns.get("sysctls", {})
    return max(int(s.get("net.ipv4.conf.all.rp_filter", 0) or 0), int(s.get(f"net.ipv4.conf.{ifname}.rp_filter", 0) or 0))


def forwarding_enabled(ns: dict, ifname: str | None = None) -> bool:
    s = ns.get("sysctls", {})
    if ifname and f"net.ipv4.conf.{ifname}.forwarding" in s:
        return s[f"net.ipv4.conf.{ifname}.forwarding"] == "1"
    return s.get("net.ipv4.ip_forward", "0") == "1"
