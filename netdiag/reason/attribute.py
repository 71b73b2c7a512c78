"""What a dropping firewall rule means for this packet.

The cause is chosen from what the rule IS (which interfaces, addresses and ports it matches, or a
chain's policy) and what the networks ARE (their bridges and ports, their icc and internal
settings, which table governs them), never from a chain's name or a rule's comment:
  ICC_DISABLED       an interface-only rule drops traffic within one network whose icc is off;
  NETWORK_ISOLATION  an interface-only rule drops traffic between two different networks;
  INTERNAL_NETWORK   an interface-only rule drops traffic entering or leaving an internal network;
  PORT_NOT_PUBLISHED traffic from outside a network to a container address, not DNATed, dropped by
                     a rule on that network's bridge or by the policy of the table governing it;
  FOREIGN_FIREWALL   a policy (or catch-all) drop of a table that governs other networks' bridges
                     but not this packet's network (Docker's FORWARD policy and a netdiag network), or
                     the catch-all reject of a running firewalld's table for what enters on a bridge in
                     no firewalld zone (netdiag/reason/firewalld.py: fixed with firewall-cmd);
  FIREWALL_DROP      a policy drop that a pod's CNI firewall plugin accept would have passed, were it
                     there (netdiag/reason/cni_plugins.py: its own rules written back); anything
                     else: the rule is named, with the command that removes it.
Pure: reads the model only.
"""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import replace

from ..rulesets.iptables_nft import ruleset_for
from . import cni_plugins, firewalld, fixes
from .fixes import Fix, owner_cli
from .stop import Stop

_IFACE_KEYS = {"iifname", "oifname", "iif", "oif"}
_NEUTRAL = {"counter", "comment", "log", "accept", "drop", "reject", "jump", "goto", "return", "continue"}


def _items(ns: dict) -> list:
    """The namespace's rules as netdiag reasons over them (iptables-nft's xt parts translated)."""
    return ruleset_for(ns).get("nftables", [])


def find_rule(ns: dict, family: str, table: str, chain: str, handle) -> dict | None:
    if handle is None:
        return None
    for item in _items(ns):
        r = item.get("rule")
        if r and (r["family"], r["table"], r["chain"], r.get("handle")) == (family, table, chain, handle):
            return r
    return None


def _set_elements(ns: dict, family: str, table: str, name: str) -> set[str]:
    for item in _items(ns):
        s = item.get("set")
        if s and (s.get("family"), s.get("table"), s.get("name")) == (family, table, name):
            return {e for e in s.get("elem") or [] if isinstance(e, str)}
    return set()


def _names(ns: dict, rule: dict, right) -> set[str]:
    if isinstance(right, str):
        return _set_elements(ns, rule["family"], rule["table"], right[1:]) if right.startswith("@") else {right}
    if isinstance(right, dict) and "set" in right:
        return {x for x in right["set"] if isinstance(x, str)}
    return set()


def interface_names(ns: dict, rule: dict) -> set[str]:
    """Every interface name the rule's iifname/oifname matches mention (sets expanded)."""
    out: set[str] = set()
    for e in rule.get("expr", []):
        m = e.get("match")
        if m and (m.get("left") or {}).get("meta", {}).get("key") in _IFACE_KEYS:
            out |= _names(ns, rule, m.get("right"))
    return out


def interfaces_only(rule: dict) -> bool:
    """True when the rule decides on interfaces alone (no address, port or state): the shape of
    isolation and icc rules, whoever wrote them. An xt match netdiag could not read is not."""
    for e in rule.get("expr", []):
        key = next(iter(e), "")
        if key == "match":
            if (e["match"].get("left") or {}).get("meta", {}).get("key") not in _IFACE_KEYS:
                return False
        elif key == "xt":
            if e["xt"].get("name") != "comment":
                return False
        elif key not in _NEUTRAL:
            return False
    return any("match" in e for e in rule.get("expr", []))


