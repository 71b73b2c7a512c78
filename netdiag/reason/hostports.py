"""One host port, two DNATs: pods whose hostPorts collide (CNI portmap writes each pod's DNAT at
its ADD and refuses nothing: the scheduler keeps two pods with one hostPort off a node, not the
plugin). The first DNAT the packet meets wins; the other pod never gets the port.

  * every trace that a DNAT rewrites notes the other DNAT rules the same packet matches (which
    pod wins, which ones are never reached): `hostport_conflict` evidence;
  * `netdiag trace SRC cni:POD --port HOSTPORT` (a CNI pod by a hostPort it publishes) traces
    the node's port, as a client of the pod would use it, and when the packet lands in another
    pod the cause is HOSTPORT_CONFLICT, the fix removing the winner's jump (so the port goes to
    the pod that was named) and saying what to change at the owner's level.
Pure: reads the model only.
"""
from __future__ import annotations

import ipaddress
import shlex

from ..rulesets.iptables_nft import ruleset_for
from . import fixes
from .fixes import Fix
from .stop import Stop
from .unhooked_dnat import dnat_matches, dnat_of, jump_target


def _pod_at(model, ip: str) -> dict | None:
    return next((c for c in model.containers() if any(n.get("ip") == ip for n in (c.get("networks") or {}).values())), None)


def note_rivals(trace, ns: dict, before, res) -> None:
    """After a DNAT of `before` to res.packet in `ns`: the other reachable DNAT rules for the same
    packet, as evidence (and on the trace, for the cause when a pod was named)."""
    items = ruleset_for(ns).get("nftables", [])
    rules = [i["rule"] for i in items if "rule" in i]
    jumped = {(r["family"], r["table"], jump_target(e)) for r in rules for e in r["expr"] if jump_target(e)}
    won = (res.packet.dst, res.packet.dport)
    rivals = []
    for r in rules:
        to = dnat_of(r)
        if to is None or (r["family"], r["table"], r["chain"]) not in jumped or not dnat_matches(r, before):
            continue
        dest = (str(to.get("addr", "")), int(to.get("port") or before.dport))
        if dest != won and dest not in [x[1] for x in rivals]:
            rivals.append((r, dest))
    if not rivals:
        return
    winner = _pod_at(trace.model, won[0])
    names = [(_pod_at(trace.model, d[0]) or {}).get("name") or f"{d[0]}:{d[1]}" for _, d in rivals]
    trace.note("hostport_conflict", f"{ns['label']}: {before.proto} port {before.dport} of {before.dst} is DNATed by "
               f"{len(rivals) + 1} rules: the first, to {won[0]}:{won[1]} ({(winner or {}).get('name', 'no known pod')}), "
               f"wins; never reached: " + ", ".join(f"to {d[0]}:{d[1]} ({n}) in {r['table']} {r['chain']}"
                                                    for (r, d), n in zip(rivals, names)))
    dnat = next((s for s in res.steps if s.verdict == "dnat"), None)
    # the rule that leads to the winner's DNAT chain (portmap's per-pod jump), not the hook's jump into the entry chain
    jump = next((s for s in res.steps if dnat is not None and s.verdict == f"jump {dnat.chain}" and s.iptables.startswith("-A ")), None)
    trace.hostport_conflict = {"ns": ns, "won": won, "winner": winner, "jump": jump, "rivals": names}


def target(model, src_ns: dict, dst: str, proto: str, port: int) -> tuple[str, dict] | None:
    """(the node's address, the pod) when DST names a CNI pod that publishes `port` as a hostPort
    and the source is not that pod: the port is meant through the node, as its clients reach it."""
    if proto not in ("tcp", "udp", "sctp") or not port or not dst.startswith("cni:") and not _is_pod_name(model, dst):
        return None
    try:
        pod = model.container(dst)
    except Exception:  # noqa: BLE001 - an ambiguous name is resolve()'s to report
        return None
    if not pod or pod.get("runtime") != "cni" or pod.get("ns") == src_ns["id"]:
        return None
    bind = next((p for p in pod.get("ports", []) if p["proto"] == proto and p["host_port"] == port), None)
    if bind is None:
        return None
    if bind.get("host_ip") not in ("", "0.0.0.0", None):
        return bind["host_ip"], pod
    host = model.host
    bridges = {n.get("bridge") for n in model.snap.get("networks") or []} | {
        link["name"] for link in host["links"] if link["kind"] == "bridge"}
    mine = [ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in src_ns["addresses"]]
    addrs = [a for a in host["addresses"] if a.get("scope", "global") == "global" and a["ifname"] not in bridges
             and not a["address"].startswith("127.") and a["prefixlen"] < 32]
    near = next((a for a in addrs if any(ipaddress.ip_address(a["address"]) in n for n in mine)), None)
    chosen = near or (addrs[0] if addrs else None)
    return (chosen["address"], pod) if chosen else None


