"""Docker's iptables-nft rules, exactly: the parts nft's JSON hides, translated from the
iptables-nft-save text observed with them (netdiag.observe.iptables reads it), chain by chain.

iptables-nft stores what it cannot express in native nftables as `xt` blobs (the conntrack,
addrtype, comment and multiport matches; the DNAT/SNAT/REJECT/REDIRECT/MASQUERADE targets), and
`nft -j` shows only their names. iptables-nft-save prints every rule with its arguments. So:

  observe  `save_text(ruleset, errors, ns_id)`: when the namespace's ruleset (already read) has
           xt expressions in ip/ip6 tables, run iptables-nft-save (ip6tables-nft-save for ip6)
           in the namespace; the raw text goes into the snapshot entry as `iptables_save`
           ({"ip": TEXT, "ip6": TEXT}, only the families read).
  read     `ruleset_for(ns)` (here; the parsing is iptables_save, one rule's xt parts
           xt_translate): the nft JSON with the xt expressions replaced by the native nft
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

from .iptables_save import TOOLS, Module, Rule, parse
from .xt_translate import XT_ALIASES, port_number, proto_name, protocol, translate_match, translate_target

# ---------------------------------------------------------------------------------------------
# pairing iptables rules with nft rules

_VERDICTS = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return"}
# nft statements iptables-nft writes natively for some targets (a newer iptables, or no options)
_NATIVE_TARGETS = {"reject": ("REJECT",), "masquerade": ("MASQUERADE",), "dnat": ("DNAT",), "snat": ("SNAT",),
                   "redirect": ("REDIRECT",), "log": ("LOG", "NFLOG"), "queue": ("NFQUEUE",), "notrack": ("NOTRACK", "CT"),
                   "mangle": ("MARK", "CONNMARK", "DSCP", "TOS", "TTL", "HL", "TCPMSS")}


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
                    f["-p"] = (op, proto_name(right) if isinstance(right, (str, int)) else "?")
            elif isinstance(left, dict) and "&" in left and isinstance(left["&"], list) and left["&"] \
                    and isinstance(left["&"][0], dict) and "payload" in left["&"][0]:
                proto = left["&"][0]["payload"].get("protocol")  # tcp flags & mask == x: implies the protocol
                if proto not in ("ip", "ip6", "th", None):
                    f["l4"].add(proto_name(proto))
            elif isinstance(left, dict) and "payload" in left:
                proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
                if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
                    f["-s" if fld == "saddr" else "-d"] = (op, _net(right))
                elif proto in ("ip", "ip6") and fld in ("protocol", "nexthdr"):
                    f["-p"] = (op, proto_name(right) if isinstance(right, (str, int)) else "?")
                elif proto not in ("ip", "ip6", "th", None):
                    f["l4"].add(proto_name(proto))
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
        return t in XT_ALIASES.get(arg, (arg,)) and not rule.goto
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
        names = XT_ALIASES.get(name, (name,))
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
    proto = protocol(rule)
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
                    ports[fld] = ("!=" if o.neg else "==", (port_number(lo), port_number(hi or lo)))
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