def _fences(rule: dict | None, net: dict | None) -> bool:
    """True when the rule decides on interfaces and on addresses outside one network's subnet only
    (`-i BR ! -d SUBNET -j DROP`, `-o BR ! -s SUBNET -j DROP`): the shape of a fence around that
    network, the way Docker keeps an internal network's traffic in, whoever wrote it."""
    if rule is None or net is None or not net.get("subnet"):
        return False
    try:
        subnet = ipaddress.ip_network(net["subnet"], strict=False)
    except ValueError:
        return False
    fenced = False
    for e in rule.get("expr", []):
        key = next(iter(e), "")
        if key == "match":
            m = e["match"]
            left, right = m.get("left") or {}, m.get("right")
            if (left.get("meta") or {}).get("key") in _IFACE_KEYS:
                continue
            field = (left.get("payload") or {}).get("field")
            prefix = right.get("prefix") if isinstance(right, dict) else None
            if m.get("op") == "!=" and field in ("saddr", "daddr") and prefix and \
                    ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}", strict=False) == subnet:
                fenced = True
                continue
            return False
        if key == "xt" and e["xt"].get("name") == "comment":
            continue
        if key not in _NEUTRAL:
            return False
    return fenced


def _catch_all(rule: dict | None) -> bool:
    return rule is not None and not any("match" in e or "xt" in e for e in rule.get("expr", []))


class Networks:
    """The networks of the host namespace, by bridge and by bridge port."""

    def __init__(self, model, ns: dict):
        self.by_bridge = {n["bridge"]: n for n in model.snap.get("networks") or [] if n.get("bridge")} \
            if ns["id"] == model.snap.get("host") else {}
        self.master = {link["name"]: link.get("master") for link in ns["links"]}

    def of(self, ifname: str | None) -> dict | None:
        if not ifname:
            return None
        return self.by_bridge.get(ifname) or self.by_bridge.get(self.master.get(ifname) or "")

    def mentioned(self, names: set[str]) -> list[dict]:
        return [n for n in self.by_bridge.values() if n["bridge"] in names or any(self.master.get(x) == n["bridge"] for x in names)]

    def governed_by(self, ns: dict, family: str, table: str) -> list[dict]:
        """Networks whose bridges the table's rules name: the networks that table governs."""
        names: set[str] = set()
        for item in _items(ns):
            r = item.get("rule")
            if r and (r["family"], r["table"]) == (family, table):
                names |= interface_names(ns, r)
        return self.mentioned(names)


def icc_enabled(net: dict) -> bool:
    return str((net.get("options") or {}).get("com.docker.network.bridge.enable_icc", "true")).lower() in ("true", "1", "yes")


def _in_subnet(ip: str, net: dict) -> bool:
    try:
        return bool(net.get("subnet")) and ipaddress.ip_address(ip) in ipaddress.ip_network(net["subnet"], strict=False)
    except ValueError:
        return False


def _cli(net: dict) -> str:
    return owner_cli(net.get("runtime"))


