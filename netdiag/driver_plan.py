"""What an owner-level fix does to the kernel, planned by the owner's own driver: a network
re-created with icc on installs the rules its driver plans for icc on (netdiag's renderer,
runtime/networks/firewall.py; Docker's libnetwork setIcc), so the model check and a replica see
that change, not "the rule that matched, removed by hand". The reasoning layer names the change
(Fix.owner_change); this module, outside it because it reads the runtime's driver, resolves it.
"""
from __future__ import annotations

from .reason import fixes
from .reason.nftables.text import rule_text


def resolve(model, fix: fixes.Fix) -> None:
    """Fill `fix.apply` and `fix.kernel` from `fix.owner_change` (left unchecked, saying why, when
    the driver's plan cannot be made)."""
    kind, ns_id, net = fix.owner_change
    if kind != "icc_on":
        return
    try:
        fix.apply, fix.kernel = icc_on(model.namespaces[ns_id], net)
    except (ValueError, KeyError) as e:
        fix.why_unchecked = f"the driver's rules for icc on could not be planned on the model ({e})"


def _plain(text: str) -> str:
    """A rule line without its comment and quotes: how the driver's script and the model's JSON compare."""
    return text.split(' comment "', 1)[0].replace('"', "").strip()


def netdiag_plan(net: dict, icc: bool) -> dict[tuple[str, str, str], list[str]]:
    """The rules netdiag's bridge driver installs for `net` (a model network) with icc on or off:
    {(family, table, chain): [rule lines]}, from the driver's own renderer."""
    from runtime.networks import firewall

    spec = firewall.NetSpec(id=net["id"], bridge=net["bridge"], subnet=net["subnet"], gateway=net["gateway"],
                            internal=bool(net.get("internal")), icc=icc,
                            masquerade=str((net.get("options") or {}).get("com.docker.network.bridge.enable_ip_masquerade",
                                                                          "true")).lower() in ("true", "1", "yes"),
                            ports=tuple(sorted(e["host_veth"] for e in (net.get("endpoints") or {}).values() if e.get("host_veth"))))
    out: dict[tuple[str, str, str], list[str]] = {}
    family = table = chain = None
    for line in firewall.render([spec], []).splitlines():
        words = line.split()
        if line.startswith("table ") and line.endswith("{"):
            family, table = words[1], words[2]
        elif line.startswith("\tchain "):
            chain = words[1]
        elif line.startswith("\t\t") and chain and not words[0] in ("type", "elements", "}"):
            out.setdefault((family, table, chain), []).append(_plain(line))
        elif line == "\t}":
            chain = None
    return out


def _docker_icc_rule(rule: dict, bridge: str) -> bool:
    """Docker's icc rule for a bridge (libnetwork setIcc: `-i BR -o BR -j DROP`, or ACCEPT with icc on)."""
    expr = [e for e in rule.get("expr") or [] if "counter" not in e]
    ifs = {(e["match"]["left"].get("meta") or {}).get("key"): e["match"].get("right") for e in expr
           if "match" in e and e["match"].get("op") == "==" and isinstance(e["match"].get("left"), dict)}
    return len(expr) == 3 and ifs == {"iifname": bridge, "oifname": bridge} and "drop" in expr[-1]


def icc_on(host: dict, net: dict) -> tuple[fixes.Apply, str]:
    """What re-creating `net` with icc on does to the host's rules, by its driver's own planning:
    (the change on a model copy, the same change as kernel commands in the host namespace).
    netdiag's driver: the rules it plans for icc off and not for icc on go (its renderer says
    which); Docker's (libnetwork setIcc): the `-i BR -o BR -j DROP` becomes `-j ACCEPT`. `host`:
    the namespace whose rules the driver writes (the one the drop was found in)."""
    items = (host.get("nftables") or {}).get("nftables") or []
    if host.get("iptables_save"):
        from .reason.iptables import ruleset_for

        items = ruleset_for(host).get("nftables") or []

    if net.get("runtime") == "netdiag":
        off, on = netdiag_plan(net, False), netdiag_plan(net, True)
        gone = {k: set(v) - set(on.get(k, [])) for k, v in off.items()}
        added = {k: set(v) - set(off.get(k, [])) for k, v in on.items()}
        if any(added.values()):  # netdiag's icc-on plan adds nothing today; say so if it ever does
            raise ValueError("the driver's icc-on plan adds rules the model check cannot write")
        victims = [i["rule"] for i in items if "rule" in i and _plain(rule_text(i["rule"])) in
                   gone.get((i["rule"]["family"], i["rule"]["table"], i["rule"]["chain"]), set())]
        kernel = [["nft", "delete", "rule", r["family"], r["table"], r["chain"], "handle", str(r["handle"])] for r in victims]
        replace = set()
    else:
        victims = [i["rule"] for i in items if "rule" in i and i["rule"]["family"] == "ip" and i["rule"]["table"] == "filter"
                   and _docker_icc_rule(i["rule"], net["bridge"])]
        kernel = [["nft", "replace", "rule", "ip", "filter", r["chain"], "handle", str(r["handle"]), "iifname", net["bridge"],
                   "oifname", net["bridge"], "counter", "accept"] for r in victims]
        replace = {(r["chain"], r["handle"]) for r in victims}
    keys = {(r["family"], r["table"], r["chain"], r.get("handle")) for r in victims}

    def apply(model, ov):
        rules = fixes.editable_rules(ov.edit(host["id"]))
        kept = []
        for i in rules:
            r = i.get("rule")
            if r is None or (r["family"], r["table"], r["chain"], r.get("handle")) not in keys:
                kept.append(i)
            elif (r["chain"], r.get("handle")) in replace:
                kept.append({"rule": {**r, "expr": [e for e in r["expr"] if "drop" not in e] + [{"accept": None}]}})
        rules[:] = kept
    return apply, " && ".join(fixes.in_ns(host, a) for a in kernel)
