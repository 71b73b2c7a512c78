"""Evaluation of one packet at one hook over a ruleset: the semantics are in the package docstring."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ...rulesets.nft_text import expr_text, quoted, rule_text, stmt_text, value_text
from .index import Index, prio
from .matching import NoMatch, PacketMatching, Unknown, percent

MAX_PATHS = 256  # combinations of "might match" rules explored per hook
MAX_DEPTH = 64  # jump nesting (the kernel refuses loops; this only guards malformed input)

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


class _Break(Exception):
    """A map lookup found nothing: the rule ends without effect."""


class _Run(PacketMatching):
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
                except NoMatch:
                    return None
                except Unknown as u:
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
                reasons = [f"probabilistic (numgen random): {word} about {percent(numgen)} of packets"
                           if r.startswith("numgen") else r for r in reasons]
            key = self.record(rule, "; ".join(dict.fromkeys(reasons)), verdict)
            if self.choose(2, key) == 0:
                return None
        try:
            return self.exec_statements(rule, exprs)
        except _Break:
            return None
        except Unknown as u:  # a statement whose effect cannot be worked out
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
        except NoMatch:
            raise _Break from None
        except Unknown as u:
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
            raise Unknown(f"verdict {verdict!r}")
        return self.exec_statements(rule, [verdict])

    # -- NAT -----------------------------------------------------------------------------------
    def nat(self, rule: dict, kind: str, d):
        d = d if isinstance(d, dict) else {}
        pkt = self.pkt
        inexact: str | None = None
        try:
            addr = self.nat_value(d.get("addr"))
            port = self.nat_value(d.get("port"))
        except Unknown as u:
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
        """A NAT address/port: str, int, tuple (address . port from a map), or raise Unknown."""
        if x is None or isinstance(x, (str, int)):
            if isinstance(x, str) and x.startswith("@"):
                raise Unknown(f"NAT to the set {x}")
            return x
        if isinstance(x, dict):
            if "map" in x:
                m = x["map"]
                try:
                    key = self.value(m.get("key"))
                except NoMatch:
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
            raise Unknown(f"NAT to {value_text(x)}: the kernel picks one")
        raise Unknown(f"NAT to {x!r}")

    def map_pairs(self, data) -> list:
        if isinstance(data, str) and data.startswith("@"):
            s = self.ctx.index.sets.get((self.chain.get("family"), self.chain.get("table"), data[1:]))
            if s is None:
                raise Unknown(f"map {data} is not in the ruleset")
            elems = s.get("elem") or []
        elif isinstance(data, dict) and "set" in data:
            elems = data["set"] if isinstance(data["set"], list) else [data["set"]]
        else:
            raise Unknown(f"map data {value_text(data)}")
        out = []
        for e in elems:
            if isinstance(e, list) and len(e) == 2:
                k, v = e
                if isinstance(k, dict) and "elem" in k:
                    k = k["elem"].get("val")
                out.append((k, v))
        return out


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
                raise Unknown(f"{s!r} is not an address") from None
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