def explain_drop(model, ns: dict, hook: str, pkt, step, src_ns: dict | None = None) -> Stop:
    """The Stop for `step` (a rule or a chain policy that dropped `pkt` at `hook` in `ns`)."""
    where = f"{step.family} {step.table} {step.chain}" + (f" (handle {step.handle})" if step.handle else "")
    rule = find_rule(ns, step.family, step.table, step.chain, step.handle)
    shown = (rule or {}).get("iptables") or step.text + (f' comment "{step.comment}"' if step.comment and step.comment not in step.text else "")
    ev = [{"kind": "nft_rule", "detail": f"{ns['label']}: {where}: {shown}", "table": f"{step.family} {step.table}",
           "chain": step.chain, "handle": step.handle, "rule": step.text, "namespace": ns["id"]}]
    nets = Networks(model, ns)
    in_net, out_net = nets.of(pkt.iif), nets.of(pkt.oif)
    policy = step.verdict.startswith("policy") or _catch_all(rule)
    iface_rule = rule is not None and interfaces_only(rule)
    named = {n["name"] for n in nets.mentioned(interface_names(ns, rule))} if rule else set()
    src = (src_ns or {}).get("name") or (src_ns or {}).get("label", "")
    src_ctr = src_ns if (src_ns or {}).get("kind") == "container" else None

    if (cni := cni_plugins.firewall_stop(model, ns, hook, pkt, step, where, ev, policy)) is not None:
        return cni  # a pod's accept that its CNI firewall plugin wrote is gone
    if iface_rule and in_net is not None and in_net is out_net and in_net["name"] in named and not icc_enabled(in_net):
        return Stop("blocked", "ICC_DISABLED",
                    f"containers on network {in_net['name']} may not talk to each other (enable_icc=false): {where} drops {pkt.src} -> {pkt.dst}",
                    Fix(_recreate_network(model, in_net),
                        advice=f"recreate {in_net['name']} without -o com.docker.network.bridge.enable_icc=false and reconnect its containers",
                        why_unchecked="the network's rules with icc on are its driver's plan, which the diagnosis pipeline makes",
                        owner_change=("icc_on", ns["id"], in_net),
                        alternatives=[f"reach {pkt.dst} through a port it publishes on the host"]), ev)
    for net, leaving in ((in_net, True), (out_net, False)):
        if (iface_rule or _fences(rule, net)) and net is not None and net.get("internal") and in_net is not out_net \
                and net["name"] in named:
            way = "leave" if leaving else "enter"
            who = src_ctr["name"] if src_ctr and leaving else "the container"
            return Stop("blocked", "INTERNAL_NETWORK",
                        f"network {net['name']} is internal: packets may not {way} it ({where} drops {pkt.src} -> {pkt.dst})",
                        Fix(f"{_cli(net)} network connect bridge {who}" if src_ctr and leaving else "",
                            advice="give it a second, non-internal network" if src_ctr and leaving else
                            f"connect the container that must reach it to {net['name']}, or make {net['name']} not internal",
                            why_unchecked="connecting adds an interface, which the model of today cannot add"), ev)
    if iface_rule and in_net is not None and out_net is not None and in_net is not out_net and named & {in_net["name"], out_net["name"]}:
        to = out_net["name"]
        cmd = f"{_cli(out_net)} network connect {to} {src_ctr['name']}" if src_ctr else ""
        return Stop("blocked", "NETWORK_ISOLATION",
                    f"{pkt.src} (network {in_net['name']}) and {pkt.dst} (network {to}) are on different networks, "
                    f"and {ns['label']} isolates them ({where})",
                    Fix(cmd, advice=f"connect the sender to network {to}" if not cmd else f"{src} joins network {to}",
                        why_unchecked="connecting adds an interface, which the model of today cannot add"), ev)
    if out_net is not None and in_net is not out_net and "dnat" not in pkt.ct_status and pkt.ct_state == "new" \
            and _in_subnet(pkt.dst, out_net) and (
            (iface_rule and out_net["name"] in named)
            or (policy and out_net in nets.governed_by(ns, step.family, step.table))):
        ctr = next((c for c in model.containers() if any(n.get("ip") == pkt.dst for n in (c.get("networks") or {}).values())), None)
        who = ctr["name"] if ctr else pkt.dst
        port = pkt.dport or 80
        host_ip = next((a["address"] for a in model.host["addresses"] if a.get("scope") == "global"
                        and not any(_in_subnet(a["address"], n) for n in nets.by_bridge.values())), "the host's address")
        return Stop("blocked", "PORT_NOT_PUBLISHED",
                    f"{pkt.dst}:{pkt.dport} is a container address ({who} on network {out_net['name']}): from outside that network "
                    f"only published ports reach it, and {where} drops it",
                    Fix(fixes.recreate(ctr, "-p", f"{port}:{port}") if ctr else "",
                        advice=f"publish port {port} of {who}, then connect to {host_ip}:{port}"
                        + ("" if fixes.can_recreate(ctr) else f" ({fixes.no_command(ctr)})" if ctr else
                           " (manual: no container netdiag knows has that address, so no command is given)"),
                        why_unchecked="publishing adds a DNAT rule and a new container, which the model cannot add"), ev)
    entering = _bridge_of(ns, pkt.iif)  # firewalld's zones decide by the interface a packet comes in on
    if policy and entering and firewalld.owns(ns, step.family, step.table):
        what = f"network {in_net['name']} (bridge {entering})" if in_net is not None else f"bridge {entering}"
        return firewalld.zone_stop(ns, where, pkt, entering, what, ev)
    governed = nets.governed_by(ns, step.family, step.table)
    ours = out_net or in_net
    # a bridge no runtime records (made by hand, by another tool): the manager does not govern it either
    plain = None if ours is not None else next((b for b in (_bridge_of(ns, pkt.iif), _bridge_of(ns, pkt.oif)) if b), None)
    if policy and governed and ((ours is not None and ours not in governed)
                                or (plain is not None and plain not in {n["bridge"] for n in governed})):
        bridge = ours["bridge"] if ours is not None else plain
        what = f"network {ours['name']} (bridge {bridge})" if ours is not None else \
            f"bridge {bridge} (a plain Linux bridge, no network of {', '.join(sorted({n.get('runtime') or '?' for n in governed}))})"
        # the victim's own runtime may govern other networks in the chain too (netavark's isolation
        # rules name their bridges): the other manager is who governs the rest
        others = [n for n in governed if ours is None or n.get("runtime") != ours.get("runtime")] or governed
        manager = ", ".join(sorted({n.get("runtime") or "?" for n in others}))
        user_chain = next((c for c in _items(ns) if "chain" in c and
                           (c["chain"]["family"], c["chain"]["table"], c["chain"]["name"]) == (step.family, step.table, "DOCKER-USER")), None)
        chain = "DOCKER-USER" if user_chain else step.chain
        # traffic bridged within a plain bridge: one rule, both directions, nothing routed in or out
        bridged = ours is None and _bridge_of(ns, pkt.iif) == _bridge_of(ns, pkt.oif) == bridge
        cmd = _accept_command(ns, step.family, step.table, chain, bridge, rule_style=_iptables_table(ns, step.family, step.table),
                              bridged=bridged)
        apply = fixes.insert_rules(ns["id"], step.family, step.table, chain,
                                   [fixes.iface_pair_accept(bridge)] if bridged else
                                   [fixes.iface_accept("iifname", bridge), fixes.iface_accept("oifname", bridge)])
        alt = ["'netdiag system repair' puts netdiag's own DOCKER-USER rules back (tagged, removed with the network)"] \
            if user_chain and ours is not None and ours.get("runtime") == "netdiag" else []
        return Stop("blocked", "FOREIGN_FIREWALL",
                    f"{where} belongs to the firewall of another network manager ({manager}: it governs "
                    f"{', '.join(sorted(n['name'] for n in others))}), and its {'policy' if step.verdict.startswith('policy') else 'catch-all rule'} "
                    f"drops the traffic of {what}, which it does not manage",
                    Fix(cmd, apply, advice=f"accept {bridge}'s traffic in both directions in {chain}, "
                        + ("Docker's documented place for other people's rules" if chain == "DOCKER-USER" else "before the policy"),
                        alternatives=alt), ev)
    return _firewall_drop(ns, hook, pkt, step, rule, where, ev, policy)


