"""Other managers' firewalls next to netdiag's: Docker's DOCKER-USER chain, and forward drop
policies of tables netdiag does not own.

On a host where Docker runs, Docker sets `ip filter FORWARD` to policy drop and loads
br_netfilter, so the bridged and routed frames of every bridge that is not Docker's are dropped
unless something accepts them in DOCKER-USER, Docker's documented place for other people's rules.
netdiag keeps two rules per bridge there, `-i BR -j ACCEPT` and `-o BR -j ACCEPT`, tagged with the
comment `netdiag:BR`. They only take Docker's policy out of the way: what netdiag allows or drops
(isolation, internal, unpublished ports, icc) stays in netdiag's own tables, which run as base
chains of their own and drop what they must whatever Docker accepted.

The rules are written with iptables itself (iptables-nft, the backend Docker uses on Debian),
never by nft into Docker's table: a native nft rule in an iptables-nft table makes iptables
refuse that table, and Docker with it. Where no DOCKER-USER chain exists but another table drops
forwarded packets by policy, netdiag does not edit that table: it says which command would fix it.
"""
from __future__ import annotations

import json
import re

from ..kernel import nft, tools
from ..errors import KernelError

TAG = "netdiag:"
CHAIN = "DOCKER-USER"
OWN_TABLE = "netdiag"
_IFNAME = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


def _json(cmd: str) -> list:
    try:
        out = nft.run(cmd, json_out=True)
    except KernelError:
        return []
    return json.loads(out or '{"nftables": []}').get("nftables", [])


def _iptables() -> str | None:
    return tools.find("iptables-nft", "iptables")


def forward_base_chains() -> list[dict]:
    """Base chains on the forward hook of tables netdiag does not own (ip, inet, bridge families)."""
    return [i["chain"] for i in _json("list chains") if "chain" in i and i["chain"].get("hook") == "forward"
            and i["chain"].get("table") != OWN_TABLE and i["chain"].get("family") in ("ip", "inet", "bridge")]


def docker_user_present() -> bool:
    return any(i["chain"]["name"] == CHAIN for i in _json("list chains ip") if "chain" in i and i["chain"]["table"] == "filter")


def _rule_ifname(rule: dict) -> tuple[str, str] | None:
    """('in'|'out', name) for a rule whose only match is iifname/oifname == NAME and whose verdict is
    accept (counters and an opaque comment aside): the shape of netdiag's DOCKER-USER rules."""
    found, verdict = None, None
    for e in rule.get("expr", []):
        if "match" in e:
            m = e["match"]
            key = (m.get("left") or {}).get("meta", {}).get("key")
            if found or m.get("op") != "==" or key not in ("iifname", "oifname") or not isinstance(m.get("right"), str):
                return None
            found = ("in" if key == "iifname" else "out", m["right"])
        elif "accept" in e:
            verdict = "accept"
        elif not ({"counter", "xt"} & set(e)):
            return None
    return found if verdict == "accept" else None


def _docker_user_rules() -> set[tuple[str, str]]:
    return {shape for i in _json(f"list chain ip filter {CHAIN}") if "rule" in i
            for shape in [_rule_ifname(i["rule"])] if shape}


def _tagged() -> set[tuple[str, str]]:
    """Our rules in DOCKER-USER, read with iptables (its comments are opaque to nft's JSON)."""
    ipt = _iptables()
    if ipt is None:
        return set()
    p = tools.run([ipt, "-w", "5", "-S", CHAIN])
    out = set()
    for line in p.stdout.splitlines():
        m = re.fullmatch(r'-A DOCKER-USER -([io]) (\S+) -m comment --comment "?netdiag:(\S+?)"? -j ACCEPT', line.strip())
        if m and m.group(2) == m.group(3):
            out.add(("in" if m.group(1) == "i" else "out", m.group(2)))
    return out


def _iptables_change(op: str, direction: str, bridge: str) -> None:
    if not _IFNAME.fullmatch(bridge):
        raise ValueError(f"not an interface name: {bridge!r}")
    ipt = _iptables()
    if ipt is None:
        raise KernelError("Cannot change Docker's DOCKER-USER chain", "no iptables command is installed",
                          "install iptables (apt-get install iptables; scripts/setup does this)")
    argv = [ipt, "-w", "5", op, CHAIN, "-i" if direction == "in" else "-o", bridge,
            "-m", "comment", "--comment", TAG + bridge, "-j", "ACCEPT"]
    p = tools.run(argv)
    if p.returncode != 0 and op == "-I":
        raise KernelError(f"Cannot add netdiag's accept rule for {bridge} to Docker's {CHAIN} chain",
                          p.stderr.strip() or f"{ipt} exited {p.returncode}",
                          f"add it by hand: iptables -I {CHAIN} {'-i' if direction == 'in' else '-o'} {bridge} -j ACCEPT")


