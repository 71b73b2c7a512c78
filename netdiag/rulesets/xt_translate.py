"""One iptables rule's xt parts (the matches and targets iptables-nft stores as opaque `xt` blobs)
as the native nft JSON expressions they mean: conntrack/state, addrtype, comment, multiport, and
the DNAT/SNAT/REJECT/REDIRECT/MASQUERADE targets. Options netdiag does not know are never guessed:
the result is then None or the reason, and the blob stays opaque. Pure."""
from __future__ import annotations

import ipaddress

from .iptables_save import Module, Rule
from .nft_text import PROTO_NAMES

_STATES = {"NEW": "new", "ESTABLISHED": "established", "RELATED": "related", "INVALID": "invalid",
           "UNTRACKED": "untracked"}
_STATUS = {"DNAT": "dnat", "SNAT": "snat"}
_ADDRTYPES = frozenset({"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
                        "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"})
_REJECT = {"icmp-net-unreachable": ("icmp", "net-unreachable"), "icmp-host-unreachable": ("icmp", "host-unreachable"),
           "icmp-port-unreachable": ("icmp", "port-unreachable"), "icmp-proto-unreachable": ("icmp", "prot-unreachable"),
           "icmp-net-prohibited": ("icmp", "net-prohibited"), "icmp-host-prohibited": ("icmp", "host-prohibited"),
           "icmp-admin-prohibited": ("icmp", "admin-prohibited"), "icmp6-no-route": ("icmpv6", "no-route"),
           "icmp6-adm-prohibited": ("icmpv6", "admin-prohibited"), "icmp6-addr-unreachable": ("icmpv6", "addr-unreachable"),
           "icmp6-port-unreachable": ("icmpv6", "port-unreachable"), "tcp-reset": ("tcp reset", None)}
# xt names nft lists -> the names iptables-save prints for them (iptables-nft stores -m state as conntrack)
XT_ALIASES = {"conntrack": ("conntrack", "state"), "CT": ("CT", "NOTRACK")}
_PROTO_NUMBERS = {str(n): name for n, name in PROTO_NAMES.items()} | {"icmpv6": "ipv6-icmp"}
_NAT_FLAGS = {"--random": "random", "--random-fully": "fully-random", "--persistent": "persistent"}


def proto_name(v) -> str:
    """A protocol as nft names it, from a number or iptables' name."""
    s = str(v).lower()
    return _PROTO_NUMBERS.get(s, s)


def protocol(rule: Rule) -> tuple[bool, str] | None:
    """The rule's -p as (negated, nft name); None for any protocol."""
    p = rule.basic.get("-p")
    if p is None or p[1].lower() == "all":
        return None
    return (p[0], proto_name(p[1]))


def _match(op: str, left: dict, right, origin: str) -> dict:
    return {"match": {"op": op, "left": left, "right": right, "xt": origin}}


def _one(values: list):
    return values[0] if len(values) == 1 else values


def _conntrack(mod: Module):
    """-m conntrack --ctstate / -m state --state: a list of exprs, or why not."""
    out = []
    for o in mod.opts:
        if o.name not in ("--ctstate", "--state") or len(o.args) != 1:
            return f"netdiag does not evaluate {o.text()}"
        names = o.args[0].split(",")
        bad = [n for n in names if n not in _STATES and n not in _STATUS]
        if bad:
            return f"unknown state {','.join(bad)} in {o.text()}"
        states = [_STATES[n] for n in names if n in _STATES]
        status = [_STATUS[n] for n in names if n in _STATUS]
        if states and status:  # xt ORs them: one nft match cannot say that
            return f"{o.text()} mixes connection states and NAT flags (matched if either holds)"
        if states:
            out.append(_match("!=" if o.neg else "in", {"ct": {"key": "state"}}, _one(states), mod.name))
        elif o.neg:
            return f"{o.text()}: a negated NAT flag is not evaluated"
        else:
            out.append(_match("in", {"ct": {"key": "status"}}, _one(status), mod.name))
    return out or "no --ctstate"


def _addrtype(mod: Module):
    dev = []
    opts = []
    for o in mod.opts:
        if o.name in ("--limit-iface-in", "--limit-iface-out") and not o.args and not o.neg:
            dev.append("iif" if o.name.endswith("in") else "oif")
        elif o.name in ("--src-type", "--dst-type") and len(o.args) == 1:
            opts.append(o)
        else:
            return f"netdiag does not evaluate {o.text()}"
    if len(dev) > 1 or not opts:
        return f"netdiag does not evaluate {mod.text()}"
    out = []
    for o in opts:
        types = o.args[0].split(",")
        if not set(types) <= _ADDRTYPES:
            return f"unknown address type in {o.text()}"
        fib = {"fib": {"result": "type", "flags": ["saddr" if o.name == "--src-type" else "daddr", *dev]}}
        op = "!=" if o.neg else ("==" if len(types) == 1 else "in")
        out.append(_match(op, fib, _one([t.lower() for t in types]), mod.name))
    return out


def port_number(s: str) -> int:
    p = int(s)
    if not 0 <= p <= 65535:
        raise ValueError(s)
    return p