def _recreate_network(model, net: dict) -> str:
    """Remove and recreate a network with the same subnet, gateway and options but icc on, then
    reconnect the containers it had: its icc setting cannot change in place, with Docker either."""
    cli = _cli(net)
    members = [c["name"] for c in model.containers() if net["name"] in (c.get("networks") or {})]
    parts = [f"{cli} network disconnect -f {net['name']} {m}" for m in members] if cli == "docker" else []
    parts.append(f"{cli} network rm {'-f ' if cli == 'netdiag' else ''}{net['name']}")
    keep = [f"{k}={v}" for k, v in sorted((net.get("options") or {}).items())
            if k not in ("com.docker.network.bridge.enable_icc", "com.docker.network.bridge.default_bridge")]
    create = [cli, "network", "create"] + (["--subnet", net["subnet"]] if net.get("subnet") else []) + \
        (["--gateway", net["gateway"]] if net.get("gateway") else []) + (["--internal"] if net.get("internal") else []) + \
        [a for o in keep for a in ("-o", o)] + [net["name"]]
    parts.append(shlex.join(create))
    parts += [f"{cli} network connect {net['name']} {m}" for m in members]
    return " && ".join(parts)


def _iptables_table(ns: dict, family: str, table: str) -> bool:
    """A table iptables-nft made: it holds xt expressions or rules translated from iptables-save."""
    for item in _items(ns):
        r = item.get("rule")
        if r and (r["family"], r["table"]) == (family, table) and (r.get("iptables") or any("xt" in e for e in r.get("expr", []))):
            return True
    return False