def _is_pod_name(model, dst: str) -> bool:
    return any(dst in c.get("netns_names", ()) for c in model.containers() if c.get("runtime") == "cni")


def conflict_stop(trace, end_ns: dict, pod: dict, dst_ip: str) -> Stop:
    """HOSTPORT_CONFLICT: the node's port `trace.dport` took the packet to `end_ns`, not to `pod`."""
    seen = getattr(trace, "hostport_conflict", None) or {}
    where = seen.get("ns") or trace.model.host
    winner = (seen.get("winner") or {}).get("name") or end_ns["label"]
    summary = (f"Two pods publish {trace.proto} hostPort {trace.dport}, {pod['name']} and {winner}: {where['label']} DNATs "
               f"{dst_ip}:{trace.dport} to {winner} first ({seen['won'][0]}:{seen['won'][1]}), so {winner} gets the traffic "
               f"and {pod['name']}'s DNAT is never reached" if seen else
               f"{dst_ip}:{trace.dport} (hostPort of {pod['name']}) leads to {end_ns['label']}, not to {pod['name']}")
    owner = (f"two pods claim hostPort {trace.dport}/{trace.proto} on this node; Kubernetes' scheduler never places two such "
             "pods on one node, so one was made outside it (a static pod, another runtime) or its rules outlived it: give one "
             "of them another hostPort in its pod spec")
    jump = seen.get("jump")
    evidence = [{"kind": "hostport_conflict", "detail": f"{pod['name']} expects {dst_ip}:{trace.dport}; {winner} has it"}]
    if jump is None:
        return Stop("blocked", "HOSTPORT_CONFLICT", summary,
                    Fix(advice=owner + " (manual: the rule that sends the port to the winner is not an iptables rule "
                        "netdiag can name, so no command is given)", why_unchecked="no rule to remove"), evidence)
    cmd = fixes.in_ns(where, ["iptables", "-t", jump.table, "-D", *shlex.split(jump.iptables)[1:]])
    return Stop("blocked", "HOSTPORT_CONFLICT", summary,
                Fix(cmd, fixes.remove_rule(where["id"], jump.family, jump.table, jump.chain, jump.handle),
                    advice=f"hands the port to {pod['name']} now by removing {winner}'s jump to its DNAT ({winner} keeps "
                    f"running, without the port; its CNI CHECK then fails); to settle it, {owner}"), evidence)


def shared_ports(model, c: dict) -> list[str]:
    """Findings for `inspect --net`: each host port `c` publishes that another container or pod
    publishes too, and which of them the host's DNAT sends it to (a packet from outside evaluated
    at the host's prerouting hook: the rules decide, not the order anyone asked)."""
    from . import routing
    from .nftables import Packet, evaluate

    out = []
    host = model.host
    uplink = next((r.get("dev") for r in host["routes"] if r.get("table") == 254 and r.get("dst") in ("default", "0.0.0.0/0")), None)
    addr = next((a["address"] for a in host["addresses"] if a["ifname"] == uplink), None)
    for p in c.get("ports", []):
        others = [o for o in model.containers() if o is not c and o.get("id") != c.get("id") and any(
            q["proto"] == p["proto"] and q["host_port"] == p["host_port"] for q in o.get("ports", []))]
        if not others or addr is None:
            continue
        pkt = Packet(src="192.0.2.1", dst=addr, proto=p["proto"], sport=40000, dport=p["host_port"], iif=uplink)
        res = evaluate(ruleset_for(host), "prerouting", pkt, chain_type=None, local_addrs=routing.local_addresses(host))
        winner = _pod_at(model, res.packet.dst) if "dnat" in res.packet.ct_status else None
        who = winner["name"] if winner else "none of them"
        out.append(f"host port {p['host_port']}/{p['proto']} is published by {', '.join(o['name'] for o in others)} too; "
                   f"the host's DNAT sends it to {who}" + ("" if winner is c or (winner or {}).get("id") == c.get("id")
                                                           else f": {c['name']} does not get it"))
    return out
