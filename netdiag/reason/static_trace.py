"""The static path: follow a packet through the model, namespace by namespace, the way the kernel
would — routing (policy rules, tables), nftables hooks (DNAT, filter, masquerade; bridge family),
sysctls (ip_forward, rp_filter, bridge-nf-call-iptables), veth peers, bridge ports, VXLAN FDB and
MTU, and finally the socket that should receive it. Pure: no kernel access.

The walk stops at the first hop where the packet dies, with the cause code, the evidence (the route,
the rule, the sysctl) and a fix; or it reaches a listening socket (delivered).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from runtime.errors import NotFound

from ..model import Model
from .iptables import ruleset_for
from . import attribute, fixes, overlay, routing, vpn
from .fixes import Fix
from .nftables import Packet, evaluate
from .stop import Stop, sentence

EPHEMERAL_SPORT = 40000
VXLAN_OVERHEAD = 50
HEADERS = {"tcp": 40, "udp": 28, "icmp": 28}
MAX_HOPS = 64
REPLY_WORDS = {"tcp": "SYN-ACK", "udp": "UDP answer", "icmp": "echo reply"}


@dataclass
class Trace:
    model: Model
    proto: str
    dport: int
    size: int
    hops: list[dict] = field(default_factory=list)
    evidence: list[dict] = field(default_factory=list)
    unknown_rules: list[dict] = field(default_factory=list)
    outer_df: bool = False
    stale_neighbour: tuple | None = None
    src_ns: dict | None = None
    decapsulated: bool = False  # past a VXLAN decapsulation: failures there keep their own cause
    last_route: tuple | None = None  # (namespace, route) of the last routing decision
    routed: list = field(default_factory=list)  # the request's routing decisions: (namespace, route, hops so far, dst)
    leg: str = "request"  # "reply" while following the answer back to the source
    nat: list = field(default_factory=list)  # the request's NAT: (ns id, "dnat"|"snat", (addr, port) before, after)
    dnat_rules: list = field(default_factory=list)  # the request's DNATs: (ns, the rule's Step, before, after)
    blocked_hop: int | None = None  # where the cause lies when that is not the last hop walked (NO_NAT)
    reached: dict | None = None  # where the request was delivered (the reply starts there)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def hop(self, ns: dict, interface: str, kind: str, direction: str, detail: str = "") -> int:
        if len(self.hops) >= MAX_HOPS:
            raise Stop("unknown", None, "the path loops (more than 64 hops)", "look for a routing loop between the namespaces listed")
        self.hops.append({"n": len(self.hops) + 1, "namespace": ns["id"], "label": ns["label"], "interface": interface,
                          "kind": kind, "direction": direction, "seen": None, "detail": detail}
                         | ({"leg": "reply"} if self.leg == "reply" else {}))
        return len(self.hops)

    def note(self, kind: str, detail: str, **extra) -> None:
        self.evidence.append({"kind": kind, "detail": detail, **extra})

    def nft(self, ns: dict, hook: str, pkt: Packet, *, chain_type: str | None, families=("ip", "inet"),
            masq: str | None = None):
        ruleset = ruleset_for(ns)  # Docker's iptables-nft xt rules translated from iptables-nft-save
        res = evaluate(ruleset, hook, pkt, families=families, chain_type=chain_type,
                       local_addrs=routing.local_addresses(ns), masquerade_addr=masq)
        for u in res.unknown:
            self.unknown_rules.append({**u, "namespace": ns["label"]})
        if res.verdict == "unknown":
            reasons = "; ".join(sorted({u.get("reason", "") for u in res.unknown}))
            raise Stop("unknown", "PACKET_LOSS" if "numgen" in reasons else None,
                       f"a rule in {ns['label']} ({hook}) could decide this packet, but netdiag cannot evaluate it exactly: {reasons}",
                       "check the rules listed under evidence, or run the live trace",
                       [{"kind": "nft_unknown", "detail": f"{u['family']} {u['table']} {u['chain']}: {u['text']}"} for u in res.unknown])
        # Docker reaches its xt DNAT through `-m addrtype --dst-type LOCAL` (an xt match too), so the
        # path netdiag follows (xt match: no) has no DNAT: the DNAT is then only in the other paths
        if not res.packet_exact and res.packet.dst == pkt.dst and ("dnat" in res.packet.ct_status or any(
                u.get("verdict") == "dnat" and u.get("changes_outcome") for u in res.unknown)):
            res.packet = self.published_target(ns, res.packet)
        return res

    def published_target(self, ns: dict, pkt: Packet) -> Packet:
        """iptables-nft DNAT targets are opaque in nft's JSON: take the destination from the
        runtimes' own port tables (Docker's API, netdiag's records), which programmed that rule.
        Ports are published on the host's own addresses only (addrtype LOCAL, fib daddr type local)."""
        if not routing.is_local(ns, pkt.dst):
            return pkt
        for c in self.model.containers():
            for p in c.get("ports", []):
                end = p.get("host_end") or p["host_port"]
                if p["proto"] == pkt.proto and p["host_port"] <= pkt.dport <= end and p.get("host_ip") in ("", "0.0.0.0", None, pkt.dst):
                    ip = next((n["ip"] for n in c.get("networks", {}).values() if n.get("ip")), None)
                    if ip:
                        port = p["ctr_port"] + (pkt.dport - p["host_port"])
                        self.note("dnat", f"{ns['label']}: the DNAT target of {pkt.dst}:{pkt.dport} is not readable from nft; "
                                  f"{c['runtime']} publishes it to {c['name']} {ip}:{port}")
                        return replace(pkt, dst=ip, dport=port, ct_status=pkt.ct_status | {"dnat"})
        return pkt

    # -- walking -------------------------------------------------------------------------------------
    def run(self, src_ns: dict, dst_ip: str) -> tuple[dict, Packet]:
        real = [link for link in src_ns["links"] if link["kind"] != "loopback"]
        if src_ns["kind"] == "container" and not real and not routing.is_local(src_ns, dst_ip):
            self.hop(src_ns, "lo", "loopback", "egress")
            raise Stop("blocked", "NETWORK_NONE", f"{src_ns['name']} has no network interface but lo: it runs with --network none",
                       _none_fix(self.model, src_ns, _container_with(self.model, dst_ip)))
        pkt = Packet(src="0.0.0.0", dst=dst_ip, proto=self.proto, sport=EPHEMERAL_SPORT, dport=self.dport,
                     length=self.size or 64)
        return self.output(src_ns, pkt)

    def reply(self, ns: dict, request: Packet):
        """Follow the answer to `request` (delivered in `ns`) back to the source: the SYN-ACK, the
        echo reply, the UDP answer. It is an established flow: NAT chains do not run, conntrack
        reverses the request's NAT where it happened; routing, rp_filter and every filter hook on
        the way back decide as for any packet. Only an ICMP echo reply has the probe's size."""
        self.leg, self.decapsulated, self.outer_df, self.reached = "reply", False, False, ns
        if self.proto != "icmp":
            self.size = 0
        pkt = Packet(src=request.dst, dst=request.src, proto=request.proto, sport=request.dport, dport=request.sport,
                     ct_state="established", ct_status=request.ct_status, length=request.length if self.proto == "icmp" else 64,
                     icmp_type="echo-reply")
        return self.output(ns, pkt)

    def reply_no_route(self, ns: dict, dst: str, route: routing.Route) -> Stop:
        """The reply has no way back from `ns` to `dst`. NO_NAT when the request's private source
        left a host that should have masqueraded it (a container network's subnet, leaving that
        host through another interface, unchanged); NO_ROUTE at this hop otherwise. The fix is a
        route back through the neighbour the request came from, where the request came in."""
        word = "has no route back to" if route.type == "none" else f"has a {route.type} route for"
        evidence = [{"kind": "route", "detail": f"{ns['label']}: lookup {dst} (the reply) -> {route.text}"}]
        fix = self.route_back_fix(ns, dst)
        leaving = self.unmasqueraded_exit(dst)
        if leaving is not None:
            hop, net, subnet = leaving
            self.blocked_hop = hop["n"]
            host = self.model.namespaces[hop["namespace"]]
            if net is not None:  # a runtime's network made without masquerade: route it upstream, or masquerade again
                fix.alternatives.append(f"masquerade {net['name']} again: recreate it without "
                                        "-o com.docker.network.bridge.enable_ip_masquerade=false")
                what = f"network {net['name']}"
            else:  # a subnet the host routes: the host masquerades it where it leaves by its uplink
                route_back = fix.command
                fix = Fix(fixes.in_ns(host, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", subnet, "-o", hop["interface"],
                                             "-j", "MASQUERADE"]),
                          fixes.add_masquerade(host["id"], subnet, hop["interface"]),
                          advice=f"{host['label']} masquerades {subnet} where it leaves through {hop['interface']}",
                          alternatives=[f"{route_back} (a route back to {subnet}, where {ns['label']} is yours to change)"]
                          if route_back else [])
                what = f"subnet {subnet}, which {host['label']} routes"
            return Stop("blocked", "NO_NAT",
                        f"the packet reaches its destination, but its private source {dst} ({what}) left {hop['label']} "
                        f"through {hop['interface']} without masquerade, and {ns['label']} {word} {dst}, so replies are lost",
                        fix, evidence)
        reached = self.reached or ns
        where = f"{ns['label']} {word} {dst}" if reached is ns else f"on the way back {ns['label']} {word} {dst}"
        return Stop("blocked", "NO_ROUTE", f"the request reaches {reached['label']}, but {where}: "
                    f"the {REPLY_WORDS.get(self.proto, 'reply')} does not get back", fix, evidence)

    def unmasqueraded_exit(self, src: str) -> tuple[dict, dict | None, str] | None:
        """The request's hop where `src`, a private address, left a host that should have
        masqueraded it, still as `src`: (that hop, the runtime's network or None, the subnet). A host
        should when `src` is a container network's on it and leaves by another interface than the
        network's bridge, or when it routes `src`'s subnet (connected on another interface) out of
        the interface of its default route, its uplink."""
        if any(k == "snat" for _, k, _, _ in self.nat):
            return None
        try:
            addr = ipaddress.ip_address(src)
        except ValueError:
            return None
        if not addr.is_private:
            return None
        out = [h for h in self.hops if h.get("leg") != "reply" and h["direction"] == "egress"
               and h["kind"] not in ("firewall", "route", "socket") and h["namespace"] != (self.src_ns or {}).get("id")]
        host = self.model.snap.get("host")
        net = next((n for n in self.model.snap.get("networks") or [] if n.get("bridge") and n.get("subnet")
                    and addr in ipaddress.ip_network(n["subnet"], strict=False)), None)
        if net is not None:
            return next(((h, net, net["subnet"]) for h in out if h["namespace"] == host and h["interface"] != net["bridge"]
                         and self.master_of(host, h["interface"]) != net["bridge"]), None)
        for h in out:
            ns = self.model.namespaces.get(h["namespace"]) or {}
            uplink = next((r["dev"] for r in ns.get("routes", []) if r.get("table") == 254
                           and r.get("dst") in ("default", "0.0.0.0/0") and r.get("type", "unicast") == "unicast"), None)
            behind = next((ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in ns.get("addresses", [])
                           if a["ifname"] != h["interface"] and a["prefixlen"] < 32 and not a["address"].startswith("127.")
                           and addr in ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False)), None)
            if uplink == h["interface"] and behind is not None:
                return h, None, str(behind)
        return None

    def master_of(self, ns_id: str, ifname: str) -> str | None:
        ns = self.model.namespaces.get(ns_id) or {}
        return next((x.get("master") for x in ns.get("links", []) if x["name"] == ifname), None)

    def route_back_fix(self, ns: dict, dst: str) -> Fix:
        """A route to `dst`'s subnet through the neighbour the request came from, on the interface it
        arrived on in `ns`; else the default route fix."""
        came = [h for h in self.hops if h.get("leg") != "reply"]
        arrived = next((h for h in came if h["namespace"] == ns["id"] and h["direction"] in ("ingress", "forward")
                        and h["kind"] not in ("firewall", "route", "rp_filter")), None)
        dev = arrived["interface"] if arrived else None
        if arrived and arrived["kind"] != "bridge" and self.master_of(ns["id"], dev):
            dev = self.master_of(ns["id"], dev)  # arrived on a bridge port: the route goes via the bridge
        mine = [ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in ns["addresses"]
                if a["ifname"] == dev and not a["address"].startswith("127.")]
        before = [h for h in came if arrived and h["n"] < arrived["n"] and h["namespace"] != ns["id"]]
        gw = None
        for h in reversed(before):
            prev = self.model.namespaces.get(h["namespace"]) or {}
            gw = next((a["address"] for a in prev.get("addresses", []) if any(
                ipaddress.ip_address(a["address"]) in net for net in mine)), None)
            if gw:
                break
        subnet = next((str(ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False))
                       for owner in self.model.owners_of(dst) for a in self.model.namespaces[owner]["addresses"]
                       if a["address"] == dst and a["prefixlen"] < 32), f"{dst}/32")
        if gw and dev:
            return Fix(fixes.in_ns(ns, ["ip", "route", "add", subnet, "via", gw, "dev", dev]),
                       fixes.replace_route(ns["id"], subnet, gw, dev),
                       advice=f"a route back to {subnet} through {gw}, where the request came from")
        return self.route_fix(ns, dst)

    def output(self, ns: dict, pkt: Packet, encap: Packet | None = None):
        route = self.route(ns, pkt.dst, None, None)
        if pkt.src == "0.0.0.0":
            src = "127.0.0.1" if route.type == "local" and pkt.dst.startswith("127.") else routing.source_for(ns, route) \
                if route.type != "local" else pkt.dst
            pkt = replace(pkt, src=src or "0.0.0.0")
        pkt = replace(pkt, iif=None, oif=route.dev if route.type != "local" else "lo")
        res = self.nft(ns, "output", pkt, chain_type="nat")
        if (res.packet.dst, res.packet.dport) != (pkt.dst, pkt.dport):
            self.note("dnat", f"{ns['label']}: {pkt.dst}:{pkt.dport} rewritten to {res.packet.dst}:{res.packet.dport}",
                      rule=res.steps[-1].text if res.steps else "")
            self.nat_done(ns, "dnat", (pkt.dst, pkt.dport), (res.packet.dst, res.packet.dport),
                          res.steps[-1] if res.steps and res.steps[-1].verdict == "dnat" else None)
            pkt = res.packet
            route = self.route(ns, pkt.dst, None, None)
            pkt = replace(pkt, oif=route.dev if route.type != "local" else "lo")
        self.filter(ns, "output", pkt)
        if route.type == "local":
            self.hop(ns, "lo", "loopback", "egress", "to a local address")
            return self.input(ns, replace(pkt, iif="lo"), encap)
        pkt = self.postrouting(ns, pkt, route)
        return self.egress(ns, route, pkt, encap)

    def route(self, ns: dict, dst: str, src: str | None, iif: str | None) -> routing.Route:
        route = routing.lookup(ns, dst, src, iif)
        if self.leg == "request" and any(n["id"] == ns["id"] and d == dst for n, _, _, d in self.routed):
            self.hop(ns, iif or "-", "route", "lookup", route.text)
            raise self.nowhere_beyond(ns, dst, route, looped=True)
        if route.type in ("none", "unreachable", "blackhole", "prohibit"):
            self.hop(ns, iif or "-", "route", "lookup", route.text)
            if self.leg == "reply":
                raise self.reply_no_route(ns, dst, route)
            if route.type == "none" and self.sent_up_by_default(ns, dst):
                raise self.nowhere_beyond(ns, dst, route)
            word = "has no route to" if route.type == "none" else f"has a {route.type} route for"
            rule = routing.rule_of(ns, route)
            via = f" (policy rule {routing.rule_text(rule)})" if rule and not routing.is_default_rule(rule) else ""
            raise Stop("blocked", "NO_ROUTE", f"{ns['label']} {word} {dst}{via}", self.no_route_fix(ns, dst, route),
                       [{"kind": "route", "detail": f"{ns['label']}: lookup {dst} -> {route.text}{via}"}])
        self.down_link_for(ns, dst, route)
        if (overlap := vpn.overlap_stop(self.model, ns, dst, route)) is not None:  # e.g. a VPN's route
            self.hop(ns, iif or "-", "route", "lookup", route.text)
            raise overlap
        self.note("route", f"{ns['label']}: {dst} -> {route.text}")
        self.last_route = (ns, route)
        if self.leg == "request" and route.type != "local":
            self.routed.append((ns, route, len(self.hops), dst))
        return route

    def down_link_for(self, ns: dict, dst: str, route: routing.Route) -> None:
        """`dst` is on the subnet of an address of `ns` whose link is down: the kernel deleted that
        subnet's route with the link, so a wider route (the default) takes the packet elsewhere.
        LINK_DOWN there; setting the link up brings the subnet's route back."""
        addr = ipaddress.ip_address(dst)
        for a in ns["addresses"]:
            net = ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False)
            link = self.model.link(ns, a["ifname"])
            if link is None or link["kind"] == "loopback" or addr not in net or a["prefixlen"] >= 32:
                continue
            if link["up"] and "LOWER_UP" in link.get("flags", ["LOWER_UP"]):
                continue
            if route.type == "unicast" and route.dst not in ("default", "0.0.0.0/0") and \
                    ipaddress.ip_network(route.dst, strict=False).prefixlen >= net.prefixlen:
                continue  # a route at least as specific still serves it
            self.note("route", f"{ns['label']}: {dst} is on {net}, the subnet of {a['address']} on {link['name']}, which is down: "
                      f"the kernel deleted that route, and {route.text} is taken instead")
            n = self.hop(ns, link["name"], link["kind"], "egress", f"the link of {net}")
            self.check_link(ns, link, n)

    def sent_up_by_default(self, ns: dict, dst: str) -> bool:
        """`dst` is a private (RFC 1918) address that the namespace before `ns` on the path sent
        here by its default route, and that namespace is not the source (a client's default route
        to its gateway is what it is for)."""
        prev = next((x for x in reversed(self.routed) if x[0]["id"] != ns["id"]), None)
        return bool(prev) and _rfc1918(dst) and prev[3] == dst and prev[1].dst in ("default", "0.0.0.0/0") \
            and prev[0]["id"] != (self.src_ns or {}).get("id")

    def nowhere_beyond(self, ns: dict, dst: str, route: routing.Route, looped: bool = False) -> Stop:
        """A private destination left a namespace by its default route, towards its uplink, and
        beyond there is nowhere to go (no route, or back again: a loop). The namespace that sent it
        up lacks the route: NO_ROUTE there, fixed by a route via the neighbour that serves `dst`,
        where the model shows one."""
        ups = [x for x in self.routed if x[1].dst in ("default", "0.0.0.0/0") and x[3] == dst
               and x[0]["id"] != (self.src_ns or {}).get("id")]
        if looped:
            ups = [x for x in ups if any(y[0]["id"] == ns["id"] for y in self.routed[self.routed.index(x):])]
        if not _rfc1918(dst) or not ups:
            if looped:
                return Stop("unknown", None, f"the path loops: {ns['label']} gets the packet for {dst} again",
                            "look for a routing loop between the namespaces listed")
            word = "has no route to" if route.type == "none" else f"has a {route.type} route for"
            return Stop("blocked", "NO_ROUTE", f"{ns['label']} {word} {dst}", self.no_route_fix(ns, dst, route),
                        [{"kind": "route", "detail": f"{ns['label']}: lookup {dst} -> {route.text}"}])
        host, up, before, _ = ups[-1] if not looped else ups[0]
        out = next((h for h in self.hops[before:] if h["namespace"] == host["id"] and h["direction"] == "egress"), None)
        self.blocked_hop = out["n"] if out else None
        beyond = "sends it back: a loop" if looped else "has no route to it either"
        return Stop("blocked", "NO_ROUTE",
                    f"{host['label']} has no route to {dst}: it sends this private address out of its default route "
                    f"({up.text}), and {ns['label']} beyond {beyond}",
                    self.serving_route_fix(host, dst, up),
                    [{"kind": "route", "detail": f"{host['label']}: lookup {dst} -> {up.text} (the default route, its uplink)"},
                     {"kind": "route", "detail": f"{ns['label']}: lookup {dst} -> {route.text}"}])

    def serving_route_fix(self, ns: dict, dst: str, up: routing.Route) -> Fix:
        """A route to `dst`'s subnet via a neighbour across another link of `ns` that forwards and
        routes `dst` on (not back to `ns`), as the model shows it; else advice."""
        subnet = next((str(ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False))
                       for owner in self.model.owners_of(dst) for a in (self.model.namespaces.get(owner) or {}).get("addresses", [])
                       if a["address"] == dst and a["prefixlen"] < 32), None)
        for link in ns["links"]:
            if link["name"] == up.dev or link["kind"] == "loopback" or not link["up"]:
                continue
            mine = [ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in ns["addresses"]
                    if a["ifname"] == link["name"] and not a["address"].startswith("127.")]
            for other, ifname in self.neighbours_across(ns, link):
                if other["id"] == ns["id"]:
                    continue
                there = routing.lookup(other, dst)
                serves = there.type == "local" or (there.type == "unicast" and there.dev != ifname
                                                   and routing.forwarding_enabled(other, ifname))
                gw = next((a["address"] for a in other["addresses"] if a["ifname"] == ifname
                           and any(ipaddress.ip_address(a["address"]) in net for net in mine)), None)
                if serves and gw:
                    net = subnet or (there.dst if there.type == "unicast" and there.dst not in ("default", "0.0.0.0/0") else f"{dst}/32")
                    return Fix(fixes.in_ns(ns, ["ip", "route", "add", net, "via", gw, "dev", link["name"]]),
                               fixes.replace_route(ns["id"], net, gw, link["name"]),
                               advice=f"{other['label']} ({gw}) routes {dst} on: a route to {net} through it")
        return Fix(advice=f"add a route to {dst}'s network in {ns['label']} via the router that serves it "
                   f"(it now leaves by the default route, {up.text}, where nothing routes it)",
                   why_unchecked=f"no neighbour of {ns['label']} that netdiag observes routes {dst}")

    def no_route_fix(self, ns: dict, dst: str, route: routing.Route) -> Fix:
        """No route: add one (route_fix). A route that refuses (blackhole, unreachable, prohibit):
        remove what sends the flow there, the route itself, or the policy rule that sends `dst` to
        a table where it meets one (a rule of the user's own: the table may serve other flows)."""
        if route.type == "none":
            return self.route_fix(ns, dst)
        rule = routing.rule_of(ns, route)
        if route.dst == "rule" and rule:  # the rule itself is the blackhole (ip rule add ... blackhole)
            return Fix(fixes.in_ns(ns, ["ip", "rule", "del", *routing.rule_args(rule)]), fixes.remove_policy_rule(ns["id"], rule),
                       advice=f"remove the policy rule that refuses {dst}")
        table = [] if route.table == routing.RT_TABLE_MAIN else ["table", str(route.table)]
        del_route = fixes.in_ns(ns, ["ip", "route", "del", route.type, route.dst, *table])
        remove = fixes.remove_route(ns["id"], route.table, route.dst, route.type)
        if rule and not routing.is_default_rule(rule):
            return Fix(fixes.in_ns(ns, ["ip", "rule", "del", *routing.rule_args(rule)]), fixes.remove_policy_rule(ns["id"], rule),
                       advice=f"remove the policy rule that sends {dst} to table {route.table}, whose {route.type} route refuses it",
                       alternatives=[f"{del_route} (remove the {route.type} route from table {route.table}, "
                                     "if nothing else needs it there)"])
        return Fix(del_route, remove, advice=f"remove the {route.type} route for {route.dst}")

    def route_fix(self, ns: dict, dst: str) -> Fix:
        """A route where there is none. The prefix route of an address on the destination's own
        subnet, if it was removed (the kernel adds one with each address); else a default route via
        a gateway on one of the namespace's own subnets: the bridge address of the network the
        interface is on (a container), else a neighbour that forwards (a namespace across the link
        with forwarding on), else one in the neighbour table; with that subnet's prefix route
        first where it is missing too (a gateway off every connected route is 'invalid')."""
        addr = ipaddress.ip_address(dst)
        main = {r["dst"] for r in ns["routes"] if r["table"] == routing.RT_TABLE_MAIN}
        lost = []  # (address, its subnet) whose prefix route is gone
        for a in ns["addresses"]:
            link = self.model.link(ns, a["ifname"])
            if a["prefixlen"] >= 32 or (a.get("local") or a["address"]).startswith("127.") or not (link or {}).get("up"):
                continue
            net = ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False)
            if str(net) not in main:
                lost.append((a, net))

        def connected(a, net) -> tuple[str, object]:
            return (fixes.in_ns(ns, ["ip", "route", "add", str(net), "dev", a["ifname"]]),
                    fixes.replace_route(ns["id"], str(net), None, a["ifname"]))
        here = next(((a, net) for a, net in lost if addr in net), None)
        if here:
            cmd, edit = connected(*here)
            return Fix(cmd, edit, advice=f"the prefix route of {here[0]['address']}/{here[0]['prefixlen']} on {here[0]['ifname']}, "
                       f"which the kernel adds with the address, was removed: {dst} is on that subnet")
        for link in ns["links"]:
            for a in ns["addresses"]:
                if a["ifname"] != link["name"] or a["address"].startswith("127."):
                    continue
                subnet = ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False)
                gw = next((n.get("gateway") for n in self.model.snap.get("networks") or []
                           if n.get("gateway") and n.get("subnet") == str(subnet)), None)
                if gw is None:
                    gw = self.forwarder_on(ns, link, subnet, dst)
                if gw is None:
                    gw = next((x["address"] for x in ns["neighbours"] if x["ifname"] == link["name"] and x["address"] != a["address"]
                               and "FAILED" not in x["state"] and ipaddress.ip_address(x["address"]) in subnet), None)
                if gw:
                    pre = [connected(b, net) for b, net in lost if b is a]
                    cmds = [c for c, _ in pre] + [fixes.in_ns(ns, ["ip", "route", "add", "default", "via", gw, "dev", link["name"]])]
                    edits = [e for _, e in pre] + [fixes.replace_route(ns["id"], "default", gw, link["name"])]

                    def apply(model, ov, edits=edits):
                        for edit in edits:
                            edit(model, ov)
                    return Fix(" && ".join(cmds), apply,
                               advice=f"a default route via {gw}" + (f", after the prefix route of {subnet} that was removed" if pre else ""))
        return Fix(advice=f"connect {ns['label']} to a network that reaches {dst} (it has no interface with a gateway)",
                   why_unchecked="no gateway was found on the namespace's own subnets")

    def neighbours_across(self, ns: dict, link: dict) -> list[tuple[dict, str]]:
        """(namespace, interface) pairs on the other side of `link`: a veth's peer, or, where the
        peer is a bridge port, the bridge itself and the peers of its other ports; for a bridge
        of `ns`, the peers of its ports."""
        if link["kind"] == "bridge":
            return [(far[0], far[1]["name"]) for port in ns["links"] if port.get("master") == link["name"]
                    and port["kind"] == "veth" for far in [self.model.peer(ns, port)] if far]
        pair = self.model.peer(ns, link) if link["kind"] == "veth" else None
        if not pair:
            return []
        other, plink = pair
        if not plink.get("master"):
            return [(other, plink["name"])]
        out = [(other, plink["master"])]
        for port in other["links"]:
            if port.get("master") == plink["master"] and port["name"] != plink["name"]:
                far = self.model.peer(other, port) if port["kind"] == "veth" else None
                if far:
                    out.append((far[0], far[1]["name"]))
        return out

    def forwarder_on(self, ns: dict, link: dict, subnet, dst: str) -> str | None:
        """The address on `subnet` of a namespace across `link` that forwards and has a route to
        `dst`: the gateway a missing default route should use."""
        for other, ifname in self.neighbours_across(ns, link):
            if other["id"] == ns["id"] or not routing.forwarding_enabled(other, ifname):
                continue
            if routing.lookup(other, dst).type not in ("unicast", "local"):
                continue
            gw = next((a["address"] for a in other["addresses"] if a["ifname"] == ifname
                       and ipaddress.ip_address(a["address"]) in subnet), None)
            if gw:
                return gw
        return None

    def filter(self, ns: dict, hook: str, pkt: Packet, families=("ip", "inet")) -> None:
        res = self.nft(ns, hook, pkt, chain_type="filter", families=families)
        if res.verdict == "drop":
            self.hop(ns, pkt.oif or pkt.iif or "-", "firewall", hook, res.deciding.text if res.deciding else "")
            raise self.firewall_stop(ns, hook, pkt, res.deciding)

    def firewall_stop(self, ns: dict, hook: str, pkt: Packet, step) -> Stop:
        return attribute.explain_drop(self.model, ns, hook, pkt, step, self.src_ns)

    def postrouting(self, ns: dict, pkt: Packet, route: routing.Route) -> Packet:
        masq = routing.source_for(ns, route)
        res = self.nft(ns, "postrouting", replace(pkt, oif=route.dev), chain_type="nat", masq=masq)
        if res.packet.src != pkt.src:
            self.note("snat", f"{ns['label']}: source {pkt.src} rewritten to {res.packet.src} on {route.dev}",
                      rule=res.steps[-1].text if res.steps else "")
            self.nat_done(ns, "snat", (pkt.src, pkt.sport), (res.packet.src, res.packet.sport))
        self.filter(ns, "postrouting", res.packet)
        return self.un_nat(ns, "dnat", res.packet)

    # -- the round trip: conntrack's NAT reversal for the reply --------------------------------------
    def nat_done(self, ns: dict, kind: str, before: tuple, after: tuple, rule=None) -> None:
        if self.leg == "request":
            self.nat.append((ns["id"], kind, before, after))
            if rule is not None:
                self.dnat_rules.append((ns, rule, before, after))

    def un_nat(self, ns: dict, kind: str, pkt: Packet) -> Packet:
        """On the reply leg, what conntrack undoes in `ns`: the request's SNAT there (the reply's
        destination, at prerouting) or its DNAT (the reply's source, at postrouting or input)."""
        if self.leg != "reply":
            return pkt
        for ns_id, k, before, after in self.nat:
            if ns_id != ns["id"] or k != kind:
                continue
            if kind == "snat" and (pkt.dst, pkt.dport or after[1]) == (after[0], after[1]):
                self.note("nat", f"{ns['label']}: conntrack reverses the request's SNAT: the reply goes to {before[0]}")
                return replace(pkt, dst=before[0], dport=before[1])
            if kind == "dnat" and (pkt.src, pkt.sport or after[1]) == (after[0], after[1]):
                self.note("nat", f"{ns['label']}: conntrack reverses the request's DNAT: the reply comes from {before[0]}"
                          + (f":{before[1]}" if self.proto != "icmp" else ""))
                return replace(pkt, src=before[0], sport=before[1])
        return pkt

    def egress(self, ns: dict, route: routing.Route, pkt: Packet, encap: Packet | None):
        link = self.model.link(ns, route.dev)
        if link is None:
            raise Stop("unknown", None, f"route uses {route.dev}, which is not in the snapshot of {ns['label']}")
        n = self.hop(ns, link["name"], link["kind"], "egress", route.text)
        self.check_link(ns, link, n)
        self.check_mtu(ns, link, pkt, encap)
        nexthop = route.gateway or pkt.dst
        for neigh in ns["neighbours"]:
            if neigh["address"] == nexthop and neigh["ifname"] == link["name"] and ("FAILED" in neigh["state"] or "INCOMPLETE" in neigh["state"]):
                # history, not fate: the kernel resolves again on new traffic, after a short refusal
                self.note("neighbour", f"{ns['label']}: ARP for {nexthop} on {link['name']} is {neigh['state']}; "
                          "until it resolves, new connections may get 'No route to host'")
                self.stale_neighbour = (ns["label"], nexthop, link["name"])
        self.check_arp(ns, link, nexthop, n)
        return self.transmit(ns, link, pkt, nexthop, encap)

    def check_arp(self, ns: dict, link: dict, nexthop: str, n: int) -> None:
        """The sender must resolve `nexthop` (ARP) on `link`: the namespace that owns it must answer.
        It never does with arp_ignore=8 (the larger of all's and its interface's value) or with ARP
        off on its interface (NOARP). A static entry (permanent, noarp) needs no answer."""
        if link["kind"] in ("loopback", "vxlan") or "NOARP" in link.get("flags", []) or nexthop.startswith("127."):
            return
        if any(x["address"] == nexthop and x["ifname"] == link["name"] and ("PERMANENT" in x["state"] or "NOARP" in x["state"])
               for x in ns["neighbours"]):
            return
        # only the namespaces across this link: every lab has the same outside addresses, and a
        # namespace elsewhere that holds the address (perhaps gone by now) is not the one asked
        for owner, _ in self.neighbours_across(ns, link):
            owner_id = owner["id"]
            ifname = next((a["ifname"] for a in owner["addresses"] if (a.get("local") or a["address"]) == nexthop), None)
            if owner_id == ns["id"] or ifname is None:
                continue
            dev = self.model.link(owner, ifname) or {}
            values = owner.get("sysctls", {})
            knobs = [k for k in (f"net.ipv4.conf.{ifname}.arp_ignore", "net.ipv4.conf.all.arp_ignore") if values.get(k) == "8"]
            noarp = "NOARP" in dev.get("flags", [])
            if not knobs and not noarp:
                continue
            why = (f"{' and '.join(f'{k}=8' for k in knobs)} (it answers no ARP request)" if knobs else "") + \
                (" and " if knobs and noarp else "") + (f"ARP is off on {ifname} (NOARP)" if noarp else "")
            cmds = [fixes.in_ns(owner, ["sysctl", "-w", f"{k}=0"]) for k in knobs] + \
                ([fixes.in_ns(owner, ["ip", "link", "set", ifname, "arp", "on"])] if noarp else [])
            edits = [fixes.set_sysctl(owner_id, k, "0") for k in knobs] + ([_arp_on(owner_id, ifname)] if noarp else [])

            def apply(model, ov, edits=edits):
                for edit in edits:
                    edit(model, ov)
            self.blocked_hop = n
            raise Stop("blocked", "NO_NEIGHBOR",
                       f"{ns['label']} cannot resolve {nexthop} on {link['name']} (ARP): {owner['label']}, which has that address "
                       f"on {ifname}, never answers: {why}",
                       Fix(" && ".join(cmds), apply, advice=f"{owner['label']} answers ARP for {nexthop} again"),
                       [{"kind": "sysctl", "detail": f"{owner['label']}: {k}=8"} for k in knobs]
                       + ([{"kind": "link", "detail": f"{owner['label']} {ifname}: flags {','.join(dev.get('flags', []))}"}] if noarp else [])
                       + [{"kind": "neighbour", "detail": f"{ns['label']}: no static ARP entry for {nexthop} on {link['name']}"}])

    def check_link(self, ns: dict, link: dict, n: int) -> None:
        # flags, not operstate: the kernel updates operstate lazily (linkwatch), a new link can read
        # DOWN for a moment while it is UP with carrier (LOWER_UP)
        no_carrier = link["kind"] not in ("bridge", "loopback", "vxlan") and "LOWER_UP" not in link.get("flags", ["LOWER_UP"])
        if not link["up"] or no_carrier:
            # a veth has carrier only while both ends are up: an end that is up without carrier
            # means its peer is down, and that end (another namespace's) is the one to set up
            pair = self.model.peer(ns, link) if link["kind"] == "veth" else None
            ends = ([(ns, link)] if link["up"] is False else []) + ([pair] if pair and not pair[1]["up"] else [])
            ends = ends or [(ns, link)]
            evidence = [{"kind": "link", "detail": f"{n['label']} {x['name']}: state {x.get('state')}, flags {','.join(x['flags'])}"}
                        for n, x in [(ns, link)] + ([pair] if pair else [])]
            if link["up"] and pair and not pair[1]["up"]:  # the down end is the peer: that is the hop
                self.hop(pair[0], pair[1]["name"], "veth", "ingress", f"peer of {link['name']} in {ns['label']}")
                what = (f"{pair[0]['label']}'s {pair[1]['name']} is down, so {link['name']} in {ns['label']}, its veth peer, "
                        "has no carrier and nothing passes between them")
            else:
                what = f"{link['name']} in {ns['label']} is down, so nothing passes through it"
            edits = [fixes.link_up(n["id"], x["name"]) for n, x in ends]

            def apply(model, ov):
                for edit in edits:
                    edit(model, ov)
            raise Stop("blocked", "LINK_DOWN", what,
                       Fix(" && ".join(fixes.in_ns(n, ["ip", "link", "set", x["name"], "up"]) for n, x in ends), apply,
                           namespaces=[n["id"] for n, _ in ends]), evidence)

    def check_mtu(self, ns: dict, link: dict, pkt: Packet, encap: Packet | None, bridged: bool = False) -> None:
        if not self.size:
            return
        size = self.size + HEADERS.get(self.proto, 28) + (VXLAN_OVERHEAD if encap else 0)
        # only the encapsulating host's IP output fragments an outer packet without DF; a bridge
        # (the underlay's switch) drops a frame larger than its port, DF or not
        if link.get("mtu") and size > link["mtu"] and encap and not self.outer_df and not bridged:
            self.note("mtu", f"{ns['label']} {link['name']}: the {size}-byte VXLAN packet exceeds MTU {link['mtu']}; "
                      "the outer packet has no DF bit (vxlan df unset), so the kernel fragments it: slower, but delivered")
            return
        if link.get("mtu") and size > link["mtu"]:
            inner = " (inner packet plus 50 bytes of VXLAN)" if encap else ""
            raise Stop("blocked", "MTU_BLACKHOLE",
                       f"a {size}-byte packet{inner} does not fit {link['name']}'s MTU of {link['mtu']} in {ns['label']}; "
                       "with DF set it is dropped, and if the ICMP 'fragmentation needed' is lost the connection hangs",
                       self.mtu_fix(ns, link, size, encap),
                       [{"kind": "mtu", "detail": f"{ns['label']} {link['name']} mtu {link['mtu']} < packet {size}"}])

    def mtu_fix(self, ns: dict, link: dict, size: int, encap: Packet | None) -> Fix:
        """Raise the narrow link to what the rest of the path carries; or lower the sender's MTU so
        TCP sizes its segments to fit (the only fix when the narrow link is the underlay)."""
        sender = self.src_ns
        first = self.hops[0]["interface"] if self.hops else None
        inner = link["mtu"] - (VXLAN_OVERHEAD if encap else 0)
        if link["kind"] == "vxlan":  # the overlay's own MTU: senders must fit it, it cannot grow
            encap = encap or Packet(src="", dst="", proto="udp")
        lower_cmd = fixes.in_ns(sender, ["ip", "link", "set", "dev", first, "mtu", str(inner)]) if sender and first else ""
        new_ctrs = " (for new containers: -o com.docker.network.driver.mtu=%d on the network)" % inner \
            if sender and sender.get("kind") == "container" else ""
        if encap:
            return Fix(lower_cmd, advice=f"lower the sender's MTU to {inner}, so TCP segments fit the encapsulation{new_ctrs}",
                       why_unchecked="a smaller MTU changes how TCP segments, which the model does not follow",
                       alternatives=[fixes.in_ns(ns, ["ip", "link", "set", "dev", link["name"], "mtu", str(size)]) + " (if the underlay carries it)"])
        mtu = max(size, 1500)
        # a veth drops frames larger than its own MTU on receipt: both ends of the pair must carry it
        ends = [(ns, link)] + [p for p in [self.model.peer(ns, link)] if link["kind"] == "veth" and p and (p[1].get("mtu") or 0) < mtu]
        edits = [fixes.set_mtu(n["id"], x["name"], mtu) for n, x in ends]

        def apply(model, ov):
            for edit in edits:
                edit(model, ov)
        return Fix(" && ".join(fixes.in_ns(n, ["ip", "link", "set", "dev", x["name"], "mtu", str(mtu)]) for n, x in ends), apply,
                   advice=f"raise {' and '.join(x['name'] for _, x in ends)}'s MTU to what the path carries",
                   alternatives=[f"{lower_cmd} (lower the sender's MTU){new_ctrs}"] if lower_cmd else [])

    def transmit(self, ns: dict, link: dict, pkt: Packet, nexthop: str, encap: Packet | None):
        kind = link["kind"]
        if kind == "veth":
            pair = self.model.peer(ns, link)
            if not pair:
                return self.across(ns, link, pkt, nexthop, encap)
            return self.ingress(*pair, pkt, nexthop, encap)
        if kind == "bridge":
            port, owner = self.bridge_port_for(ns, link, nexthop, exclude=None)
            return self.out_port(ns, link, port, pkt, nexthop, encap)
        if kind == "vxlan":
            return self.vxlan_out(ns, link, pkt, nexthop)
        if kind == "loopback":
            return self.input(ns, replace(pkt, iif="lo"), encap)
        if kind in vpn.TUNNEL_KINDS:  # a VPN carries it on, not a wire to whoever holds the address here
            raise vpn.into_tunnel(ns, link, self.last_route[1] if self.last_route and self.last_route[0] is ns else None)
        return self.across(ns, link, pkt, nexthop, encap)

    def across(self, ns: dict, link: dict, pkt: Packet, nexthop: str, encap: Packet | None):
        """The far side of `link` is not observed (another machine): continue in the namespace that
        owns the next hop when the model has it (merged snapshots of several hosts), else say where
        the packet went and what would show the rest."""
        owners = [o for o in self.model.owners_of(nexthop) if o != ns["id"]]
        if owners:
            other = self.model.namespaces[owners[0]]
            ifname = next(a["ifname"] for a in other["addresses"] if (a.get("local") or a["address"]) == nexthop)
            self.note("wire", f"{ns['label']} {link['name']} -> {other['label']} {ifname}: the wire between them is not in "
                      "the model (another host's snapshot); filters on it are not checked")
            dev = self.model.link(other, ifname) or {"name": ifname, "kind": "device", "up": True, "flags": ["LOWER_UP"]}
            n = self.hop(other, ifname, dev.get("kind", "device"), "ingress", "across the underlay")
            self.check_link(other, dev, n)
            return self.l3_in(other, ifname, pkt, encap)
        if encap is not None:
            host = next((h for h in self.model.cluster()["hosts"] if h["vtep"] == nexthop), None)
            who = f"member {host['name'] or host['id']}" if host else "a host netdiag does not observe"
            raise Stop("unknown", None, f"the encapsulated packet leaves {ns['label']} through {link['name']} for VTEP {nexthop} "
                       f"({who}); netdiag does not observe that host, so the rest of the path is not checked",
                       "give that host's snapshot too: netdiag trace SRC DST --snapshot THIS.json --snapshot THAT.json "
                       "(take them with 'netdiag snapshot -o FILE' on each host)")
        raise Stop("unknown", None, f"the packet leaves {ns['label']} through {link['name']} ({link['kind']}): beyond it netdiag sees nothing",
                   "trace from a namespace on the other side, or observe that host too (--snapshot may be repeated)")

    def ingress(self, ns: dict, link: dict, pkt: Packet, nexthop: str, encap: Packet | None):
        n = self.hop(ns, link["name"], link["kind"], "ingress")
        self.check_link(ns, link, n)
        if link["kind"] == "veth" and self.size and link.get("mtu"):
            size = self.size + HEADERS.get(self.proto, 28) + (VXLAN_OVERHEAD if encap else 0)
            if size > link["mtu"]:  # a veth drops a frame larger than its own MTU on receipt, with no ICMP
                raise Stop("blocked", "MTU_BLACKHOLE",
                           f"a {size}-byte packet arrives on {link['name']} in {ns['label']}, whose MTU is {link['mtu']}: "
                           "a veth drops frames larger than its MTU on receipt, silently (no ICMP tells the sender)",
                           self.mtu_fix(ns, link, size, encap),
                           [{"kind": "mtu", "detail": f"{ns['label']} {link['name']} mtu {link['mtu']} < packet {size} (on receipt)"}])
        if link.get("master"):
            return self.bridge_in(ns, link, pkt, nexthop, encap)
        return self.l3_in(ns, link["name"], pkt, encap)

    # -- bridges -------------------------------------------------------------------------------------
    def bridge_port_for(self, ns: dict, bridge: dict, ip: str, exclude: str | None) -> tuple[dict, dict]:
        holders = set(self.model.owners_of(ip)) if not ip.startswith("127.") else set()
        owners = []
        for port in ns["links"]:
            if port.get("master") != bridge["name"] or port["name"] == exclude:
                continue
            if port["kind"] == "vxlan":
                owners.append((port, None))
                continue
            if (port.get("peer") or {}).get("ns") in holders:  # known without reading the peer
                owners.append((port, self.model.namespaces[port["peer"]["ns"]]))
        real = [o for o in owners if o[1] is not None]
        if len(real) > 1:
            names = ", ".join(o[1]["label"] for o in real)
            # the conflict shows where the address is resolved: the namespace that routed the packet
            # here picks one MAC for it (its ARP entry), and the frame goes to whoever answered first
            resolver = self.last_route[0] if self.last_route else ns
            out = next((h for h in reversed(self.hops) if h["namespace"] == resolver["id"] and h["direction"] == "egress"), None)
            self.blocked_hop = out["n"] if out else None
            entry = next((x for x in resolver["neighbours"] if x["address"] == ip and x.get("lladdr")), None)
            uses = next((o[1]["label"] for o in real if entry and (o[0].get("peer") or {}).get("name") and
                         (self.model.link(o[1], o[0]["peer"]["name"]) or {}).get("mac") == entry["lladdr"]), None)
            raise Stop("blocked", "ADDRESS_CONFLICT",
                       f"{ip} is configured in {len(real)} namespaces on bridge {bridge['name']}: {names}; "
                       f"{resolver['label']} resolves it to " + (f"{entry['lladdr']} ({uses or 'neither'})" if entry else "whichever answers ARP first"),
                       self.conflict_fix(ip, [o[1] for o in real], resolver, entry),
                       [{"kind": "address", "detail": f"{o[1]['label']} has {ip}"} for o in real]
                       + ([{"kind": "neighbour", "detail": f"{resolver['label']}: {ip} lladdr {entry['lladdr']} {entry['state']}"}] if entry else []))
        if real:
            return real[0]
        vx = [o for o in owners if o[1] is None]
        if vx:
            return vx[0]
        raise Stop("blocked", "NO_NEIGHBOR", f"nothing on bridge {bridge['name']} in {ns['label']} has the address {ip}",
                   self.neighbour_fix(ns, bridge, ip),
                   [{"kind": "bridge", "detail": f"ports of {bridge['name']}: " + ", ".join(
                       p["name"] for p in ns["links"] if p.get("master") == bridge["name"])}])

    def conflict_fix(self, ip: str, holders: list[dict], resolver: dict | None = None, entry: dict | None = None) -> Fix:
        """Remove the address from the namespaces that should not have it, and make the resolver
        forget the MAC it learnt for it where that is not the real holder's. The real one is, in
        order: the one the runtime gave the address to; the one whose socket serves the flow's
        port; not the one the failing flow goes to now (the resolver's entry); one that serves
        anything."""
        def recorded(ns):
            c = self.model.container_of(ns) or {}
            return any(n.get("ip") == ip for n in (c.get("networks") or {}).values())

        def serves(ns, port=None):
            return any(x["proto"] == self.proto and (port is None or x["port"] == port) and not x.get("loopback_only")
                       for x in ns.get("sockets", []))

        def mac(ns):
            a = next(a for a in ns["addresses"] if a["address"] == ip)
            return (self.model.link(ns, a["ifname"]) or {}).get("mac")
        tests = [recorded, lambda n: self.proto != "icmp" and serves(n, self.dport),
                 lambda n: not entry or mac(n) != entry["lladdr"], serves]
        real = holders[0]
        for test in tests:
            fits = [n for n in holders if test(n)]
            if len(fits) == 1:
                real = fits[0]
                break
        extra = [n for n in holders if n is not real]
        cmds, edits = [], []
        for ns in extra:
            a = next(a for a in ns["addresses"] if a["address"] == ip)
            cmds.append(fixes.in_ns(ns, ["ip", "addr", "del", f"{ip}/{a['prefixlen']}", "dev", a["ifname"]]))

            def drop(model, ov, ns_id=ns["id"]):
                e = ov.edit(ns_id)
                e["addresses"] = [x for x in e["addresses"] if x["address"] != ip]
            edits.append(drop)
        right = mac(real)
        if resolver is not None and entry is not None and entry["lladdr"] != right:
            if "PERMANENT" in entry["state"] and right:  # a static entry stays static, with the right MAC
                cmds.append(fixes.in_ns(resolver, ["ip", "neigh", "replace", ip, "lladdr", right, "dev", entry["ifname"], "nud", "permanent"]))
                edits.append(fixes.add_neighbour(resolver["id"], entry["ifname"], ip, right))
            else:  # learnt: forget it, the next packet asks again and only the real one answers
                cmds.append(fixes.in_ns(resolver, ["ip", "neigh", "flush", "to", ip, "dev", entry["ifname"]]))

                def forget(model, ov, ns_id=resolver["id"], dev=entry["ifname"]):
                    e = ov.edit(ns_id)
                    e["neighbours"] = [x for x in e["neighbours"] if not (x["address"] == ip and x["ifname"] == dev)]
                edits.append(forget)

        def apply(model, ov):
            for edit in edits:
                edit(model, ov)
        return Fix(" && ".join(cmds), apply,
                   advice=f"{real['label']} keeps {ip}; " + ", ".join(n["label"] for n in extra) + " gives it up"
                   + (f", and {resolver['label']} forgets the MAC it learnt for it" if len(cmds) > len(extra) else ""))

    def neighbour_fix(self, ns: dict, bridge: dict, ip: str) -> Fix:
        """A wrong gateway: route via the bridge's own address. Else name who is on the bridge."""
        here = [a for a in ns["addresses"] if a["ifname"] == bridge["name"]]
        if self.last_route and self.last_route[1].gateway == ip and here:
            sender, route = self.last_route
            gw = here[0]["address"]
            dst = route.dst if route.dst != "0.0.0.0/0" else "default"
            return Fix(fixes.in_ns(sender, ["ip", "route", "replace", dst, "via", gw, "dev", route.dev]),
                       fixes.replace_route(sender["id"], dst, gw, route.dev))
        holders = [f"{a['address']} ({n['label']})" for p in ns["links"] if p.get("master") == bridge["name"]
                   for n in [self.model.namespaces.get((p.get("peer") or {}).get("ns"))] if n
                   for a in n["addresses"] if not a["address"].startswith("127.")]
        return Fix(advice=f"use an address that is on bridge {bridge['name']}: " + (", ".join(holders) or "none is"),
                   why_unchecked=f"nothing owns {ip}: start the container that should have it, or correct the address")

    def bridge_in(self, ns: dict, port: dict, pkt: Packet, nexthop: str, encap: Packet | None):
        bridge = self.model.link(ns, port["master"])
        n = self.hop(ns, bridge["name"], "bridge", "forward")
        self.check_link(ns, bridge, n)
        if routing.is_local(ns, nexthop):  # addressed to this host (its gateway address): up to layer 3
            return self.l3_in(ns, bridge["name"], pkt, encap)
        out, _ = self.bridge_port_for(ns, bridge, nexthop, exclude=port["name"])
        bp = replace(pkt, iif=port["name"], oif=out["name"])
        res = self.nft(ns, "forward", bp, chain_type=None, families=("bridge",))
        if res.verdict == "drop":
            self.hop(ns, out["name"], "firewall", "bridge forward", res.deciding.text if res.deciding else "")
            raise self.firewall_stop(ns, "bridge forward", replace(pkt, iif=bridge["name"], oif=bridge["name"]), res.deciding)
        if ns.get("sysctls", {}).get("net.bridge.bridge-nf-call-iptables") == "1":
            self.filter(ns, "forward", replace(pkt, iif=bridge["name"], oif=bridge["name"]))
        return self.out_port(ns, bridge, out, pkt, nexthop, encap)

    def out_port(self, ns: dict, bridge: dict, port: dict, pkt: Packet, nexthop: str, encap: Packet | None):
        n = self.hop(ns, port["name"], port["kind"], "egress", f"port of {bridge['name']}")
        self.check_link(ns, port, n)
        self.check_mtu(ns, port, pkt, encap, bridged=True)  # a bridge drops frames larger than the port's MTU, silently
        if port["kind"] == "vxlan":
            return self.vxlan_out(ns, port, pkt, nexthop)
        pair = self.model.peer(ns, port)
        if not pair:
            raise Stop("unknown", None, f"the other end of {port['name']} is not observable")
        return self.ingress(*pair, pkt, nexthop, encap)

    # -- layer 3 in a namespace ----------------------------------------------------------------------
    def l3_in(self, ns: dict, ifname: str, pkt: Packet, encap: Packet | None):
        mode = routing.rp_filter_mode(ns, ifname)
        if mode and not pkt.src.startswith("127."):
            back = routing.lookup(ns, pkt.src)
            if (mode == 1 and back.dev != ifname and back.type != "local") or (mode == 2 and back.type == "none"):
                self.hop(ns, ifname, "rp_filter", "ingress", f"rp_filter={mode}")
                raise Stop("blocked", "RP_FILTER",
                           f"{ns['label']} drops packets from {pkt.src} arriving on {ifname}: its route back to {pkt.src} "
                           f"goes {('via ' + back.dev) if back.dev else 'nowhere'} and rp_filter={mode} "
                           f"({'strict: the same interface' if mode == 1 else 'loose: some route back'}) is required",
                           self.rp_fix(ns, ifname, pkt.src, back, mode),
                           [{"kind": "sysctl", "detail": f"net.ipv4.conf.{ifname}.rp_filter / all.rp_filter -> {mode}"},
                            {"kind": "route", "detail": f"reverse lookup {pkt.src} -> {back.text}"}])
        pkt = replace(pkt, iif=ifname, oif=None)
        # every chain on the hook in priority order: a raw-priority filter runs before DNAT
        res = self.nft(ns, "prerouting", pkt, chain_type=None)
        if res.verdict == "drop":
            self.hop(ns, ifname, "firewall", "prerouting", res.deciding.text if res.deciding else "")
            raise self.firewall_stop(ns, "prerouting", pkt, res.deciding)
        if (res.packet.dst, res.packet.dport) != (pkt.dst, pkt.dport):
            dnat = next((st for st in res.steps if st.verdict == "dnat"), res.steps[-1] if res.steps else None)
            self.note("dnat", f"{ns['label']}: {pkt.dst}:{pkt.dport} rewritten to {res.packet.dst}:{res.packet.dport}",
                      rule=dnat.text if dnat else "")
            self.nat_done(ns, "dnat", (pkt.dst, pkt.dport), (res.packet.dst, res.packet.dport),
                          dnat if dnat is not None and dnat.verdict == "dnat" else None)
            pkt = res.packet
        pkt = self.un_nat(ns, "snat", pkt)  # the reply: conntrack's de-SNAT at prerouting (NAT chains do not run)
        route = self.route(ns, pkt.dst, pkt.src, ifname)
        if route.type == "local":
            return self.input(ns, pkt, encap)
        if not routing.forwarding_enabled(ns, ifname):
            sysctls = ns.get("sysctls", {})
            # the receiving interface's forwarding decides; ip_forward=1 turns it on for every interface
            per_if = f"net.ipv4.conf.{ifname}.forwarding"
            knob = per_if if sysctls.get("net.ipv4.ip_forward") == "1" and sysctls.get(per_if) == "0" else "net.ipv4.ip_forward"
            self.hop(ns, ifname, "forward", "forward", f"{knob}=0")

            def enable(model, ov, ns_id=ns["id"], knob=knob):
                values = ov.edit(ns_id).setdefault("sysctls", {})
                values[knob] = "1"
                if knob == "net.ipv4.ip_forward":  # like the kernel: every interface follows
                    for key in list(values):
                        if key.endswith(".forwarding"):
                            values[key] = "1"
            raise Stop("blocked", "FORWARDING_DISABLED",
                       f"{ns['label']} receives the packet for {pkt.dst} on {ifname} but does not forward it: {knob}=0",
                       Fix(fixes.in_ns(ns, ["sysctl", "-w", f"{knob}=1"]), enable),
                       [{"kind": "sysctl", "detail": f"{ns['label']}: {knob}={sysctls.get(knob)}"
                         + (f" (net.ipv4.ip_forward={sysctls.get('net.ipv4.ip_forward')})" if knob != "net.ipv4.ip_forward" else "")}])
        fwd = replace(pkt, oif=route.dev)
        self.filter(ns, "forward", fwd)
        fwd = self.postrouting(ns, fwd, route)
        return self.egress(ns, route, fwd, encap)

    def rp_fix(self, ns: dict, ifname: str, src: str, back: routing.Route, mode: int) -> Fix:
        """The route back through the interface the packet came in on, via the neighbour that sent it
        (replies take that route too, so this is the fix that makes the path work both ways);
        loose mode is the alternative, and only helps where replies still find their way."""
        prev = next((h for h in reversed(self.hops) if h["namespace"] != ns["id"]), None)
        sender = self.model.namespaces.get(prev["namespace"]) if prev else None
        gw = next((a["address"] for a in (sender or {}).get("addresses", []) if a["ifname"] == prev["interface"]), None) if prev else None
        loose = fixes.in_ns(ns, ["sysctl", "-w", f"net.ipv4.conf.{ifname}.rp_filter=2"])
        why = (f"loose mode only needs some route back: the effective value is the larger of net.ipv4.conf.all.rp_filter "
               f"and net.ipv4.conf.{ifname}.rp_filter, and replies to {src} still follow the route table")
        if gw and back.type != "local":
            dst = back.dst if back.type != "none" and back.dst not in ("default", "0.0.0.0/0") else f"{src}/32"
            return Fix(fixes.in_ns(ns, ["ip", "route", "replace", dst, "via", gw, "dev", ifname]),
                       fixes.replace_route(ns["id"], dst, gw, ifname),
                       advice=f"route {dst} back through {ifname}, where its packets arrive", alternatives=[f"{loose} ({why})"])
        return Fix(loose, fixes.set_sysctl(ns["id"], f"net.ipv4.conf.{ifname}.rp_filter", "2"), advice=why)

    def input(self, ns: dict, pkt: Packet, encap: Packet | None):
        self.filter(ns, "input", pkt)
        vx = self.vxlan_device_for(ns, pkt)
        if vx is not None:
            return self.vxlan_in(ns, vx, encap)
        if self.leg == "reply":
            pkt = self.un_nat(ns, "dnat", pkt)
            self.hop(ns, self.proto, "socket", "deliver", "the reply reaches the probe's socket")
            return {"ns": ns, "pkt": pkt}, pkt
        return self.deliver(ns, pkt), pkt

    def deliver(self, ns: dict, pkt: Packet) -> dict:
        self.hop(ns, f"{self.proto}/{pkt.dport}" if self.proto != "icmp" else "icmp", "socket", "deliver")
        if self.proto == "icmp":
            return {"ns": ns, "pkt": pkt}
        socks = [s for s in ns.get("sockets", []) if s["proto"] == self.proto and s["port"] == pkt.dport]
        fits = [s for s in socks if s["local"] in (pkt.dst, "0.0.0.0", "::") or s["local"] == f"::ffff:{pkt.dst}"]
        if fits:
            s = fits[0]
            self.note("socket", f"{ns['label']}: {s.get('process') or 'a process'} listens on {s['local']}:{s['port']}/{s['proto']}")
            return {"ns": ns, "pkt": pkt}
        loop = [s for s in socks if s.get("loopback_only")]
        if ns["kind"] == "host" and not pkt.dst.startswith("127."):
            self.published_on_loopback(pkt)  # that listener is the runtime's proxy (docker-proxy): the runtime's fix
        if loop and not pkt.dst.startswith("127."):
            s = loop[0]
            who = s.get("process") or "the server"
            raise Stop("blocked", "LISTENER_LOOPBACK_ONLY",
                       f"{who} in {ns['label']} is listening only on {s['local']}:{s['port']}, so connections to {pkt.dst}:{pkt.dport} are refused",
                       _loopback_listener_fix(self.model, ns, s, who, fixes.listen_everywhere(ns["id"], self.proto, s["port"])),
                       [{"kind": "socket", "detail": f"{ns['label']}: {s['proto']} {s['local']}:{s['port']} ({who})"}])
        if ns["kind"] == "host":
            self.unpublished(pkt)
        ports = sorted({s["port"] for s in ns.get("sockets", []) if s["proto"] == self.proto and not s.get("loopback_only")})
        dnat = self.wrong_dnat(ns, pkt)
        raise Stop("blocked", "NO_LISTENER", f"nothing in {ns['label']} listens on {self.proto} port {pkt.dport}"
                   + (f" ({dnat[0]['label']}'s DNAT sends {dnat[2][0]}:{dnat[2][1]} there)" if dnat else "")
                   + (": the connection is refused" if self.proto == "tcp" else ": ICMP port unreachable comes back"),
                   self.dnat_port_fix(ns, pkt, dnat, ports) if dnat else
                   Fix(advice=f"start the server in {ns['label']} on port {pkt.dport}"
                       + (f", or use a port it listens on: {', '.join(map(str, ports))}" if ports else "")
                       + " (manual: nothing listens there, and which program should, with what command, is the "
                         "application's; netdiag cannot know it, so no command is given)",
                       why_unchecked="starting a server is not a change of the network model"),
                   [{"kind": "socket", "detail": f"{ns['label']} listens on: " + (", ".join(
                       f"{s['local']}:{s['port']}/{s['proto']}" for s in ns.get("sockets", [])) or "nothing")}])

    def wrong_dnat(self, ns: dict, pkt: Packet) -> tuple | None:
        """The plain DNAT rule (no runtime's published port) that sent the request to this port, a
        port other than the one it came to: (namespace, rule, before)."""
        for at, rule, before, after in reversed(self.dnat_rules):
            if after == (pkt.dst, pkt.dport) and before[1] != pkt.dport and not self.published_port(at, before):
                return at, rule, before
        return None

    def published_port(self, ns: dict, addr: tuple) -> bool:
        return ns["kind"] == "host" and any(p["proto"] == self.proto and p["host_port"] <= addr[1] <= (p.get("host_end") or p["host_port"])
                                            for c in self.model.containers() for p in c.get("ports", []))

    def dnat_port_fix(self, ns: dict, pkt: Packet, dnat: tuple, ports: list[int]) -> Fix:
        """Change the DNAT rule's port to one the server listens on: the published port itself when
        it listens there (the rule translated a port it should have kept), else its only one."""
        at, rule, before = dnat
        port = before[1] if before[1] in ports else ports[0] if len(ports) == 1 else None
        command, apply = fixes.retarget_dnat(at, rule, port) if port is not None else ("", None)
        if not command:
            why = (f"nothing listens in {ns['label']} at all: start the server first" if not ports else
                   "which one only the service's configuration can say, so no command is given" if port is None else
                   "netdiag cannot write this rule back as a command")
            return Fix(advice=f"manual: change the DNAT rule {rule.text!r} in {at['label']} ({rule.family} {rule.table} "
                              f"{rule.chain}) to a port {ns['label']} listens on ({', '.join(map(str, ports)) or 'none'}); {why}",
                       why_unchecked=why)
        return Fix(command, apply, advice=f"DNAT to {pkt.dst}:{port}, where {ns['label']} listens",
                   namespaces=[at["id"]])

    def published_on_loopback(self, pkt: Packet) -> None:
        """A container publishes this port, but on a loopback address only (`-p 127.0.0.1:P:P`): from
        any other address the port is not published. The fix is the runtime's (publish it on every
        address), never a restart of its proxy, a process the runtime owns."""
        for c in self.model.containers():
            for p in c.get("ports", []):
                end = p.get("host_end") or p["host_port"]
                if not (p["proto"] == pkt.proto and p["host_port"] <= pkt.dport <= end and str(p.get("host_ip") or "").startswith("127.")):
                    continue
                cmd = fixes.publish_everywhere(c, p)
                flag = f"-p {p['host_ip']}:{p['host_port']}:{p['ctr_port']}"
                raise Stop("blocked", "PORT_NOT_PUBLISHED",
                           f"{c['name']} publishes port {pkt.dport} on {p['host_ip']} only ({flag}): to {pkt.dst}:{pkt.dport} "
                           "no published port forwards it, and nothing else listens there",
                           Fix(cmd, advice=f"recreate {c['name']} publishing {p['host_port']}:{p['ctr_port']} on every address "
                               f"(same image and command)" if cmd else
                               f"recreate {c['name']} with -p {p['host_port']}:{p['ctr_port']} instead of {flag} ({fixes.NO_IMAGE})",
                               why_unchecked="publishing adds a DNAT rule and a new container, which the model cannot add"),
                           [{"kind": "port", "detail": f"container {c['name']} ({c.get('runtime')}) publishes "
                             f"{p['host_ip']}:{p['host_port']}->{p['ctr_port']}/{p['proto']}"}])

    def unpublished(self, pkt: Packet) -> None:
        """Nothing on the host has the port: is there a container that serves it but was never
        published? One listening on that very port, else one that publishes nothing at all."""
        def listening(c):
            socks = self.model.namespaces[c["ns"]].get("sockets", []) if c.get("ns") in self.model.namespaces else []
            return sorted({s["port"] for s in socks if s["proto"] == self.proto and not s.get("loopback_only")})

        same = [c for c in self.model.containers() if pkt.dport in listening(c)]
        bare = [(c, listening(c)) for c in self.model.containers() if not c.get("ports") and listening(c)]
        if same:
            c, port, who = same[0], pkt.dport, ", ".join(c["name"] for c in same) + f" listen(s) on {pkt.dport} inside the container"
        elif len(bare) == 1 and len(bare[0][1]) == 1:
            (c, (port,)), who = bare[0], f"{bare[0][0]['name']} listens on {bare[0][1][0]} but publishes no port"
        else:
            return
        raise Stop("blocked", "PORT_NOT_PUBLISHED",
                   f"nothing on the host listens on {pkt.dst}:{pkt.dport}, and no published port forwards it; {who}",
                   Fix(fixes.recreate(c, "-p", f"{pkt.dport}:{port}"),
                       advice=f"recreate {c['name']} with -p {pkt.dport}:{port} (same image and command)"
                       + ("" if c.get("image") else f" ({fixes.NO_IMAGE})"),
                       why_unchecked="publishing adds a DNAT rule and a new container, which the model cannot add"),
                   [{"kind": "socket", "detail": f"container {c['name']} listens on {port}/{self.proto} and publishes "
                     + (", ".join(f"{p['host_port']}->{p['ctr_port']}" for p in c.get("ports") or []) or "nothing")}])

    # -- VXLAN ----------------------------------------------------------------------------------------
    def vxlan_out(self, ns: dict, dev: dict, pkt: Packet, nexthop: str):
        v = dev.get("vxlan") or {}
        mac = self.mac_of(nexthop)
        fdb = [f for f in ns["fdb"] if f["ifname"] == dev["name"] and f.get("dst")]
        chosen = [f for f in fdb if mac and f["lladdr"] == mac] or [f for f in fdb if f["lladdr"] == "00:00:00:00:00:00"]
        want = (overlay.expected(self.model, dev) or {}).get(mac or "")
        if v.get("proxy") and want and not any(n["address"] == nexthop and n.get("lladdr") for n in ns["neighbours"]
                                               if n["ifname"] == dev["name"]):
            raise Stop("blocked", "OVERLAY_PEER_UNKNOWN",
                       f"{dev['name']} (VNI {v.get('vni')}) in {ns['label']} answers ARP for remote endpoints from its neighbour "
                       f"table (proxy), which has no entry for {nexthop} ({want['name']} on {want['host']}): the sender never "
                       "learns its MAC",
                       Fix(fixes.in_ns(ns, ["ip", "neigh", "replace", nexthop, "lladdr", mac, "dev", dev["name"], "nud", "permanent"]),
                           fixes.add_neighbour(ns["id"], dev["name"], nexthop, mac), advice=overlay.agent_note(self.model, dev)),
                       [{"kind": "neighbour", "detail": f"{dev['name']}: no ARP entry for {nexthop}; the cluster store lists "
                         f"{want['name']} {nexthop} {mac} on {want['host']} ({want['vtep']})"}])
        if want and chosen and not any(f["dst"] == want["vtep"] for f in chosen):
            raise Stop("blocked", "OVERLAY_PEER_UNKNOWN",
                       f"{dev['name']} (VNI {v.get('vni')}) in {ns['label']} sends {nexthop} (MAC {mac}) to {chosen[0]['dst']}, but the "
                       f"cluster store says {want['name']} lives on {want['host']} at VTEP {want['vtep']}: a stale forwarding entry",
                       Fix(fixes.in_ns(ns, ["bridge", "fdb", "replace", mac, "dev", dev["name"], "dst", want["vtep"], "self", "permanent"]),
                           fixes.add_fdb(ns["id"], dev["name"], mac, want["vtep"], replace_all=True),
                           advice=overlay.agent_note(self.model, dev)),
                       [{"kind": "fdb", "detail": f"{dev['name']}: {mac} dst {chosen[0]['dst']} (stale)"},
                        {"kind": "cluster", "detail": f"the store: {want['name']} {nexthop} {mac} on {want['host']} (VTEP {want['vtep']})"}])
        if not chosen:
            raise Stop("blocked", "OVERLAY_PEER_UNKNOWN",
                       f"{dev['name']} (VNI {v.get('vni')}) in {ns['label']} has no forwarding entry for {nexthop}"
                       + (f" (MAC {mac})" if mac else "") + ": it does not know which host to send it to",
                       self.fdb_fix(ns, dev, nexthop, mac),
                       [{"kind": "fdb", "detail": f"{dev['name']}: " + (", ".join(f"{f['lladdr']} dst {f['dst']}" for f in fdb) or "no entries")}])
        remote = chosen[0]["dst"]
        # the outer packet carries DF when the device says so, or inherits it from our DF probe
        self.outer_df = v.get("df") in ("set", "inherit") and bool(self.size)
        outer = Packet(src=v.get("local") or "0.0.0.0", dst=remote, proto="udp", sport=EPHEMERAL_SPORT, dport=v.get("port") or 4789,
                       length=pkt.length + VXLAN_OVERHEAD)
        who = f" ({want['name']} on {want['host']}, as the cluster store lists it)" if want else ""
        self.note("vxlan", f"{ns['label']}: {dev['name']} VNI {v.get('vni')} encapsulates to {remote}:{v.get('port') or 4789}{who}; "
                  f"outer UDP {outer.src}:{outer.sport}-{outer.sport + 1000} -> {remote}:{outer.dport} (the source port hashes the inner flow)")
        try:
            return self.output(ns, outer, encap=pkt)
        except Stop as stop:
            # past the far end's decapsulation a failure is that host's own (a missing listener...)
            if stop.cause in ("MTU_BLACKHOLE",) or stop.verdict != "blocked" or self.decapsulated:
                raise
            raise Stop("blocked", "UNDERLAY_UNREACHABLE",
                       f"the VXLAN peer {remote} cannot be reached from {ns['label']} over the underlay: {stop.summary}",
                       stop.fix, stop.evidence) from None

    def fdb_fix(self, ns: dict, dev: dict, nexthop: str, mac: str | None) -> Fix:
        """The FDB entry that sends `nexthop`'s MAC to the VTEP of the host that has it: a namespace
        with a VXLAN device of the same VNI that bridges the owner of `nexthop`."""
        vni = (dev.get("vxlan") or {}).get("vni")
        owners = set(self.model.owners_of(nexthop))
        vtep = ((overlay.expected(self.model, dev) or {}).get(mac or "") or {}).get("vtep")
        for meta in self.model.metas():
            other = self.model.namespaces.get(meta["id"]) if meta["id"] != ns["id"] else None
            for link in (other or {}).get("links", []) if vtep is None else []:
                v = link.get("vxlan") or {}
                peers = {(p.get("peer") or {}).get("ns") for p in other["links"] if p.get("master") == link.get("master")}
                if v.get("vni") == vni and (peers & owners or not owners):
                    vtep = v.get("local") or next((a["address"] for a in other["addresses"] if a.get("scope") == "global"), None)
        lladdr = mac or "00:00:00:00:00:00"
        if vtep is None:
            return Fix(advice=f"add an FDB entry on {dev['name']} in {ns['label']} for {lladdr} that points at the VTEP (underlay) "
                       f"address of the host that runs {nexthop}: `bridge fdb append {lladdr} dev {dev['name']} dst` and that address "
                       f"(manual: no observed namespace has a VXLAN device with VNI {vni} next to {nexthop}, so netdiag does not "
                       "know that address and gives no command)",
                       why_unchecked=f"no observed namespace has a VXLAN device with VNI {vni} next to {nexthop}")
        return Fix(fixes.in_ns(ns, ["bridge", "fdb", "append", lladdr, "dev", dev["name"], "dst", vtep]),
                   fixes.add_fdb(ns["id"], dev["name"], lladdr, vtep), advice=overlay.agent_note(self.model, dev))

    def vxlan_device_for(self, ns: dict, pkt: Packet) -> dict | None:
        if pkt.proto != "udp":
            return None
        for link in ns["links"]:
            v = link.get("vxlan")
            if v and (v.get("port") or 4789) == pkt.dport and (not v.get("local") or v["local"] == pkt.dst):
                return link
        return None

    def vxlan_in(self, ns: dict, dev: dict, inner: Packet | None):
        if inner is None:
            raise Stop("unknown", None, f"a VXLAN packet reached {dev['name']} in {ns['label']}, but its inner packet is unknown")
        n = self.hop(ns, dev["name"], "vxlan", "ingress", f"decapsulated VNI {dev['vxlan'].get('vni')}")
        self.decapsulated = True
        self.check_link(ns, dev, n)
        if dev.get("master"):
            return self.bridge_in(ns, dev, inner, inner.dst, None)
        return self.l3_in(ns, dev["name"], inner, None)

    def mac_of(self, ip: str) -> str | None:
        for ns_id in self.model.owners_of(ip):
            ns = self.model.namespaces[ns_id]
            for a in ns["addresses"]:
                if a["address"] == ip:
                    link = self.model.link(ns, a["ifname"])
                    return link["mac"] if link else None
        ep = self.model.cluster_endpoint(ip)  # a remote endpoint: the store knows its MAC
        return ep["mac"] if ep else None