def _bridge_of(ns: dict, ifname: str | None) -> str | None:
    """The bridge an interface is, or is a port of (br_netfilter shows bridged packets on the bridge)."""
    link = next((x for x in ns["links"] if x["name"] == ifname), None) if ifname else None
    if link is None:
        return None
    if link["kind"] == "bridge":
        return link["name"]
    master = next((x for x in ns["links"] if x["name"] == link.get("master")), None)
    return master["name"] if master is not None and master["kind"] == "bridge" else None


def _accept_command(ns: dict, family: str, table: str, chain: str, bridge: str, rule_style: bool, bridged: bool = False) -> str:
    if bridged:
        argv = [["iptables", "-I", chain, "-i", bridge, "-o", bridge, "-j", "ACCEPT"]] if rule_style and family == "ip" else \
            [["nft", "insert", "rule", family, table, chain, "iifname", bridge, "oifname", bridge, "accept"]]
    elif rule_style and family == "ip":
        argv = [["iptables", "-I", chain, "-i", bridge, "-j", "ACCEPT"], ["iptables", "-I", chain, "-o", bridge, "-j", "ACCEPT"]]
    else:
        argv = [["nft", "insert", "rule", family, table, chain, "iifname", bridge, "accept"],
                ["nft", "insert", "rule", family, table, chain, "oifname", bridge, "accept"]]
    return " && ".join(fixes.in_ns(ns, a) for a in argv)