def sync(bridges: list[str], existing_links: set[str]) -> list[str]:
    """Make DOCKER-USER hold exactly netdiag's two accept rules per bridge (when the chain exists).
    Cheap when nothing changed: one nft listing. Returns notes for the user (what changed, why)."""
    if not docker_user_present():
        return []
    want = {(d, b) for b in bridges for d in ("in", "out")}
    if want <= _docker_user_rules() and not (_docker_user_rules() - want) & _maybe_ours(existing_links, bridges):
        return []
    have = _tagged()
    added = sorted(want - have)
    # a tagged rule for a bridge that is neither ours nor present any more is stale (its network is
    # gone); one for a bridge that exists may belong to another netdiag state root: leave it
    stale = {(d, b) for d, b in have - want if b not in existing_links}
    for d, b in sorted(stale):
        _iptables_change("-D", d, b)
    for d, b in reversed(added):  # -I puts each at the top
        _iptables_change("-I", d, b)
    if not added:
        return []
    names = ", ".join(sorted({b for _, b in added}))
    return [f"Docker's firewall drops forwarded traffic of bridges it does not manage (ip filter FORWARD policy drop); "
            f"netdiag accepted its bridge(s) {names} in Docker's {CHAIN} chain (rules tagged '{TAG}BRIDGE', removed with "
            "the network). netdiag's own rules still isolate its networks"]


def _maybe_ours(existing_links: set[str], bridges: list[str]) -> set[tuple[str, str]]:
    """Shapes in DOCKER-USER that could be stale netdiag rules: for bridges that are gone."""
    return {(d, b) for d, b in _docker_user_rules() if b not in existing_links and b not in bridges}


def blocking_policies(bridge: str) -> list[dict]:
    """Forward base chains of other tables that drop this bridge's traffic by policy (or by a final
    catch-all drop/reject) and have no accept for it, when no DOCKER-USER rule of ours covers it."""
    if docker_user_present():
        return []
    out = []
    for c in forward_base_chains():
        rules = [i["rule"] for i in _json(f"list chain {c['family']} {c['table']} {c['name']}") if "rule" in i]
        accepts = {_rule_ifname(r) for r in rules} & {("in", bridge), ("out", bridge)}
        catch_all = _final_catch_all(rules)
        if (c.get("policy") == "drop" or catch_all) and len(accepts) < 2:
            out.append({"table": f"{c['family']} {c['table']}", "chain": c["name"],
                        "what": "policy drop" if c.get("policy") == "drop" else "a final catch-all drop/reject rule",
                        "fix": fix_commands(c["family"], c["table"], c["name"], bridge)})
    return out


def firewalld_running() -> bool:
    """A firewalld in this network namespace: it owns `inet firewalld` and rewrites it on reload."""
    import os

    here = os.stat("/proc/self/ns/net").st_ino
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and open(f"/proc/{entry.name}/comm").read().strip() == "firewalld" \
                    and os.stat(f"/proc/{entry.name}/ns/net").st_ino == here:
                return True
        except OSError:
            continue
    return False


def _final_catch_all(rules: list[dict]) -> str:
    """"drop" or "reject" when the chain's last rule drops or rejects everything (firewalld's
    forward chain ends so), else ""."""
    if not rules or any("match" in e for e in rules[-1].get("expr", [])):
        return ""
    return next((k for e in rules[-1].get("expr", []) for k in ("drop", "reject") if k in e), "")


def fix_commands(family: str, table: str, chain: str, bridge: str) -> str:
    """The exact commands that let `bridge`'s traffic through `chain` (iptables for iptables' tables,
    firewall-cmd for firewalld's: a rule inserted there by hand is gone at its next reload; its
    trusted zone accepts what enters on the bridge, the way Docker's own `docker` zone does)."""
    if (family, table) == ("inet", "firewalld") and firewalld_running():
        return f"firewall-cmd --zone=trusted --change-interface={bridge}"
    if family == "ip" and table == "filter" and chain == CHAIN:
        return f"iptables -I {CHAIN} -i {bridge} -j ACCEPT; iptables -I {CHAIN} -o {bridge} -j ACCEPT"
    if family == "ip" and table == "filter" and chain.isupper():
        return f"iptables -I {chain} -i {bridge} -j ACCEPT; iptables -I {chain} -o {bridge} -j ACCEPT"
    return (f"nft insert rule {family} {table} {chain} iifname \"{bridge}\" accept; "
            f"nft insert rule {family} {table} {chain} oifname \"{bridge}\" accept")


def affecting(bridge: str) -> list[dict]:
    """For `network inspect`: rules of other managers that decide this bridge's forwarded traffic."""
    out = []
    for d, b in sorted(_docker_user_rules()):
        if b == bridge:
            out.append({"table": "ip filter", "chain": CHAIN, "rule": f"{'-i' if d == 'in' else '-o'} {b} -j ACCEPT",
                        "effect": "accepts this bridge's traffic past Docker's FORWARD policy (added by netdiag)"})
    for c in forward_base_chains():
        if c.get("policy") == "drop":
            out.append({"table": f"{c['family']} {c['table']}", "chain": c["name"], "rule": "policy drop",
                        "effect": "drops forwarded packets nothing accepted"})
        items = _json(f"list chain {c['family']} {c['table']} {c['name']}")
        final = _final_catch_all([i["rule"] for i in items if "rule" in i])
        if final:
            out.append({"table": f"{c['family']} {c['table']}", "chain": c["name"], "rule": final,
                        "effect": f"a final catch-all {final}: {final}s forwarded packets nothing accepted before it"})
        for i in items:
            r = i.get("rule")
            if r and any(e.get("match", {}).get("right") == bridge for e in r.get("expr", [])):
                verdict = next((k for e in r["expr"] for k in ("accept", "drop", "reject", "jump", "goto") if k in e), "")
                out.append({"table": f"{c['family']} {c['table']}", "chain": c["name"], "handle": r.get("handle"),
                            "rule": verdict, "effect": f"a rule of that table that names {bridge}"})
    return out
