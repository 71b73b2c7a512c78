"""Docker's iptables-nft rules, exactly: the parts nft's JSON hides, translated from the
iptables-nft-save text observed with them (netdiag.observe.iptables reads it).

iptables-nft stores what it cannot express in native nftables as `xt` blobs (the conntrack,
addrtype, comment and multiport matches; the DNAT/SNAT/REJECT/REDIRECT/MASQUERADE targets), and
`nft -j` shows only their names. iptables-nft-save prints every rule with its arguments. So:

  observe  `save_text(ruleset, errors, ns_id)`: when the namespace's ruleset (already read) has
           xt expressions in ip/ip6 tables, run iptables-nft-save (ip6tables-nft-save for ip6)
           in the namespace; the raw text goes into the snapshot entry as `iptables_save`
           ({"ip": TEXT, "ip6": TEXT}, only the families read).
  reason   `ruleset_for(ns)`: the nft JSON with the xt expressions replaced by the native nft
           expressions they mean. Derived when used, from the two stored observations, so a saved
           snapshot replays with the same translation, and one without `iptables_save` as before.

Rules are paired by (family, table, chain, position in chain). A chain is translated only when
every pair agrees on what both show natively (interfaces, addresses, protocol, ports, the xt
names in order, the verdict); otherwise (the rules changed between the two reads, a native nft
rule iptables-nft cannot print...) its xt expressions stay opaque and carry "why". A translated
expression carries "xt": the module or target it came from; every rule of a verified chain
carries "iptables": its -A line as iptables-nft-save printed it. Options netdiag does not know
are never guessed: that module stays opaque, its "why" naming the options.
"""
from __future__ import annotations

import ipaddress

from .nftables.evaluate import PROTO_NAMES

TOOLS = {"ip": "iptables-nft-save", "ip6": "ip6tables-nft-save"}


# ---------------------------------------------------------------------------------------------
# parsing iptables-save


# plain classes, not dataclasses: this module is imported by every trace, and @dataclass costs
# about a millisecond per class at import


class Opt:
    """One option of a match or target: `! --ctstate NEW,DNAT` -> ("--ctstate", ["NEW,DNAT"], True)."""

    __slots__ = ("name", "args", "neg")

    def __init__(self, name: str, args: list[str], neg: bool = False):
        self.name, self.args, self.neg = name, args, neg

    def text(self) -> str:
        return " ".join((["!"] if self.neg else []) + [self.name] + [_quote(a) for a in self.args])


class Module:
    """`-m NAME` and its options."""

    __slots__ = ("name", "opts")

    def __init__(self, name: str):
        self.name, self.opts = name, []

    def text(self) -> str:
        return " ".join([f"-m {self.name}"] + [o.text() for o in self.opts])


class Rule:
    """One -A line. basic: "-s" -> (negated, value) for -s -d -i -o -p -f; error: why it cannot be read."""

    __slots__ = ("chain", "line", "basic", "modules", "target", "target_opts", "goto", "error")

    def __init__(self, chain: str, line: str, error: str | None = None):
        self.chain, self.line, self.error = chain, line, error
        self.basic: dict[str, tuple[bool, str]] = {}
        self.modules: list[Module] = []
        self.target: str | None = None
        self.target_opts: list[Opt] = []
        self.goto = False


class Table:
    __slots__ = ("name", "chains")

    def __init__(self, name: str):
        self.name = name
        self.chains: dict[str, list[Rule]] = {}  # every declared chain, in order


_BASIC = frozenset({"-s", "-d", "-i", "-o", "-p", "-f"})
_LONG_BASIC = {"--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d", "--in-interface": "-i",
               "--out-interface": "-o", "--protocol": "-p", "--fragment": "-f"}
_LONG_SWITCH = {"--match": "-m", "--jump": "-j", "--goto": "-g"}
_BOUNDARY = _BASIC | {"-m", "-j", "-g"}