def _firewall_drop(ns, hook, pkt, step, rule, where, ev, policy) -> Stop:
    verdict = "rejects" if step.verdict == "reject" else "drops"
    iptables = (rule or {}).get("iptables", "")
    if rule is not None and not policy:
        if iptables.startswith("-A "):
            cmd = fixes.in_ns(ns, ["iptables", "-t", step.table, "-D", *shlex.split(iptables)[1:]])
        else:
            cmd = fixes.in_ns(ns, ["nft", "delete", "rule", step.family, step.table, step.chain, "handle", str(step.handle)])
        apply = fixes.remove_rule(ns["id"], step.family, step.table, step.chain, step.handle)
        return Stop("blocked", "FIREWALL_DROP", f"{ns['label']} {verdict} the packet at {hook}: rule {step.text!r} in {where}",
                    Fix(cmd, apply), ev)
    iptables_style = _iptables_table(ns, step.family, step.table) and step.family == "ip"
    established = ["iptables", "-t", step.table, "-I", step.chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                   "-j", "ACCEPT"] if iptables_style else \
        ["nft", "insert", "rule", step.family, step.table, step.chain, "ct", "state", "established,related", "accept"]
    if pkt.ct_state == "established":
        # the reply of a connection: accept the connection's answers, never a port (the client's is ephemeral)
        argv = established
        apply = fixes.insert_rules(ns["id"], step.family, step.table, step.chain, [fixes.established_accept()])
        what = "policy" if step.verdict.startswith("policy") else "final catch-all rule"
        return Stop("blocked", "FIREWALL_DROP", f"{ns['label']} {verdict} the reply ({pkt.src} -> {pkt.dst}) at {hook}: the {what} "
                    f"of {where} drops what no earlier rule accepted, and no rule accepts established connections",
                    Fix(fixes.in_ns(ns, argv), apply, advice="accept the answers of established connections"), ev)
    # a policy (or catch-all) drop of a table no network manager owns: accept this flow before it
    dport = pkt.dport if pkt.proto in ("tcp", "udp") else 0
    # the failing flow and no more: its source too (a health check's balancer, not the world)
    if iptables_style:
        argv = ["iptables", "-t", step.table, "-I", step.chain] + (["-s", pkt.src] if pkt.src else []) + \
            ["-d", pkt.dst, "-p", pkt.proto] + (["--dport", str(dport)] if dport else []) + ["-j", "ACCEPT"]
    else:
        argv = ["nft", "insert", "rule", step.family, step.table, step.chain] + \
            (["ip", "saddr", pkt.src] if pkt.src else []) + ["ip", "daddr", pkt.dst] + \
            ([pkt.proto, "dport", str(dport)] if dport else []) + ["accept"]
    rules = [fixes.flow_accept(pkt.src, pkt.dst, pkt.proto, dport)]
    commands = [fixes.in_ns(ns, argv)]
    if _reply_dropped_too(ns, hook, pkt, step):  # the same chain sees the answer: accept it too, by state, not by port
        rules.insert(0, fixes.established_accept())
        commands.insert(0, fixes.in_ns(ns, established))
    apply = fixes.insert_rules(ns["id"], step.family, step.table, step.chain, rules)
    what = "policy" if step.verdict.startswith("policy") else "final catch-all rule"
    return Stop("blocked", "FIREWALL_DROP", f"{ns['label']} {verdict} the packet at {hook}: the {what} of {where} "
                f"drops what no earlier rule accepted", Fix(" && ".join(commands), apply,
                                                            advice="accept this flow" + (" and the answers of established "
                                                                                         "connections" if len(rules) > 1 else "")), ev)


def _reply_dropped_too(ns: dict, hook: str, pkt, step) -> bool:
    """Whether the answer to `pkt` (an established flow, the other way) dies at the same hook and
    chain: a forwarding firewall sees both directions."""
    if hook != "forward":
        return False
    from . import routing
    from .nftables import evaluate

    back = replace(pkt, src=pkt.dst, dst=pkt.src, sport=pkt.dport, dport=pkt.sport, iif=pkt.oif, oif=pkt.iif,
                   ct_state="established", icmp_type="echo-reply")
    res = evaluate(ruleset_for(ns), hook, back, families=(step.family,), chain_type="filter",
                   local_addrs=routing.local_addresses(ns))
    return res.verdict == "drop" and res.deciding is not None and (res.deciding.table, res.deciding.chain) == (step.table, step.chain)


def pass_icmp_command(ns: dict, e: dict, rule: dict | None) -> str:
    """The command that lets ICMP 'fragmentation needed' through where a trace event `e` saw it
    dropped: remove the rule when it is a specific one; before a policy or catch-all drop, accept
    that ICMP type at the top of the chain (nothing else is opened)."""
    family, table, chain = e.get("family"), e.get("table"), e.get("chain")
    iptables = (rule or {}).get("iptables", "")
    if rule is not None and not _catch_all(rule):
        if iptables.startswith("-A "):
            return fixes.in_ns(ns, ["iptables", "-t", table, "-D", *shlex.split(iptables)[1:]])
        return fixes.in_ns(ns, ["nft", "delete", "rule", family, table, chain, "handle", str(e.get("handle"))])
    if family == "ip" and _iptables_table(ns, family, table):
        return fixes.in_ns(ns, ["iptables", "-t", table, "-I", chain, "-p", "icmp", "--icmp-type", "fragmentation-needed",
                                "-j", "ACCEPT"])
    return fixes.in_ns(ns, ["nft", "insert", "rule", family, table, chain, "icmp", "type", "destination-unreachable",
                            "icmp", "code", "frag-needed", "accept"])
