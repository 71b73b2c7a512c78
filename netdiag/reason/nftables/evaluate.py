"""Evaluation of one packet at one hook over a ruleset: the semantics are in the package docstring."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ...rulesets.nft_text import PROTO_NAMES, expr_text, quoted, rule_text, stmt_text, value_text
from .index import Index, prio

MAX_PATHS = 256  # combinations of "might match" rules explored per hook
MAX_DEPTH = 64  # jump nesting (the kernel refuses loops; this only guards malformed input)

_ICMP_NUMBERS = {0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect",
                 8: "echo-request", 11: "time-exceeded", 12: "parameter-problem", 13: "timestamp-request",
                 14: "timestamp-reply"}
_NFPROTO = {4: "ipv4", 6: "ipv6"}
_KNOWN_STATUS = frozenset({"dnat", "snat"})
# iptables targets (xt) whose effect does not depend on their (invisible) arguments for our model
_XT_CONTINUE = frozenset({"LOG", "NFLOG", "ULOG", "TRACE", "MARK", "CONNMARK", "TCPMSS", "CHECKSUM",
                          "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "AUDIT", "SECMARK", "CONNSECMARK", "IDLETIMER"})
_XT_NAT = {"DNAT": "dnat", "SNAT": "snat", "REDIRECT": "redirect", "NETMAP": "netmap"}
_NOOP_STATEMENTS = frozenset({"counter", "log", "comment", "set", "map", "meter"})


def _rule_verdict(rule: dict) -> str:
    """What the rule does when it matches (for `unknown` entries)."""
    out = "continue"
    for e in rule.get("expr") or []:
        if not isinstance(e, dict) or not e:
            continue
        kind = next(iter(e))
        v = e[kind]
        if kind in ("accept", "drop", "reject", "return", "queue", "dnat", "snat", "masquerade", "redirect"):
            out = kind
        elif kind in ("jump", "goto"):
            out = f"{kind} {v.get('target')}"
        elif kind == "vmap":
            out = "vmap"
        elif kind == "xt" and v.get("type") == "target":
            name = v.get("name")
            out = "reject" if name == "REJECT" else "masquerade" if name == "MASQUERADE" else \
                _XT_NAT.get(name) or ("continue" if name in _XT_CONTINUE else f"xt target {name}")
    return out


@dataclass(frozen=True)
class Packet:
    """One packet as seen at a hook. src/dst: IPv4 or IPv6 address strings."""

    src: str
    dst: str
    proto: str  # "tcp" | "udp" | "icmp"
    sport: int = 0
    dport: int = 0
    iif: str | None = None  # None: not known (or no such device at this hook, e.g. oif at prerouting)
    oif: str | None = None
    ct_state: str = "new"  # new | established | related | invalid | untracked
    ct_status: frozenset = frozenset()  # {"dnat"} after a DNAT earlier in the path, {"snat"} ...
    length: int = 64  # IP total length (meta length / ip length)
    icmp_type: str = "echo-request"  # only meaningful when proto == "icmp"

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.src).version


@dataclass
class Step:
    """One rule that matched (or a chain policy that applied)."""

    family: str
    table: str
    chain: str
    handle: int | None
    text: str
    comment: str
    verdict: str  # accept|drop|reject|jump X|goto X|return|continue|dnat|snat|masquerade|redirect|queue|policy accept|policy drop
    iptables: str = ""  # the rule as iptables-nft-save prints it (translated iptables-nft rules)


@dataclass
class HookResult:
    verdict: str  # "accept" | "drop" | "unknown"
    packet: Packet  # after NAT
    steps: list[Step]  # the path (where rules that could not be evaluated did not match)
    deciding: Step | None  # the rule or policy that dropped it (on that path), else None
    unknown: list[dict]  # rules that could not be evaluated, see the module docstring
    packet_exact: bool = True  # False when a NAT rewrite (or a possible one) is not known exactly


class _Unknown(Exception):
    def __init__(self, reason: str, numgen: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.numgen = numgen


class _NoMatch(Exception):
    """An implicit dependency failed (e.g. `tcp dport` on a udp packet): the rule cannot match."""


class _Break(Exception):
    """A map lookup found nothing: the rule ends without effect."""


def _pct(x: float) -> str:
    return f"{round(x, 1):g}%"


class _Run:
    """One path through the hook; `forced` fixes the choices at "might match" points."""

    def __init__(self, ctx: "_Context", forced: tuple):
        self.ctx = ctx
        self.forced = forced
        self.taken: list[int] = []
        self.sizes: list[int] = []
        self.point_keys: list[tuple] = []
        self.records: dict[tuple, dict] = {}
        self.steps: list[Step] = []
        self.inexact_keys: set[tuple] = set()
        self.pkt = ctx.packet
        self.verdict = "accept"
        self.deciding: Step | None = None
        self.nat_done = False
        self.chain: dict = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def choose(self, n: int, key: tuple) -> int:
        i = len(self.taken)
        c = self.forced[i] if i < len(self.forced) else 0
        self.taken.append(c)
        self.sizes.append(n)
        self.point_keys.append(key)
        return c if c < n else 0

    def record(self, rule: dict, reason: str, verdict: str | None = None) -> tuple:
        key = (rule.get("family"), rule.get("table"), rule.get("chain"), rule.get("handle"), reason)
        if key not in self.records:
            self.records[key] = {
                "family": rule.get("family"), "table": rule.get("table"), "chain": rule.get("chain"),
                "handle": rule.get("handle"), "text": rule_text(rule), "reason": reason,
                "verdict": verdict or _rule_verdict(rule), "changes_outcome": False,
            }
            if rule.get("iptables"):
                self.records[key]["iptables"] = rule["iptables"]
        return key

    def step(self, rule: dict, verdict: str) -> Step:
        s = Step(rule.get("family"), rule.get("table"), rule.get("chain"), rule.get("handle"), rule_text(rule),
                 rule.get("comment", "") or "", verdict, rule.get("iptables") or "")
        self.steps.append(s)
        return s

    # -- hook ----------------------------------------------------------------------------------
    def run(self) -> "_Run":
        ctx = self.ctx
        for chain in ctx.chains:
            is_nat = chain.get("type") == "nat"
            if is_nat and (self.pkt.ct_state == "established" or self.nat_done):
                continue
            self.chain = chain
            key = (chain.get("family"), chain.get("table"), chain.get("name"))
            out = self.exec_chain(key, 0)
            if out[0] == "return":  # fell off the base chain (or returned from it): policy
                policy = chain.get("policy", "accept")
                s = Step(chain.get("family"), chain.get("table"), chain.get("name"), None,
                         f"type {chain.get('type')} hook {chain.get('hook')} priority {prio(chain)}; policy {policy};",
                         "", f"policy {policy}")
                self.steps.append(s)
                if policy == "drop":
                    self.verdict, self.deciding = "drop", s
                    return self
                continue
            _, verdict, s = out
            if verdict == "drop":
                self.verdict, self.deciding = "drop", s
                return self
            if verdict == "unknown":
                self.verdict = "unknown"
                return self
            if verdict == "nat":
                self.nat_done = True
        self.verdict = "accept"
        return self

    def exec_chain(self, key: tuple, depth: int):
        """("return",) when the chain ends without a final verdict, else ("final", verdict, step)."""
        if depth > MAX_DEPTH:
            return ("final", "unknown", None)
        for rule in self.ctx.index.rules.get(key, []):
            r = self.exec_rule(rule)
            if r is None:
                continue
            kind = r[0]
            if kind == "final":
                return r
            if kind == "return":
                return ("return",)
            target = (key[0], key[1], r[1])
            sub = self.exec_chain(target, depth + 1)
            if sub[0] == "final":
                return sub
            if kind == "goto":
                return ("return",)
        return ("return",)

    # -- rules ---------------------------------------------------------------------------------
    def exec_rule(self, rule: dict):
        exprs = [e for e in rule.get("expr") or [] if isinstance(e, dict) and e]
        reasons: list[str] = []
        numgen: float | None = None
        for e in exprs:
            kind = next(iter(e))
            v = e[kind]
            if kind == "match":
                try:
                    ok = self.match(v)
                except _NoMatch:
                    return None
                except _Unknown as u:
                    reasons.append(u.reason)
                    if u.numgen is not None:
                        numgen = u.numgen
                    continue
                if not ok:
                    return None
            elif kind == "limit":
                how = "only above" if v.get("inv") else "only while under"
                reasons.append(f"rate limit ({stmt_text(e)}): matches {how} that rate, which depends on the traffic")
            elif kind == "quota":
                reasons.append("quota: matches depending on the bytes already counted")
            elif kind == "xt" and v.get("type") == "match" and v.get("name") != "comment":
                reasons.append(f"iptables match {quoted(v.get('name'))} (xt): " + (
                    v.get("why") or "its arguments are not in nft's JSON, so it cannot be evaluated"))
        if reasons:
            verdict = _rule_verdict(rule)
            if numgen is not None:
                word = "drops" if verdict in ("drop", "reject") else "matches"
                reasons = [f"probabilistic (numgen random): {word} about {_pct(numgen)} of packets"
                           if r.startswith("numgen") else r for r in reasons]
            key = self.record(rule, "; ".join(dict.fromkeys(reasons)), verdict)
            if self.choose(2, key) == 0:
                return None
        try:
            return self.exec_statements(rule, exprs)
        except _Break:
            return None
        except _Unknown as u:  # a statement whose effect cannot be worked out
            key = self.record(rule, u.reason, "unknown")
            if self.choose(2, key) == 1:
                return ("final", "unknown", self.step(rule, "unknown"))
            return None

    def exec_statements(self, rule: dict, exprs: list):
        for e in exprs:
            kind = next(iter(e))
            v = e[kind]
            if kind in ("match", "limit", "quota") or kind in _NOOP_STATEMENTS:
                continue
            if kind == "xt":
                if v.get("type") == "match":
                    continue
                r = self.xt_target(rule, v)
                if r is not None:
                    return r
                continue
            if kind == "accept":
                return ("final", "accept", self.step(rule, "accept"))
            if kind == "drop":
                return ("final", "drop", self.step(rule, "drop"))
            if kind == "reject":
                return ("final", "drop", self.step(rule, "reject"))
            if kind == "continue":
                self.step(rule, "continue")
                return None
            if kind == "return":
                self.step(rule, "return")
                return ("return",)
            if kind in ("jump", "goto"):
                self.step(rule, f"{kind} {v.get('target')}")
                return (kind, v.get("target"))
            if kind in ("dnat", "snat", "masquerade", "redirect"):
                return self.nat(rule, kind, v)
            if kind == "vmap":
                return self.vmap(rule, v)
            if kind == "mangle":
                target = v.get("key")
                if isinstance(target, dict) and ("payload" in target or "exthdr" in target):
                    key = self.record(rule, f"rewrites {expr_text(target)}: packet rewrites by rules are not modeled",
                                      "continue")
                    self.inexact_keys.add(key)
                continue  # meta mark set, ct mark set, tcp option maxseg size set ...: no verdict
            if kind == "queue":
                key = self.record(rule, "queue: a userspace program decides the verdict", "queue")
                self.inexact_keys.add(key)
                return ("final", "unknown", self.step(rule, "queue"))
            # anything else: its effect is not known
            key = self.record(rule, f"statement {kind!r} is not modeled", "unknown")
            if self.choose(2, key) == 1:
                return ("final", "unknown", self.step(rule, "unknown"))
        self.step(rule, "continue")
        return None

    def xt_target(self, rule: dict, xt: dict):
        name = xt.get("name")
        if name == "REJECT":
            return ("final", "drop", self.step(rule, "reject"))
        if name == "MASQUERADE":
            return self.nat(rule, "masquerade", None)
        if name in _XT_NAT:
            kind = _XT_NAT[name]
            key = self.record(rule, f"iptables target {name} (xt): " + (
                xt.get("why") or "the new address is in an opaque xt blob that nft's JSON does not show"), kind)
            self.inexact_keys.add(key)
            flag = "snat" if kind == "snat" else "dnat"
            self.pkt = replace(self.pkt, ct_status=frozenset(self.pkt.ct_status | {flag}))
            return ("final", "nat", self.step(rule, kind if kind != "netmap" else "dnat"))
        if name in _XT_CONTINUE:
            return None
        why = f": {xt['why']}" if xt.get("why") else ""
        key = self.record(rule, f"iptables target {quoted(name)} (xt) is not modeled{why}", f"xt target {name}")
        if self.choose(2, key) == 1:
            return ("final", "unknown", self.step(rule, f"xt target {name}"))
        return None

    def vmap(self, rule: dict, v: dict):
        try:
            value = self.value(v.get("key"))
        except _NoMatch:
            raise _Break from None
        except _Unknown as u:
            data = v.get("data")
            pairs = self.map_pairs(data)
            key = self.record(rule, f"verdict map key: {u.reason}", "vmap")
            c = self.choose(len(pairs) + 1, key)
            if c == 0:
                raise _Break from None
            return self.apply_verdict(rule, pairs[c - 1][1])
        for k, verdict in self.map_pairs(v.get("data")):
            if self.member(value, k):
                return self.apply_verdict(rule, verdict)
        raise _Break

    def apply_verdict(self, rule: dict, verdict) -> tuple | None:
        if not isinstance(verdict, dict) or not verdict:
            raise _Unknown(f"verdict {verdict!r}")
        return self.exec_statements(rule, [verdict])

    # -- NAT -----------------------------------------------------------------------------------
    def nat(self, rule: dict, kind: str, d):
        d = d if isinstance(d, dict) else {}
        pkt = self.pkt
        inexact: str | None = None
        try:
            addr = self.nat_value(d.get("addr"))
            port = self.nat_value(d.get("port"))
        except _Unknown as u:
            addr = port = None
            inexact = u.reason
        if isinstance(addr, tuple):  # a map to address . port
            addr, port = addr[0], (addr[1] if len(addr) > 1 else port)
        # no address (iptables' `--to-source :53`): the kernel keeps it and maps the port only
        known = inexact is None and (isinstance(addr, str) or (addr is None and isinstance(port, int))) \
            and (port is None or isinstance(port, int))
        if kind == "dnat":
            if known:
                pkt = replace(pkt, dst=addr or pkt.dst, dport=pkt.dport if port is None else port)
            elif inexact is None:
                inexact = f"dnat to {value_text(d.get('addr'))}: the kernel picks the address/port from a range"
            pkt = replace(pkt, ct_status=frozenset(pkt.ct_status | {"dnat"}))
        elif kind == "snat":
            if known:
                pkt = replace(pkt, src=addr or pkt.src, sport=pkt.sport if port is None else port)
            elif inexact is None:
                inexact = f"snat to {value_text(d.get('addr'))}: the kernel picks the address/port from a range"
            pkt = replace(pkt, ct_status=frozenset(pkt.ct_status | {"snat"}))
        elif kind == "masquerade":
            if self.ctx.masquerade_addr:
                pkt = replace(pkt, src=self.ctx.masquerade_addr)
            else:
                inexact = "masquerade: the new source is the output interface's address (masquerade_addr not given)"
            pkt = replace(pkt, ct_status=frozenset(pkt.ct_status | {"snat"}))
        elif kind == "redirect":
            if inexact is None and port is not None and not isinstance(port, int):
                inexact = "redirect to a port range"
            new_port = port if isinstance(port, int) else pkt.dport
            if self.ctx.hook == "output":
                pkt = replace(pkt, dst="127.0.0.1" if pkt.version == 4 else "::1", dport=new_port)
            else:  # to the primary address of the input interface, which the ruleset does not show
                pkt = replace(pkt, dport=new_port)
                inexact = inexact or "redirect: the new destination is the input interface's primary address"
            pkt = replace(pkt, ct_status=frozenset(pkt.ct_status | {"dnat"}))
        self.pkt = pkt
        s = self.step(rule, kind)
        if inexact:
            self.inexact_keys.add(self.record(rule, inexact, kind))
        return ("final", "nat", s)

    def nat_value(self, x):
        """A NAT address/port: str, int, tuple (address . port from a map), or raise _Unknown."""
        if x is None or isinstance(x, (str, int)):
            if isinstance(x, str) and x.startswith("@"):
                raise _Unknown(f"NAT to the set {x}")
            return x
        if isinstance(x, dict):
            if "map" in x:
                m = x["map"]
                try:
                    key = self.value(m.get("key"))
                except _NoMatch:
                    raise _Break from None
                for k, val in self.map_pairs(m.get("data")):
                    if self.member(key, k):
                        if isinstance(val, dict) and "concat" in val:
                            return tuple(self.nat_value(p) for p in val["concat"])
                        return self.nat_value(val)
                raise _Break
            if "range" in x:
                a, b = x["range"]
                if a == b:
                    return a
            raise _Unknown(f"NAT to {value_text(x)}: the kernel picks one")
        raise _Unknown(f"NAT to {x!r}")

    def map_pairs(self, data) -> list:
        if isinstance(data, str) and data.startswith("@"):
            s = self.ctx.index.sets.get((self.chain.get("family"), self.chain.get("table"), data[1:]))
            if s is None:
                raise _Unknown(f"map {data} is not in the ruleset")
            elems = s.get("elem") or []
        elif isinstance(data, dict) and "set" in data:
            elems = data["set"] if isinstance(data["set"], list) else [data["set"]]
        else:
            raise _Unknown(f"map data {value_text(data)}")
        out = []
        for e in elems:
            if isinstance(e, list) and len(e) == 2:
                k, v = e
                if isinstance(k, dict) and "elem" in k:
                    k = k["elem"].get("val")
                out.append((k, v))
        return out

    # -- matches -------------------------------------------------------------------------------
    def match(self, m: dict) -> bool:
        op, left, right = m.get("op", "=="), m.get("left"), m.get("right")
        if isinstance(left, dict) and "numgen" in left:
            raise self.numgen(left["numgen"], op, right)
        if isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "status" and not left["ct"].get("dir"):
            return self.ct_status(op, right)
        value = self.value(left)
        if op in ("==", "in"):
            return self.contains(value, right, left)
        if op == "!=":
            return not self.contains(value, right, left)
        if op in ("<", ">", "<=", ">="):
            c = self.scalar(value, right, left)
            if not isinstance(value, (int, ipaddress.IPv4Address, ipaddress.IPv6Address)):
                raise _Unknown(f"ordering comparison on {expr_text(left)}")
            return {"<": value < c, ">": value > c, "<=": value <= c, ">=": value >= c}[op]
        raise _Unknown(f"operator {op!r} on {expr_text(left)}")

    def numgen(self, n: dict, op: str, right) -> _Unknown:
        mod, off = n.get("mod") or 1, n.get("offset") or 0
        share = None
        if isinstance(right, int) and op in ("<", "<=", ">", ">=", "==", "!="):
            test = {"<": lambda x: x < right, "<=": lambda x: x <= right, ">": lambda x: x > right,
                    ">=": lambda x: x >= right, "==": lambda x: x == right, "!=": lambda x: x != right}[op]
            share = 100.0 * sum(1 for x in range(off, off + mod) if test(x)) / mod
        if n.get("mode") == "random" and share is not None:
            return _Unknown(f"numgen random: matches about {_pct(share)} of packets", numgen=share)
        return _Unknown(f"numgen {n.get('mode')}: which packets match depends on a packet counter or a random number")

    def ct_status(self, op: str, right) -> bool:
        flags = set(self.flat(right))
        have = set(self.pkt.ct_status)
        if op == "in":  # implicit: (status & flags) != 0
            if flags & have:
                return True
            if flags <= _KNOWN_STATUS:
                return False
            raise _Unknown(f"ct status {','.join(sorted(flags - _KNOWN_STATUS))} is not modeled (only dnat/snat)")
        if op in ("==", "!="):  # the whole status word: known only when dnat/snat already differ
            if (flags & _KNOWN_STATUS) != (have & _KNOWN_STATUS):
                return op == "!="
            raise _Unknown(f"ct status {op} compares the whole status word (confirmed, assured, ...), "
                           "which is not modeled")
        raise _Unknown(f"ct status {op}")

    def flat(self, right) -> list:
        if isinstance(right, list):
            return [x for r in right for x in self.flat(r)]
        if isinstance(right, dict) and "set" in right:
            return self.flat(right["set"])
        if isinstance(right, str):
            return [right]
        raise _Unknown(f"value {value_text(right)}")

    def value(self, x):
        pkt, ctx = self.pkt, self.ctx
        if not isinstance(x, dict):
            raise _Unknown(f"expression {value_text(x)}")
        if "payload" in x:
            p = x["payload"]
            if "base" in p:
                raise _Unknown(f"raw payload {expr_text(x)} is not modeled")
            proto, fld = p.get("protocol"), p.get("field")
            if proto in ("ip", "ip6"):
                if (proto == "ip") != (pkt.version == 4):
                    raise _NoMatch
                if fld == "saddr":
                    return ctx.ip(pkt.src)
                if fld == "daddr":
                    return ctx.ip(pkt.dst)
                if fld in ("protocol", "nexthdr"):
                    return pkt.proto
                if fld in ("length", "payload_length") and proto == "ip":
                    return pkt.length
            elif proto in ("tcp", "udp"):
                if pkt.proto != proto:
                    raise _NoMatch
                if fld in ("sport", "dport"):
                    return getattr(pkt, fld)
            elif proto == "th":
                if fld in ("sport", "dport"):
                    if pkt.proto in ("tcp", "udp"):
                        return getattr(pkt, fld)
                    raise _Unknown(f"th {fld} reads raw bytes of a {pkt.proto} header")
            elif proto == "icmp":
                if pkt.proto != "icmp" or pkt.version != 4:
                    raise _NoMatch
                if fld == "type":
                    return pkt.icmp_type
            raise _Unknown(f"{expr_text(x)} is not modeled")
        if "meta" in x:
            k = x["meta"].get("key")
            if k in ("iifname", "iif"):
                return self.ifname(pkt.iif, "input", ctx.hook in ("output",), k == "iif")
            if k in ("oifname", "oif"):
                return self.ifname(pkt.oif, "output", ctx.hook in ("prerouting", "input", "ingress"), k == "oif")
            if k == "l4proto":
                return pkt.proto
            if k == "nfproto":
                return _NFPROTO[pkt.version]
            if k == "protocol":
                return "ip" if pkt.version == 4 else "ip6"
            if k == "length":
                return pkt.length
            if k == "mark":
                raise _Unknown("meta mark: packet marks are not modeled")
            raise _Unknown(f"meta {k} is not modeled")
        if "ct" in x:
            c = x["ct"]
            if c.get("key") == "state" and not c.get("dir"):
                return pkt.ct_state
            raise _Unknown(f"{expr_text(x)} is not modeled")
        if "fib" in x:
            f = x["fib"]
            if f.get("result") == "type" and list(f.get("flags") or []) == ["daddr"]:
                return self.fib_type(pkt.dst)
            raise _Unknown(f"{expr_text(x)} depends on routing, which this evaluator does not see")
        if "concat" in x:
            return tuple(self.value(e) for e in x["concat"])
        key = next(iter(x), "?")
        raise _Unknown(f"{key} expression ({expr_text(x)}) is not modeled")

    def ifname(self, name: str | None, which: str, absent_here: bool, by_index: bool) -> str:
        if name is not None:
            return name
        if absent_here:  # no such device at this hook: iif/oif (index) never match, iifname/oifname see ""
            if by_index:
                raise _NoMatch
            return ""
        raise _Unknown(f"the {which} interface is not known here")

    def fib_type(self, dst: str) -> str:
        ip = self.ctx.ip(dst)
        if ip.is_loopback or ip in self.ctx.local_addrs:
            return "local"
        if ip.is_multicast:
            return "multicast"
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "broadcast"
        if not self.ctx.local_addrs:
            raise _Unknown("fib daddr type: the namespace's local addresses were not given")
        return "unicast"

    # -- comparisons ---------------------------------------------------------------------------
    def elements(self, right) -> list:
        if isinstance(right, str) and right.startswith("@"):
            s = self.ctx.index.sets.get((self.chain.get("family"), self.chain.get("table"), right[1:]))
            if s is None:
                raise _Unknown(f"set {right} is not in the ruleset")
            return [e["elem"].get("val") if isinstance(e, dict) and "elem" in e else e for e in (s.get("elem") or [])]
        if isinstance(right, dict) and "set" in right:
            s = right["set"]
            return s if isinstance(s, list) else [s]
        if isinstance(right, list):
            return right
        return [right]

    def contains(self, value, right, left) -> bool:
        names = _ICMP_NUMBERS if isinstance(left, dict) and "payload" in left and left["payload"].get("protocol") == "icmp" \
            else PROTO_NAMES
        return any(self.member(value, e, names) for e in self.elements(right))

    def scalar(self, value, right, left):
        if isinstance(value, int) and isinstance(right, int):
            return right
        if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)) and isinstance(right, str):
            return self.ctx.ip(right)
        raise _Unknown(f"comparison of {expr_text(left)} with {value_text(right)}")

    def member(self, value, elem, names=PROTO_NAMES) -> bool:
        if isinstance(elem, dict):
            if "elem" in elem:
                return self.member(value, elem["elem"].get("val"), names)
            if "prefix" in elem:
                if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                    raise _Unknown(f"prefix {value_text(elem)} against {value!r}")
                net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}", strict=False)
                return net.version == value.version and value in net
            if "range" in elem:
                lo, hi = (self.coerce(value, b, names) for b in elem["range"])
                return lo is not None and hi is not None and lo <= value <= hi
            if "concat" in elem:
                parts = elem["concat"]
                if not isinstance(value, tuple) or len(value) != len(parts):
                    raise _Unknown(f"concatenation {value_text(elem)} against {value!r}")
                return all(self.member(v, p, names) for v, p in zip(value, parts))
            raise _Unknown(f"element {value_text(elem)}")
        if isinstance(value, str) and isinstance(elem, str):
            if elem.endswith("*") and not elem.endswith("\\*"):
                return value.startswith(elem[:-1])  # nft's interface-name wildcard
            return value == elem.replace("\\*", "*")
        c = self.coerce(value, elem, names)
        return c is not None and value == c

    def coerce(self, value, const, names=PROTO_NAMES):
        if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            if isinstance(const, str):
                ip = self.ctx.ip(const)
                return ip if ip.version == value.version else None  # never equal
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if isinstance(const, int):
                return const
            if isinstance(const, str) and const.isdigit():
                return int(const)
        elif isinstance(value, str):
            if isinstance(const, str):
                return const
            if isinstance(const, int) and const in names:
                return names[const]
        raise _Unknown(f"cannot compare {value!r} with {value_text(const)}")


class _Context:
    def __init__(self, index: Index, hook: str, packet: Packet, chains: list[dict], local_addrs, masquerade_addr):
        self.index, self.hook, self.packet, self.chains = index, hook, packet, chains
        self._ips: dict[str, object] = {}
        self.local_addrs = frozenset(self.ip(a) for a in local_addrs)
        self.masquerade_addr = masquerade_addr

    def ip(self, s: str):
        r = self._ips.get(s)
        if r is None:
            try:
                r = ipaddress.ip_address(s)
            except ValueError:
                raise _Unknown(f"{s!r} is not an address") from None
            self._ips[s] = r
        return r


def evaluate(ruleset: dict, hook: str, packet: Packet, *, families=("ip", "inet"), chain_type: str | None = None,
             local_addrs: set[str] = frozenset(), masquerade_addr: str | None = None) -> HookResult:
    """Run `packet` through every base chain of `families` at `hook` (only chains of `chain_type`
    when given: "nat", "filter", "route"). local_addrs: the namespace's own addresses (fib daddr
    type local; empty = not known, then `fib daddr type` of a non-loopback address is unknown).
    masquerade_addr: the source masquerade gives (the output interface's address)."""
    for a in (packet.src, packet.dst):
        ipaddress.ip_address(a)  # ValueError for a bad address: a caller's bug, not an unknown
    index = Index(ruleset)
    wrong_family = "ip6" if ipaddress.ip_address(packet.src).version == 4 else "ip"  # never sees this packet
    chains = [c for c in index.base_chains([(f, hook) for f in families if f != wrong_family])
              if chain_type is None or c.get("type") == chain_type]
    ctx = _Context(index, hook, packet, chains, local_addrs, masquerade_addr)

    leaves: list[_Run] = []
    pending: list[tuple] = [()]
    complete = True
    while pending:
        if len(leaves) >= MAX_PATHS:
            complete = False
            break
        forced = pending.pop()
        run = _Run(ctx, forced).run()
        leaves.append(run)
        for i in range(len(forced), len(run.taken)):  # every other choice at the points met past the prefix
            pending.extend(tuple(run.taken[:i]) + (alt,) for alt in range(1, run.sizes[i]))

    primary = leaves[0]
    records: dict[tuple, dict] = {}
    for run in leaves:
        for k, r in run.records.items():
            records.setdefault(k, dict(r))
    outcome0 = (primary.verdict, primary.pkt)
    verdicts = {run.verdict for run in leaves}
    for run in leaves:
        if (run.verdict, run.pkt) != outcome0 or run.inexact_keys:
            for i, c in enumerate(run.taken):
                if c:
                    records[run.point_keys[i]]["changes_outcome"] = True
        for k in run.inexact_keys:
            records[k]["changes_outcome"] = True
    verdict = primary.verdict
    if len(verdicts) > 1 or not complete:
        verdict = "unknown"
    exact = complete and all(run.pkt == primary.pkt and not run.inexact_keys for run in leaves)
    unknown = list(records.values())
    if not complete:
        unknown.append({"family": None, "table": None, "chain": None, "handle": None, "text": "",
                        "reason": f"more than {MAX_PATHS} combinations of rules that could not be evaluated",
                        "verdict": "unknown", "changes_outcome": True})
    return HookResult(verdict=verdict, packet=primary.pkt, steps=primary.steps,
                      deciding=primary.deciding if primary.verdict == "drop" else None,
                      unknown=unknown, packet_exact=exact)
