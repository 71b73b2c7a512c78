"""A published port whose DNAT chain nothing jumps to any more: a CNI `portmap` hostport after someone
flushed its entry chain (`iptables -t nat -F CNI-HOSTPORT-DNAT`), or any runtime's per-container DNAT
chain left unhooked. The request then reaches the host's own socket layer and is refused there, which
reads like a missing server; the rules say otherwise. The cause is taken from what the rules are (a
DNAT for this flow in a chain no rule references), never from chain names."""
from __future__ import annotations

import ipaddress

from ..rulesets.iptables_nft import ruleset_for
from . import fixes
from .fixes import Fix
from .nftables import Packet
from .stop import Stop


def unhooked_dnat_stop(ns: dict, pkt: Packet) -> Stop | None:
    """PORT_NOT_PUBLISHED when `ns` has a DNAT rule for `pkt` in a regular chain no rule jumps to;
    the fix jumps to it again from the chain its siblings hang off (the one regular chain the NAT
    prerouting hook jumps to whose rules only lead to DNAT chains: portmap's entry chain)."""
    items = ruleset_for(ns).get("nftables", [])
    chains = [i["chain"] for i in items if "chain" in i]
    rules = [i["rule"] for i in items if "rule" in i]
    jumped = {(r["family"], r["table"], jump_target(e)) for r in rules for e in r["expr"] if jump_target(e)}
    for chain in chains:
        key = (chain["family"], chain["table"], chain["name"])
        if chain.get("hook") or key in jumped:
            continue
        own = [r for r in rules if (r["family"], r["table"], r["chain"]) == key]
        dnat = next((r for r in own if dnat_of(r) and dnat_matches(r, pkt)), None)
        if dnat is None:
            continue
        to = dnat_of(dnat)
        dest = f"{to.get('addr', '')}" + (f":{to['port']}" if to.get("port") else "")
        ports = sorted({p for r in own if dnat_of(r) for p in _dports(r, pkt.proto)})
        entry = _entry_chain(chains, rules, chain)
        summary = (f"{ns['label']} has a DNAT of {pkt.proto} port {pkt.dport} to {dest} in chain {chain['table']} {chain['name']}, "
                   "but no rule jumps to that chain any more (its entry rule was removed, e.g. by a flush), so the port is "
                   f"not forwarded and the host itself refuses it")
        evidence = [{"kind": "rule", "detail": f"{chain['family']} {chain['table']} {chain['name']}: {pkt.proto} dport {pkt.dport} "
                     f"dnat to {dest}; referenced by no rule"}]
        if entry is None:
            return Stop("blocked", "PORT_NOT_PUBLISHED", summary,
                        Fix(advice=f"add a rule that jumps to {chain['name']} for {pkt.proto} port {pkt.dport} from the chain its "
                            "runtime hooks its published ports on (manual: no single such chain is visible, so no command is given)",
                            why_unchecked="the chain the runtime hooks its published ports on is not known"), evidence)
        argv = ["iptables", "-t", chain["table"], "-I", entry["name"], "-p", pkt.proto, "-m", "multiport",
                "--dports", ",".join(map(str, ports or [pkt.dport])), "-j", chain["name"]]
        match = {"op": "==", "left": {"payload": {"protocol": pkt.proto, "field": "dport"}},
                 "right": ports[0] if len(ports) == 1 else {"set": ports}}
        return Stop("blocked", "PORT_NOT_PUBLISHED", summary,
                    Fix(fixes.in_ns(ns, argv),
                        fixes.insert_rules(ns["id"], chain["family"], chain["table"], entry["name"],
                                           [[{"match": match}, {"jump": {"target": chain["name"]}}]]),
                        advice=f"the jump from {entry['name']} to {chain['name']} that the port's owner (CNI portmap writes "
                        "it at the pod's ADD) put there; re-creating the pod writes it again too"),
                    evidence)
    return None


def jump_target(expr) -> str | None:
    if isinstance(expr, dict):
        for verb in ("jump", "goto"):
            if isinstance(expr.get(verb), dict):
                return expr[verb].get("target")
    return None


def dnat_of(rule: dict) -> dict | None:
    return next((e["dnat"] for e in rule["expr"] if isinstance(e, dict) and isinstance(e.get("dnat"), dict)), None)


def _dports(rule: dict, proto: str) -> list[int]:
    out = []
    for e in rule["expr"]:
        m = e.get("match") if isinstance(e, dict) else None
        if m and m["left"] == {"payload": {"protocol": proto, "field": "dport"}} and m.get("op") in ("==", "in"):
            right = m["right"]
            out += [right] if isinstance(right, int) else [x for x in (right.get("set") or []) if isinstance(x, int)] \
                if isinstance(right, dict) else []
    return out


def dnat_matches(rule: dict, pkt: Packet) -> bool:
    """Every match of the DNAT rule is one this packet meets: its protocol's destination port, and
    where given its destination address. A match of any other kind: not claimed (False)."""
    saw_port = False
    for e in rule["expr"]:
        m = e.get("match") if isinstance(e, dict) else None
        if m is None:
            continue
        left = (m.get("left") or {}).get("payload") or {}
        if left.get("field") == "dport":
            if left.get("protocol") != pkt.proto or pkt.dport not in _dports(rule, pkt.proto):
                return False
            saw_port = True
        elif left == {"protocol": "ip", "field": "daddr"} and m.get("op") == "==":
            right = m["right"]
            net = f"{right['prefix']['addr']}/{right['prefix']['len']}" if isinstance(right, dict) and "prefix" in right else right
            if not isinstance(net, str) or ipaddress.ip_address(pkt.dst) not in ipaddress.ip_network(net, strict=False):
                return False
        else:
            return False
    return saw_port


def _entry_chain(chains: list[dict], rules: list[dict], orphan: dict) -> dict | None:
    """The one regular chain that the orphan's table's NAT prerouting base chain jumps to and whose
    rules (none, after a flush) all jump to chains that DNAT: where the orphan hung before."""
    family, table = orphan["family"], orphan["table"]
    base = {c["name"] for c in chains if (c["family"], c["table"]) == (family, table) and c.get("hook") == "prerouting"}
    from_base = {jump_target(e) for r in rules if (r["family"], r["table"]) == (family, table) and r["chain"] in base
                 for e in r["expr"] if jump_target(e)}
    dnat_chains = {r["chain"] for r in rules if (r["family"], r["table"]) == (family, table) and dnat_of(r)}
    found = [c for c in chains if (c["family"], c["table"]) == (family, table) and c["name"] in from_base and not c.get("hook")
             and all(jump_target(e) in dnat_chains for r in rules if (r["family"], r["table"], r["chain"]) == (family, table, c["name"])
                     for e in r["expr"] if jump_target(e) or dnat_of(r))]
    return found[0] if len(found) == 1 else None