def _quote(s: str) -> str:
    if s and not any(c.isspace() or c in "\"'\\" for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tokens(line: str) -> list[tuple[str, bool]]:
    """Split like iptables-restore: whitespace-separated words, double quotes group (with \\" and
    \\\\ escapes inside). Each word comes with whether it was quoted (a quoted "-j" is a value)."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        buf, quoted = [], False
        while i < n and not line[i].isspace():
            if line[i] == '"':
                quoted, i = True, i + 1
                while i < n and line[i] != '"':
                    if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\':
                        i += 1
                    buf.append(line[i])
                    i += 1
                if i >= n:
                    raise ValueError("unterminated quote")
                i += 1
            else:
                buf.append(line[i])
                i += 1
        out.append(("".join(buf), quoted))
    return out


def parse_rule(line: str) -> Rule:
    """One `-A CHAIN ...` line. A line that cannot be parsed gives a Rule with `error` set."""
    line = line.strip()
    head = line.split()[1:] if line.startswith("[") else line.split()  # iptables-save -c: "[pkts:bytes] -A ..."
    chain = head[1] if len(head) > 1 and head[0] == "-A" else ""  # kept on errors: the chain is then not translated
    try:
        toks = tokens(line)
    except ValueError as e:
        return Rule(chain, line, error=f"cannot parse {line!r}: {e}")
    if toks and toks[0][0].startswith("[") and not toks[0][1]:
        toks = toks[1:]
    if len(toks) < 2 or toks[0] != ("-A", False):
        return Rule(chain, line, error=f"not an -A line: {line!r}")
    rule = Rule(toks[1][0], line)
    words = toks[2:]
    i, neg = 0, False
    current: list[Opt] | None = None  # where --options go: the last module's, or the target's

    def values(i: int) -> tuple[list[str], int]:
        args = []
        while i < len(words):
            t, q = words[i]
            if not q and (t in _BOUNDARY or t.startswith("--") or t == "!"):
                break
            args.append(t)
            i += 1
        return args, i

    while i < len(words):
        t, q = words[i]
        if not q:  # long spellings; --source and the like only before any -m/-j (a module may own one)
            t = _LONG_SWITCH.get(t, _LONG_BASIC.get(t, t) if current is None else t)
        if not q and t == "!":
            neg, i = True, i + 1
            continue
        if not q and t in _BASIC:
            if t == "-f":
                rule.basic[t], i = (neg, ""), i + 1
            elif i + 1 < len(words):
                rule.basic[t], i = (neg, words[i + 1][0]), i + 2
            else:
                rule.error = f"{t} without a value in {line!r}"
                return rule
        elif not q and t in ("-m", "-j", "-g") and i + 1 < len(words):
            name = words[i + 1][0]
            if neg:
                rule.error = f"'! {t}' in {line!r}"
                return rule
            if t == "-m":
                rule.modules.append(Module(name))
                current = rule.modules[-1].opts
            else:
                rule.target, rule.goto, current = name, t == "-g", rule.target_opts
            i += 2
        elif not q and t.startswith("--") and current is not None:
            args, j = values(i + 1)
            current.append(Opt(t, args, neg))
            i = j
        else:
            rule.error = f"unexpected {t!r} in {line!r}"
            return rule
        neg = False
    if neg:
        rule.error = f"a trailing '!' in {line!r}"
    return rule


def parse(text: str) -> dict[str, Table]:
    """iptables-save output -> {table name: Table}, the rules of each chain in order."""
    tables: dict[str, Table] = {}
    table: Table | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = tables.setdefault(line[1:].strip(), Table(line[1:].strip()))
        elif line == "COMMIT":
            table = None
        elif table is None:
            continue
        elif line.startswith(":"):
            table.chains.setdefault(line[1:].split()[0] if line[1:].split() else "", [])
        elif line.startswith("-A") or line.startswith("["):
            rule = parse_rule(line)
            table.chains.setdefault(rule.chain, []).append(rule)
    return tables


# ---------------------------------------------------------------------------------------------
# translating one rule's xt parts

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
_ALIASES = {"conntrack": ("conntrack", "state"), "CT": ("CT", "NOTRACK")}


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


def _port(s: str) -> int:
    p = int(s)
    if not 0 <= p <= 65535:
        raise ValueError(s)
    return p


def _ports(spec: str, sep: str):
    """"80" -> 80, "443:445" (sep ":") or "100-200" (sep "-") -> {"range": [lo, hi]}."""
    lo, found, hi = spec.partition(sep)
    if not found:
        return _port(lo)
    return {"range": [_port(lo), _port(hi)]}


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
        return _multiport(mod, _proto(rule))
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


# ---------------------------------------------------------------------------------------------
# pairing iptables rules with nft rules


_PROTO_NUMBERS = {str(n): name for n, name in PROTO_NAMES.items()} | {"icmpv6": "ipv6-icmp"}
_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return"}
# nft statements iptables-nft writes natively for some targets (a newer iptables, or no options)
_NATIVE_TARGETS = {"reject": ("REJECT",), "masquerade": ("MASQUERADE",), "dnat": ("DNAT",), "snat": ("SNAT",),
                   "redirect": ("REDIRECT",), "log": ("LOG", "NFLOG"), "queue": ("NFQUEUE",), "notrack": ("NOTRACK", "CT"),
                   "mangle": ("MARK", "CONNMARK", "DSCP", "TOS", "TTL", "HL", "TCPMSS")}
_NAT_FLAGS = {"--random": "random", "--random-fully": "fully-random", "--persistent": "persistent"}


def _proto_name(v) -> str:
    s = str(v).lower()
    return _PROTO_NUMBERS.get(s, s)


def _proto(rule: Rule) -> tuple[bool, str] | None:
    p = rule.basic.get("-p")
    if p is None or p[1].lower() == "all":
        return None
    return (p[0], _proto_name(p[1]))


def _net(v) -> str:
    if isinstance(v, dict) and "prefix" in v:
        v = f"{v['prefix'].get('addr')}/{v['prefix'].get('len')}"
    if not isinstance(v, str):
        return "?"
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        return "?"


def _port_value(v):
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, dict) and "range" in v and all(isinstance(x, int) for x in v["range"]):
        return tuple(v["range"])
    return "?"


def _nft_facts(rule: dict) -> dict:
    """What a rule shows natively, in forms comparable with an iptables rule's."""
    f: dict = {"-i": None, "-o": None, "-s": None, "-d": None, "-p": None, "l4": set(), "sport": None, "dport": None,
               "xt": [], "target": None, "statements": 0}
    for e in rule.get("expr") or []:
        if not isinstance(e, dict) or not e:
            continue
        kind, v = next(iter(e.items()))
        if kind == "match":
            left, right = v.get("left"), v.get("right")
            op = "!=" if v.get("op") == "!=" else "==" if v.get("op") in ("==", "in") else "?"
            if isinstance(left, dict) and "meta" in left:
                key = left["meta"].get("key")
                if key in ("iifname", "iif", "oifname", "oif"):
                    f["-i" if key.startswith("i") else "-o"] = (op, right if isinstance(right, str) else "?")
                elif key == "l4proto":
                    f["-p"] = (op, _proto_name(right) if isinstance(right, (str, int)) else "?")
            elif isinstance(left, dict) and "&" in left and isinstance(left["&"], list) and left["&"] \
                    and isinstance(left["&"][0], dict) and "payload" in left["&"][0]:
                proto = left["&"][0]["payload"].get("protocol")  # tcp flags & mask == x: implies the protocol
                if proto not in ("ip", "ip6", "th", None):
                    f["l4"].add(_proto_name(proto))
            elif isinstance(left, dict) and "payload" in left:
                proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
                if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
                    f["-s" if fld == "saddr" else "-d"] = (op, _net(right))
                elif proto in ("ip", "ip6") and fld in ("protocol", "nexthdr"):
                    f["-p"] = (op, _proto_name(right) if isinstance(right, (str, int)) else "?")
                elif proto not in ("ip", "ip6", "th", None):
                    f["l4"].add(_proto_name(proto))
                    if fld in ("sport", "dport"):
                        f[fld] = (op, _port_value(right))
        elif kind == "xt":
            if v.get("type") == "target":
                f["target"], f["statements"] = ("xt", v.get("name")), f["statements"] + 1
            else:
                f["xt"].append(v.get("name"))
        elif kind in ("accept", "drop", "return"):
            f["target"], f["statements"] = (kind, None), f["statements"] + 1
        elif kind in ("jump", "goto"):
            f["target"], f["statements"] = (kind, (v or {}).get("target")), f["statements"] + 1
        elif kind in _NATIVE_TARGETS:
            f["target"], f["statements"] = ("stmt", kind), f["statements"] + 1
    return f


def _fact(f) -> str:
    if f is None:
        return "none"
    op, v = f
    if v == "?" or op == "?":
        return "a form iptables cannot show"
    if isinstance(v, tuple):
        v = str(v[0]) if v[0] == v[1] else f"{v[0]}:{v[1]}"
    return ("! " if op == "!=" else "") + str(v)


def _target_agrees(rule: Rule, nft: tuple | None, chains) -> bool:
    t = rule.target
    if nft is None:
        return t is None
    kind, arg = nft
    if t is None:
        return False
    if kind == "xt":
        return t in _ALIASES.get(arg, (arg,)) and not rule.goto
    if kind in ("accept", "drop", "return"):
        return _VERDICTS.get(t) == kind and not rule.goto
    if kind in ("jump", "goto"):
        return t == arg and rule.goto == (kind == "goto") and t in chains
    return t in _NATIVE_TARGETS.get(arg, ())


def pair(rule: Rule, nft_rule: dict, chains) -> tuple[list[Module], str | None]:
    """The iptables module behind each xt match of `nft_rule` (in order), or why the two rules are
    not the same rule."""
    if rule.error:
        return [], rule.error
    f = _nft_facts(nft_rule)
    mods, used, j = [], [], 0
    for name in f["xt"]:
        names = _ALIASES.get(name, (name,))
        k = next((k for k in range(j, len(rule.modules)) if rule.modules[k].name in names), None)
        if k is None:
            return [], f"nft lists xt match {name!r}, which the iptables rule does not have"
        mods.append(rule.modules[k])
        used.append(k)
        j = k + 1
    if f["statements"] > 1:
        return [], "nft shows more than one statement, which one iptables target cannot be"
    if not _target_agrees(rule, f["target"], chains):
        return [], f"the verdicts differ (nft: {' '.join(x for x in f['target'] or ('none',) if x)})"
    for opt in ("-i", "-o", "-s", "-d"):
        ipt = rule.basic.get(opt)
        if ipt is not None:
            value = ipt[1][:-1] + "*" if opt in ("-i", "-o") and ipt[1].endswith("+") else ipt[1]
            ipt = ("!=" if ipt[0] else "==", _net(value) if opt in ("-s", "-d") else value)
        if ipt != f[opt]:
            return [], f"{opt} differs (iptables: {_fact(ipt)}; nft: {_fact(f[opt])})"
    proto = _proto(rule)
    ipt_p = ("!=" if proto[0] else "==", proto[1]) if proto else None
    positive = ipt_p is not None and ipt_p[0] == "=="
    # -p tcp shows as `meta l4proto tcp`, or only through a tcp header match (tcp dport 80)
    if ipt_p == f["-p"]:
        same = not f["l4"] or (positive and f["l4"] == {ipt_p[1]})
    else:
        same = f["-p"] is None and positive and f["l4"] == {ipt_p[1]}
    if not same:
        return [], f"the protocol differs (iptables: {_fact(ipt_p)}; nft: {_fact(f['-p'])}, headers {sorted(f['l4'])})"
    ports: dict[str, tuple | None] = {"sport": None, "dport": None}
    for k, m in enumerate(rule.modules):  # the native -m tcp/udp (an xt one is compared as xt)
        if k in used or m.name not in ("tcp", "udp"):
            continue
        for o in m.opts:
            fld = {"--sport": "sport", "--source-port": "sport", "--dport": "dport", "--destination-port": "dport"}.get(o.name)
            if fld and len(o.args) == 1:
                try:
                    lo, _, hi = o.args[0].partition(":")
                    ports[fld] = ("!=" if o.neg else "==", (_port(lo), _port(hi or lo)))
                except ValueError:
                    ports[fld] = ("?", "?")
    for fld in ("sport", "dport"):
        if ports[fld] != f[fld]:
            return [], f"{fld} differs (iptables: {_fact(ports[fld])}; nft: {_fact(f[fld])})"
    return mods, None


# ---------------------------------------------------------------------------------------------
# the whole ruleset


def translate(ruleset: dict, saves: dict | None) -> dict:
    """`ruleset` (nft JSON) with the xt parts of the ip/ip6 tables iptables-nft-save printed
    translated, as the module docstring says. Pure; the input is not modified. Untranslated
    chains (with xt) are also listed in the result's "iptables_untranslated"."""
    items = (ruleset or {}).get("nftables", []) if isinstance(ruleset, dict) else []
    if not saves:
        return ruleset or {"nftables": []}
    parsed = {fam: parse(text) for fam, text in saves.items() if fam in TOOLS and isinstance(text, str)}
    by_chain: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        rule = item.get("rule") if isinstance(item, dict) else None
        if rule and rule.get("family") in parsed:
            by_chain.setdefault((rule["family"], rule.get("table"), rule.get("chain")), []).append(i)
    out = list(items)
    untranslated = []
    for (family, table, chain), idxs in by_chain.items():
        rules = [items[i]["rule"] for i in idxs]
        has_xt = any("xt" in e for r in rules for e in r.get("expr") or [] if isinstance(e, dict))
        why = None
        t = parsed[family].get(table)
        if t is None:
            why = f"{TOOLS[family]} does not list table {table} (not in iptables' format)"
        elif chain not in t.chains:
            why = f"{TOOLS[family]} does not list chain {chain}"
        elif len(t.chains[chain]) != len(rules):
            why = (f"{TOOLS[family]} lists {len(t.chains[chain])} rules in {table} {chain}, nft {len(rules)}: "
                   "the rules changed between the two reads, or nft rules iptables cannot show")
        pairs = []
        if why is None:
            for pos, (ipt, nft_rule) in enumerate(zip(t.chains[chain], rules), 1):
                mods, bad = pair(ipt, nft_rule, t.chains)
                if bad:
                    why = f"rule {pos} of {table} {chain} is not the same in {TOOLS[family]} and nft ({bad})"
                    break
                pairs.append((ipt, mods))
        if why is not None:
            if has_xt:
                untranslated.append({"family": family, "table": table, "chain": chain, "why": why})
                for i in idxs:
                    out[i] = {"rule": _annotate_xt(items[i]["rule"], why)}
            continue
        for i, (ipt, mods) in zip(idxs, pairs):
            out[i] = {"rule": _translate_rule(items[i]["rule"], ipt, mods, family)}
    result = {**ruleset, "nftables": out}
    if untranslated:
        result["iptables_untranslated"] = untranslated
    return result


def _annotate_xt(rule: dict, why: str) -> dict:
    expr = [{"xt": {**e["xt"], "why": why}} if isinstance(e, dict) and "xt" in e else e for e in rule.get("expr") or []]
    return {**rule, "expr": expr}


def _translate_rule(rule: dict, ipt: Rule, mods: list[Module], family: str) -> dict:
    new = {**rule, "iptables": ipt.line}
    expr = []
    mods = iter(mods)
    for e in rule.get("expr") or []:
        if not (isinstance(e, dict) and "xt" in e):
            expr.append(e)
            continue
        v = e["xt"]
        if v.get("type") == "target":
            r = translate_target(ipt, family)
            opts = " ".join(o.text() for o in ipt.target_opts)
            what = f"-j {ipt.target}" + (f" {opts}" if opts else "")
        else:
            mod = next(mods)
            r = translate_match(mod, ipt)
            what = mod.text()
        if isinstance(r, list):
            expr.extend(r)
        elif isinstance(r, dict) and "comment" in r:
            new.setdefault("comment", r["comment"])
        elif isinstance(r, dict):
            expr.append(r)
        else:  # opaque: say what it is (and why it is not evaluated, when known)
            expr.append({"xt": {**v, "iptables": what, **({"why": r} if r else {})}})
    new["expr"] = expr
    return new


_cache: dict[int, tuple] = {}


def ruleset_for(ns: dict) -> dict:
    """The ruleset to reason over for a snapshot namespace: its nft JSON, translated with the
    iptables-nft-save text observed with it (when there is one). Cached per namespace object."""
    ruleset = ns.get("nftables") or {"nftables": []}
    saves = ns.get("iptables_save")
    if not saves:
        return ruleset
    hit = _cache.get(id(ns))
    if hit and hit[0] is ruleset and hit[1] is saves:  # the objects are kept alive here: ids stay theirs
        return hit[2]
    out = translate(ruleset, saves)
    if len(_cache) >= 256:
        _cache.clear()
    _cache[id(ns)] = (ruleset, saves, out)
    return out


__all__ = ["parse", "parse_rule", "tokens", "translate", "ruleset_for", "TOOLS"]