def _ports(spec: str, sep: str):
    """"80" -> 80, "443:445" (sep ":") or "100-200" (sep "-") -> {"range": [lo, hi]}."""
    lo, found, hi = spec.partition(sep)
    if not found:
        return port_number(lo)
    return {"range": [port_number(lo), port_number(hi)]}


def _multiport(mod: Module, proto: tuple[bool, str] | None):
    if proto is None or proto[0] or proto[1] not in ("tcp", "udp", "udplite", "sctp", "dccp"):
        return "multiport without a single protocol (-p)"
    out = []
    fields = {"--dports": "dport", "--destination-ports": "dport", "--sports": "sport", "--source-ports": "sport"}
    for o in mod.opts:
        if o.name not in fields or len(o.args) != 1:  # --ports: source OR destination, not one nft match
            return f"netdiag does not evaluate {o.text()}"
        try:
            elems = [_ports(p, ":") for p in o.args[0].split(",")]
        except ValueError:
            return f"bad port list in {o.text()}"
        out.append(_match("!=" if o.neg else "==", {"payload": {"protocol": proto[1], "field": fields[o.name]}},
                          {"set": elems}, mod.name))
    return out or "no port list"


def translate_match(mod: Module, rule: Rule):
    """A list of nft expressions, {"comment": TEXT}, or a string saying why it stays opaque."""
    if mod.name in ("conntrack", "state"):
        return _conntrack(mod)
    if mod.name == "addrtype":
        return _addrtype(mod)
    if mod.name == "multiport":
        return _multiport(mod, protocol(rule))
    if mod.name == "comment" and len(mod.opts) == 1 and mod.opts[0].name == "--comment" and not mod.opts[0].neg:
        return {"comment": " ".join(mod.opts[0].args)}
    return f"netdiag does not evaluate {mod.text()}"


def _nat_to(spec: str, family: str):
    """--to-destination/--to-source/--to-ports value -> {"addr": .., "port": ..} (nft's dnat/snat)."""
    if spec.startswith("["):  # ip6 with a port: [a]:p, [a]-[b]:p
        addrs, _, rest = spec[1:].partition("]")
        if rest.startswith("-["):
            second, _, rest = rest[2:].partition("]")
            addrs += "-" + second
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise ValueError(spec)
    elif family == "ip6":
        addrs, port = spec, None
    else:
        addrs, _, port = spec.partition(":")
        port = port or None
    out: dict = {}
    if addrs:
        lo, _, hi = addrs.partition("-")
        for a in (lo, hi) if hi else (lo,):
            if ipaddress.ip_address(a).version != (4 if family == "ip" else 6):
                raise ValueError(a)
        out["addr"] = {"range": [lo, hi]} if hi else lo
    if port:
        out["port"] = _ports(port, "-")
    return out


def translate_target(rule: Rule, family: str):
    """The nft statement for -j DNAT/SNAT/REDIRECT/REJECT, or why it stays opaque (None: a target the
    evaluator knows by name alone: MASQUERADE, whose --to-ports only picks source ports, LOG, MARK ...)."""
    name, opts = rule.target, {o.name: o for o in rule.target_opts}
    flags = [o for o in rule.target_opts if not o.args and o.name in ("--random", "--random-fully", "--persistent")]
    valued = [o for o in rule.target_opts if o not in flags]
    if any(o.neg for o in rule.target_opts):
        return f"netdiag does not evaluate -j {name} with a negated option"
    try:
        if name in ("DNAT", "SNAT"):
            key = "--to-destination" if name == "DNAT" else "--to-source"
            if [o.name for o in valued] != [key] or len(opts[key].args) != 1:
                return f"netdiag does not evaluate -j {name} {' '.join(o.text() for o in rule.target_opts)}"
            stmt = _nat_to(opts[key].args[0], family)
            kind = name.lower()
        elif name == "REDIRECT":
            if [o.name for o in valued] not in ([], ["--to-ports"]) or any(len(o.args) != 1 for o in valued):
                return f"netdiag does not evaluate -j {name} {' '.join(o.text() for o in rule.target_opts)}"
            stmt = {"port": _ports(valued[0].args[0], "-")} if valued else {}
            kind = name.lower()
        elif name == "REJECT":
            if flags or [o.name for o in valued] not in ([], ["--reject-with"]):
                return f"netdiag does not evaluate -j REJECT {' '.join(o.text() for o in rule.target_opts)}"
            how = _REJECT.get(valued[0].args[0] if valued and valued[0].args else "icmp-port-unreachable"
                              if family == "ip" else "icmp6-port-unreachable")
            if how is None:
                return f"unknown -j REJECT {valued[0].text()}"
            stmt = {"type": how[0], **({"expr": how[1]} if how[1] else {})}
            kind = "reject"
        else:
            return None
    except ValueError as e:
        return f"cannot read -j {name} {' '.join(o.text() for o in rule.target_opts)}: {e}"
    if flags:
        stmt["flags"] = _one([_NAT_FLAGS[o.name] for o in flags])
    stmt["xt"] = name
    return {kind: stmt}