def _arp_on(ns_id: str, ifname: str):
    """`ip link set IF arp on` on a model copy."""
    def apply(model, ov):
        for link in ov.edit(ns_id)["links"]:
            if link["name"] == ifname:
                link["flags"] = [f for f in link.get("flags", []) if f != "NOARP"]
    return apply


def _rfc1918(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def destination_ip(model: Model, src_ns: dict, dst: str) -> str | None:
    """DST as an address: an IP as given; a container or namespace by the address it shares a subnet
    with the source on, else its first non-loopback address; None when it has none (--network none)."""
    try:
        return str(ipaddress.ip_address(dst))
    except ValueError:
        pass
    try:
        ns = model.resolve(dst)
    except NotFound:
        ep = model.cluster_endpoint(dst)  # a container on another host of the cluster: its address from the store
        if ep is None:
            raise
        return ep["ip"]
    mine = [ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in src_ns["addresses"]]
    addrs = [a["address"] for a in ns["addresses"] if not a["address"].startswith("127.")]
    for a in addrs:
        if any(ipaddress.ip_address(a) in net for net in mine):
            return a
    return addrs[0] if addrs else None


def _loopback_listener_fix(model: Model, ns: dict, s: dict, who: str, apply) -> Fix:
    """A listener bound to a loopback address: where the container's own command names that address
    (`httpd -p 127.0.0.1:80`), recreate it with 0.0.0.0 there; else say what to change, and why no
    command is given (only the program's configuration or command line sets where it listens)."""
    c = model.container_of(ns)
    cmd = ""
    if c and any(s["local"] in arg for arg in c.get("command") or []):
        cmd = fixes.recreate({**c, "command": [a.replace(s["local"], "0.0.0.0") for a in c["command"]]})
    if cmd:
        return Fix(cmd, apply, advice=f"recreate {c['name']} with its command listening on 0.0.0.0 instead of {s['local']}")
    return Fix(apply=apply, advice=f"restart {who} in {ns['label']} listening on 0.0.0.0:{s['port']} (all addresses) instead of "
               f"{s['local']}" + (f" (its pid is {s['pid']})" if s.get("pid") else "")
               + " (manual: only the program's own configuration or command line sets the address it listens on, so no command "
               "is given)")


def _container_with(model: Model, ip: str) -> dict | None:
    return next((c for c in model.containers() if any(n.get("ip") == ip for n in (c.get("networks") or {}).values())), None)


def _none_fix(model: Model, ns: dict, peer: dict | None) -> Fix:
    """Recreate a --network none container on a network that reaches `peer` (the container at the
    flow's other end, if any): the server's own network, not the default bridge, which reaches no
    user-defined network."""
    c = model.container_of(ns)
    net = fixes.network_towards(c, peer)
    cmd = fixes.recreate(c, network=net) if c else ""
    on = f"network {net}" + (f", where {peer['name']} is" if peer and net in (peer.get("networks") or {}) else "")
    advice = f"recreate {ns['name']} on {on} (a --network none container cannot be connected later)" if cmd else \
        f"recreate {ns['name']} with --network {net} (manual: " + \
        (f"{fixes.NO_IMAGE.removeprefix('manual: ')})" if c else "it is no container netdiag knows)")
    return Fix(cmd, advice=advice, why_unchecked="recreating a container is not a change of the network model")


def _with_lost_routes(model: Model, fix: Fix, src: str, dst: str, proto: str, port: int, size: int) -> Fix:
    """A link set down loses its routes (the kernel deletes every route through it); setting it up
    again brings back only the prefix routes of its addresses. When, with the link up on a copy of
    the model, the path still needs a route in a namespace the fix touches, the fix adds it too."""
    touched = set(fix.namespaces)
    copy, ov = model.overlay()
    try:
        fix.apply(copy, ov)
        after, more = run_static(copy, src, dst, proto=proto, port=port, size=size)
    except Exception:  # noqa: BLE001 - the plain fix stands; fixes.check reports what it does
        return fix
    hop = after["hops"][after["blocked_at"] - 1] if after.get("blocked_at") else None
    if after["cause"] != "NO_ROUTE" or hop is None or hop["namespace"] not in touched or more is None \
            or not more.command or more.apply is None:
        return fix
    first, second = fix.apply, more.apply

    def apply(m, o):
        first(m, o)
        second(m, o)
    return Fix(f"{fix.command} && {more.command}", apply,
               advice=f"set the link up, and add the route the kernel deleted with it ({more.advice or more.command})")


def run_static(model: Model, src: str, dst: str, *, proto: str = "tcp", port: int = 0, size: int = 0) -> tuple[dict, Fix | None]:
    """The static verdict as the JSON object of the diagnosis contract, and the fix as an object
    (its command is the JSON's "fix"; diagnose.py checks it on a copy of the model)."""
    src_ns = model.resolve(src)
    dst_ip = destination_ip(model, src_ns, dst)
    t = Trace(model, proto, port, size, src_ns=src_ns)
    verdict, cause, summary, fix, blocked_at, reply = "delivered", None, "", None, None, None
    try:
        if dst_ip is None:
            ns = model.resolve(dst)
            t.hop(ns, "lo", "loopback", "ingress", "no interface but lo")
            raise Stop("blocked", "NETWORK_NONE", f"{ns['label']} has no network interface but lo (--network none): "
                       "nothing can reach it over the network", _none_fix(model, ns, model.container_of(src_ns)),
                       [{"kind": "link", "detail": f"{ns['label']} links: " + ", ".join(link["name"] for link in ns["links"])}])
        end, pkt = t.run(src_ns, dst_ip)
        summary = f"{proto.upper()} {'port ' + str(port) + ' ' if proto != 'icmp' else ''}from {src_ns['label']} reaches {end['ns']['label']}"
        if pkt.dst != dst_ip or pkt.dport != port:
            summary += f" (via {pkt.dst}:{pkt.dport})" if proto != "icmp" else f" (via {pkt.dst})"
        forward = len(t.hops)
        what = REPLY_WORDS.get(proto, "reply")
        back = "delivered"
        try:
            t.reply(end["ns"], pkt)
            summary += f", and the {what} gets back"
        except Stop as stop:
            back = "unknown"
            if stop.verdict == "blocked":
                if stop.cause not in ("NO_NAT",):
                    stop.summary = f"the request reaches {end['ns']['label']}, but the {what} does not get back: {stop.summary}" \
                        if not stop.summary.startswith("the request reaches") else stop.summary
                raise
            t.note("reply", f"the {what}'s way back was not followed to the end: {stop.summary}")
        except Exception as e:  # noqa: BLE001 - the request's verdict stands; the reply's walk failing is evidence
            back = "unknown"
            t.note("reply", f"the {what}'s way back could not be followed: {type(e).__name__}: {e}")
        reply_hops = t.hops[forward:]
        del t.hops[forward:]  # a delivered round trip: the request's hops, the reply's way apart
        reply = {"verdict": back, "hops": reply_hops}
    except Stop as stop:
        verdict, cause, summary, fix = stop.verdict, stop.cause, stop.summary, stop.fix
        t.evidence.extend(stop.evidence)
        if cause == "LINK_DOWN" and fix is not None and fix.apply is not None:
            fix = _with_lost_routes(model, fix, src, dst, proto, port, size)
        blocked_at = t.blocked_hop or (len(t.hops) if t.hops else None)
    result = {"verdict": verdict, "cause": cause, "summary": sentence(summary, [h["label"] for h in t.hops] + [h.get("interface") or "" for h in t.hops] + [src_ns["label"]]),
              "src": src_ns["label"], "dst": dst, "dst_ip": dst_ip, "proto": proto, "port": port, "size": size,
              "hops": t.hops, "blocked_at": blocked_at if verdict != "delivered" else None,
              "evidence": t.evidence, "fix": fix.text() if fix else "", "unevaluated_rules": t.unknown_rules, "mode": "static",
              "stale_neighbour": list(t.stale_neighbour) if t.stale_neighbour else None}
    if reply is not None:
        result["reply"] = reply
    return result, fix


def trace(model: Model, src: str, dst: str, *, proto: str = "tcp", port: int = 0, size: int = 0) -> dict:
    """The static verdict alone (see run_static)."""
    return run_static(model, src, dst, proto=proto, port=port, size=size)[0]
