"""What one match expression says about one packet: the packet's value of a payload, meta, ct or
fib expression, and its comparison with values, prefixes, ranges, sets and concatenations, as
the package docstring lists them. A mixin of the evaluator's run (evaluate._Run), which holds the
packet (`pkt`), the hook's context (`ctx`) and the chain being run (`chain`)."""
from __future__ import annotations

import ipaddress

from ...rulesets.nft_text import PROTO_NAMES, expr_text, value_text

_ICMP_NUMBERS = {0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect",
                 8: "echo-request", 11: "time-exceeded", 12: "parameter-problem", 13: "timestamp-request",
                 14: "timestamp-reply"}
_NFPROTO = {4: "ipv4", 6: "ipv6"}
_KNOWN_STATUS = frozenset({"dnat", "snat"})


class Unknown(Exception):
    """What cannot be evaluated exactly (never guessed): the reason, and for `numgen random` the
    share of packets that match."""

    def __init__(self, reason: str, numgen: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.numgen = numgen


class NoMatch(Exception):
    """An implicit dependency failed (e.g. `tcp dport` on a udp packet): the rule cannot match."""


def percent(x: float) -> str:
    return f"{round(x, 1):g}%"


class PacketMatching:
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
                raise Unknown(f"ordering comparison on {expr_text(left)}")
            return {"<": value < c, ">": value > c, "<=": value <= c, ">=": value >= c}[op]
        raise Unknown(f"operator {op!r} on {expr_text(left)}")

    def numgen(self, n: dict, op: str, right) -> Unknown:
        mod, off = n.get("mod") or 1, n.get("offset") or 0
        share = None
        if isinstance(right, int) and op in ("<", "<=", ">", ">=", "==", "!="):
            test = {"<": lambda x: x < right, "<=": lambda x: x <= right, ">": lambda x: x > right,
                    ">=": lambda x: x >= right, "==": lambda x: x == right, "!=": lambda x: x != right}[op]
            share = 100.0 * sum(1 for x in range(off, off + mod) if test(x)) / mod
        if n.get("mode") == "random" and share is not None:
            return Unknown(f"numgen random: matches about {percent(share)} of packets", numgen=share)
        return Unknown(f"numgen {n.get('mode')}: which packets match depends on a packet counter or a random number")

    def ct_status(self, op: str, right) -> bool:
        flags = set(self.flat(right))
        have = set(self.pkt.ct_status)
        if op == "in":  # implicit: (status & flags) != 0
            if flags & have:
                return True
            if flags <= _KNOWN_STATUS:
                return False
            raise Unknown(f"ct status {','.join(sorted(flags - _KNOWN_STATUS))} is not modeled (only dnat/snat)")
        if op in ("==", "!="):  # the whole status word: known only when dnat/snat already differ
            if (flags & _KNOWN_STATUS) != (have & _KNOWN_STATUS):
                return op == "!="
            raise Unknown(f"ct status {op} compares the whole status word (confirmed, assured, ...), "
                           "which is not modeled")
        raise Unknown(f"ct status {op}")

    def flat(self, right) -> list:
        if isinstance(right, list):
            return [x for r in right for x in self.flat(r)]
        if isinstance(right, dict) and "set" in right:
            return self.flat(right["set"])
        if isinstance(right, str):
            return [right]
        raise Unknown(f"value {value_text(right)}")

    def value(self, x):
        pkt, ctx = self.pkt, self.ctx
        if not isinstance(x, dict):
            raise Unknown(f"expression {value_text(x)}")
        if "payload" in x:
            p = x["payload"]
            if "base" in p:
                raise Unknown(f"raw payload {expr_text(x)} is not modeled")
            proto, fld = p.get("protocol"), p.get("field")
            if proto in ("ip", "ip6"):
                if (proto == "ip") != (pkt.version == 4):
                    raise NoMatch
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
                    raise NoMatch
                if fld in ("sport", "dport"):
                    return getattr(pkt, fld)
            elif proto == "th":
                if fld in ("sport", "dport"):
                    if pkt.proto in ("tcp", "udp"):
                        return getattr(pkt, fld)
                    raise Unknown(f"th {fld} reads raw bytes of a {pkt.proto} header")
            elif proto == "icmp":
                if pkt.proto != "icmp" or pkt.version != 4:
                    raise NoMatch
                if fld == "type":
                    return pkt.icmp_type
            raise Unknown(f"{expr_text(x)} is not modeled")
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
                raise Unknown("meta mark: packet marks are not modeled")
            raise Unknown(f"meta {k} is not modeled")
        if "ct" in x:
            c = x["ct"]
            if c.get("key") == "state" and not c.get("dir"):
                return pkt.ct_state
            raise Unknown(f"{expr_text(x)} is not modeled")
        if "fib" in x:
            f = x["fib"]
            if f.get("result") == "type" and list(f.get("flags") or []) == ["daddr"]:
                return self.fib_type(pkt.dst)
            raise Unknown(f"{expr_text(x)} depends on routing, which this evaluator does not see")
        if "concat" in x:
            return tuple(self.value(e) for e in x["concat"])
        key = next(iter(x), "?")
        raise Unknown(f"{key} expression ({expr_text(x)}) is not modeled")

    def ifname(self, name: str | None, which: str, absent_here: bool, by_index: bool) -> str:
        if name is not None:
            return name
        if absent_here:  # no such device at this hook: iif/oif (index) never match, iifname/oifname see ""
            if by_index:
                raise NoMatch
            return ""
        raise Unknown(f"the {which} interface is not known here")

    def fib_type(self, dst: str) -> str:
        ip = self.ctx.ip(dst)
        if ip.is_loopback or ip in self.ctx.local_addrs:
            return "local"
        if ip.is_multicast:
            return "multicast"
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "broadcast"
        if not self.ctx.local_addrs:
            raise Unknown("fib daddr type: the namespace's local addresses were not given")
        return "unicast"

    # -- comparisons ---------------------------------------------------------------------------
    def elements(self, right) -> list:
        if isinstance(right, str) and right.startswith("@"):
            s = self.ctx.index.sets.get((self.chain.get("family"), self.chain.get("table"), right[1:]))
            if s is None:
                raise Unknown(f"set {right} is not in the ruleset")
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
        raise Unknown(f"comparison of {expr_text(left)} with {value_text(right)}")

    def member(self, value, elem, names=PROTO_NAMES) -> bool:
        if isinstance(elem, dict):
            if "elem" in elem:
                return self.member(value, elem["elem"].get("val"), names)
            if "prefix" in elem:
                if not isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                    raise Unknown(f"prefix {value_text(elem)} against {value!r}")
                net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}", strict=False)
                return net.version == value.version and value in net
            if "range" in elem:
                lo, hi = (self.coerce(value, b, names) for b in elem["range"])
                return lo is not None and hi is not None and lo <= value <= hi
            if "concat" in elem:
                parts = elem["concat"]
                if not isinstance(value, tuple) or len(value) != len(parts):
                    raise Unknown(f"concatenation {value_text(elem)} against {value!r}")
                return all(self.member(v, p, names) for v, p in zip(value, parts))
            raise Unknown(f"element {value_text(elem)}")
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
        raise Unknown(f"cannot compare {value!r} with {value_text(const)}")
