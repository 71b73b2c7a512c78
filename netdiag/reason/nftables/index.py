"""A ruleset (nft JSON) indexed for evaluation: chains, rules per chain, sets; and the base chains
of a hook in the order the kernel runs them."""
from __future__ import annotations

# named priorities (nft's `priority NAME [+|- N]`)
PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
BRIDGE_PRIORITIES = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}
NAT_CORE_PRIORITY = {"prerouting": -100, "output": -100, "postrouting": 100, "input": 100}


def _items(ruleset) -> list:
    if isinstance(ruleset, dict):
        return ruleset.get("nftables") or []
    return list(ruleset or [])


def prio(chain: dict) -> int:
    p = chain.get("prio", 0)
    if isinstance(p, bool):
        return 0
    if isinstance(p, int):
        return p
    names = BRIDGE_PRIORITIES if chain.get("family") == "bridge" else PRIORITIES
    s = str(p).replace(" ", "")
    for sign in ("+", "-"):
        head, sep, tail = s.partition(sign)
        if sep and head in names and tail.lstrip("-").isdigit():
            return names[head] + (int(tail) if sign == "+" else -int(tail))
    if s in names:
        return names[s]
    try:
        return int(s)
    except ValueError:
        return 0


class Index:
    def __init__(self, ruleset):
        self.chains: dict[tuple, dict] = {}
        self.order: dict[tuple, int] = {}
        self.rules: dict[tuple, list] = {}
        self.sets: dict[tuple, dict] = {}
        for i, item in enumerate(_items(ruleset)):
            if not isinstance(item, dict):
                continue
            if "chain" in item:
                c = item["chain"]
                key = (c.get("family"), c.get("table"), c.get("name"))
                self.chains[key] = c
                self.order[key] = i
            elif "rule" in item:
                r = item["rule"]
                self.rules.setdefault((r.get("family"), r.get("table"), r.get("chain")), []).append(r)
            elif "set" in item or "map" in item:
                s = item.get("set") or item.get("map")
                self.sets[(s.get("family"), s.get("table"), s.get("name"))] = s

    def base_chains(self, family_hooks) -> list[dict]:
        wanted = {(f, h) for f, h in family_hooks}
        found = [(k, c) for k, c in self.chains.items() if c.get("hook") and (c.get("family"), c.get("hook")) in wanted]
        nat_first: dict[str, int] = {}
        for k, c in found:
            if c.get("type") == "nat" and c.get("family") != "bridge":
                nat_first[c["hook"]] = min(nat_first.get(c["hook"], 1 << 30), self.order[k])

        def key(kc):
            k, c = kc
            p, idx = prio(c), self.order[k]
            if c.get("type") == "nat" and c.get("family") != "bridge" and c.get("hook") in NAT_CORE_PRIORITY:
                return (NAT_CORE_PRIORITY[c["hook"]], nat_first[c["hook"]], p, idx)
            return (p, idx, p, idx)

        return [c for _, c in sorted(found, key=key)]


def base_chains(ruleset: dict, family_hooks: list[tuple[str, str]]) -> list[dict]:
    """The base chains attached to the given (family, hook) pairs, in the order the kernel runs
    them: by priority (numeric or named), nat chains at the NAT core's place (see module doc)."""
    return Index(ruleset).base_chains(family_hooks)
