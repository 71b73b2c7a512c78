"""nft-like text of JSON rules and expressions, for people (exact evaluation reads the JSON)."""
from __future__ import annotations

import json

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp", 33: "dccp", 136: "udplite", 47: "gre",
               50: "esp", 51: "ah"}  # IP protocol numbers -> the names nft and iptables print

_UNQUALIFIED_META = frozenset({"iif", "oif", "iifname", "oifname", "iiftype", "oiftype", "iifgroup", "oifgroup",
                               "skuid", "skgid", "mark", "rtclassid", "cgroup"})
_IFNAME_META = frozenset({"iifname", "oifname", "iif", "oif", "ibrname", "obrname"})


def quoted(s) -> str:
    return f'"{s}"' if isinstance(s, str) else str(s)  # as nft prints it (no JSON escaping of `\*`)


def value_text(v, quote: bool = False) -> str:
    if isinstance(v, dict):
        if "prefix" in v:
            return f"{v['prefix'].get('addr')}/{v['prefix'].get('len')}"
        if "range" in v:
            a, b = v["range"]
            return f"{value_text(a, quote)}-{value_text(b, quote)}"
        if "set" in v:
            s = v["set"]
            if isinstance(s, list):
                return "{ " + ", ".join(_elem_text(e, quote) for e in s) + " }"
            return value_text(s, quote)
        if "concat" in v:
            return " . ".join(value_text(e, quote) for e in v["concat"])
        if "elem" in v:
            return value_text(v["elem"].get("val"), quote)
        if "map" in v:
            m = v["map"]
            return f"{expr_text(m.get('key'))} map {value_text(m.get('data'), quote)}"
        return expr_text(v)
    if isinstance(v, list):
        return ",".join(value_text(e, quote) for e in v)
    if isinstance(v, str):
        if v.startswith("@"):
            return v
        return quoted(v) if quote else v
    return str(v)


def _elem_text(e, quote: bool) -> str:
    if isinstance(e, list) and len(e) == 2:  # map element [key, value]
        k, v = e
        if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("accept", "drop", "jump", "goto", "return", "continue"):
            return f"{value_text(k, quote)} : {stmt_text(v)}"
        return f"{value_text(k, quote)} : {value_text(v)}"
    return value_text(e, quote)


def expr_text(x) -> str:
    if not isinstance(x, dict):
        return value_text(x)
    if "payload" in x:
        p = x["payload"]
        if "base" in p:
            return f"@{p['base']},{p.get('offset')},{p.get('len')}"
        return f"{p.get('protocol')} {p.get('field')}"
    if "meta" in x:
        k = x["meta"].get("key")
        return k if k in _UNQUALIFIED_META else f"meta {k}"
    if "ct" in x:
        c = x["ct"]
        return " ".join(p for p in ("ct", c.get("dir"), c.get("family"), c.get("key")) if p)
    if "fib" in x:
        f = x["fib"]
        return f"fib {' . '.join(f.get('flags') or [])} {f.get('result')}"
    if "numgen" in x:
        n = x["numgen"]
        off = f" offset {n['offset']}" if n.get("offset") else ""
        return f"numgen {n.get('mode')} mod {n.get('mod')}{off}"
    if "concat" in x:
        return " . ".join(expr_text(e) for e in x["concat"])
    if "tcp option" in x:
        o = x["tcp option"]
        return f"tcp option {o.get('name')} {o.get('field', '')}".strip()
    if "rt" in x:
        return f"rt {x['rt'].get('key')}"
    return json.dumps(x, separators=(",", ":"))


def _quote_for(left) -> bool:
    if isinstance(left, dict) and "meta" in left:
        return left["meta"].get("key") in _IFNAME_META
    if isinstance(left, dict) and "concat" in left:
        return False
    return False


def _match_text(m: dict) -> str:
    left, op, right = m.get("left"), m.get("op", "=="), m.get("right")
    ops = "" if op in ("==", "in") else f" {op}"
    return f"{expr_text(left)}{ops} {value_text(right, _quote_for(left))}"


def _nat_text(kind: str, d) -> str:
    if not isinstance(d, dict):
        return kind
    fam = f" {d['family']}" if d.get("family") else ""
    addr, port = d.get("addr"), d.get("port")
    if kind in ("masquerade", "redirect"):
        to = f" to :{value_text(port)}" if port is not None else ""
        return f"{kind}{to}"
    if isinstance(addr, dict) and "map" in addr:
        return f"{kind}{fam} to {value_text(addr)}"
    target = value_text(addr) if addr is not None else ""
    if port is not None:
        target += f":{value_text(port)}"
    return f"{kind}{fam} to {target}"


def stmt_text(e: dict) -> str:
    kind = next(iter(e))
    v = e[kind]
    if kind == "match":
        return _match_text(v)
    if kind in ("accept", "drop", "return", "continue", "notrack"):
        return kind
    if kind in ("jump", "goto"):
        return f"{kind} {v.get('target')}"
    if kind == "counter":
        return "counter" if not isinstance(v, str) else f"counter name {quoted(v)}"
    if kind == "reject":
        t = (v or {}).get("type") if isinstance(v, dict) else None
        how = f"{t} {v['expr']}" if t and v.get("expr") else t
        return f"reject with {how}" if how else "reject"
    if kind in ("dnat", "snat", "masquerade", "redirect"):
        return _nat_text(kind, v)
    if kind == "xt":
        return f"xt {v.get('type')} {quoted(v.get('name'))}"
    if kind == "log":
        return f"log prefix {quoted(v['prefix'])}" if isinstance(v, dict) and v.get("prefix") else "log"
    if kind == "limit":
        over = "over " if v.get("inv") else ""
        unit = v.get("rate_unit", "")
        return f"limit rate {over}{v.get('rate')}{(' ' + unit) if unit and unit != 'packets' else ''}/{v.get('per')}"
    if kind == "vmap":
        return f"{expr_text(v.get('key'))} vmap {value_text(v.get('data'), _quote_for(v.get('key')))}"
    if kind == "mangle":
        return f"{expr_text(v.get('key'))} set {value_text(v.get('value'))}"
    if kind == "queue":
        return "queue"
    return json.dumps(e, separators=(",", ":"))


def rule_text(rule: dict) -> str:
    """A compact nft-like rendering of a rule's expressions (without its comment)."""
    return " ".join(stmt_text(e) for e in rule.get("expr") or [] if isinstance(e, dict) and e)
