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

from ..snapshot_model import Model
from ..rulesets.iptables_nft import ruleset_for
from . import attribute, fixes, hostports, overlay, routing, vpn
from .fixes import Fix
from .nftables import Packet, evaluate
from .result import Diagnosis, Evidence, FixClaim, Hop, Reply
from .stop import Stop, sentence
from .trace_delivery import DeliverySteps
from .trace_links import LinkSteps
from .trace_routes import REPLY_WORDS, RouteSteps
from .trace_vxlan import EPHEMERAL_SPORT, VxlanSteps

MAX_HOPS = 64


@dataclass
class Trace(RouteSteps, LinkSteps, DeliverySteps, VxlanSteps):
    model: Model
    proto: str
    dport: int
    size: int
    hops: list[Hop] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
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
        self.hops.append(Hop(len(self.hops) + 1, ns["id"], ns["label"], interface, kind, direction, None, detail,
                             leg="reply" if self.leg == "reply" else None))
        return len(self.hops)

    def note(self, kind: str, detail: str, **extra) -> None:
        self.evidence.append(Evidence(kind, detail, extra))

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
        if hook in ("prerouting", "output") and self.leg == "request" and "dnat" in res.packet.ct_status - pkt.ct_status:
            hostports.note_rivals(self, ns, pkt, res)  # another DNAT for the same port (pods' colliding hostPorts)
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
            size = self.wire_size(encap)
            if size > link["mtu"]:  # a veth drops a frame larger than its own MTU on receipt, with no ICMP
                raise Stop("blocked", "MTU_BLACKHOLE",
                           f"a {size}-byte packet arrives on {link['name']} in {ns['label']}, whose MTU is {link['mtu']}: "
                           "a veth drops frames larger than its MTU on receipt, silently (no ICMP tells the sender)",
                           self.mtu_fix(ns, link, size, encap),
                           [{"kind": "mtu", "detail": f"{ns['label']} {link['name']} mtu {link['mtu']} < packet {size} (on receipt)"}])
        if link.get("master"):
            return self.bridge_in(ns, link, pkt, nexthop, encap)
        return self.l3_in(ns, link["name"], pkt, encap)

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
        prev = next((h for h in reversed(self.hops) if h.namespace != ns["id"]), None)
        sender = self.model.namespaces.get(prev.namespace) if prev else None
        gw = next((a["address"] for a in (sender or {}).get("addresses", []) if a["ifname"] == prev.interface), None) if prev else None
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
        (f"{fixes.no_command(c).removeprefix('manual: ')})" if c else "it is no container netdiag knows)")
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
    hop = after.blocked_hop
    if after.cause != "NO_ROUTE" or hop is None or hop.namespace not in touched or more is None \
            or not more.command or more.apply is None:
        return fix
    first, second = fix.apply, more.apply

    def apply(m, o):
        first(m, o)
        second(m, o)
    return Fix(f"{fix.command} && {more.command}", apply,
               advice=f"set the link up, and add the route the kernel deleted with it ({more.advice or more.command})")


def run_static(model: Model, src: str, dst: str, *, proto: str = "tcp", port: int = 0, size: int = 0) -> tuple[Diagnosis, Fix | None]:
    """The static verdict as a Diagnosis, and the fix as a plan (its text is the diagnosis's fix
    text; diagnose.py checks it on a copy of the model)."""
    src_ns = model.resolve(src)
    dst_ip = destination_ip(model, src_ns, dst)
    via_node = hostports.target(model, src_ns, dst, proto, port)  # a CNI pod by its hostPort: through the node
    if via_node is not None:
        dst_ip = via_node[0]
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
        if via_node is not None and end["ns"]["id"] != via_node[1].get("ns"):
            raise hostports.conflict_stop(t, end["ns"], via_node[1], dst_ip)
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
        reply = Reply(back, reply_hops)
    except Stop as stop:
        verdict, cause, summary, fix = stop.verdict, stop.cause, stop.summary, stop.fix
        t.evidence.extend(stop.evidence)  # Stop made them Evidence
        if cause == "LINK_DOWN" and fix is not None and fix.apply is not None:
            fix = _with_lost_routes(model, fix, src, dst, proto, port, size)
        blocked_at = t.blocked_hop or (len(t.hops) if t.hops else None)
    names = [h.label for h in t.hops] + [h.interface or "" for h in t.hops] + [src_ns["label"]]
    result = Diagnosis(verdict, cause, sentence(summary, names), src_ns["label"], dst, dst_ip, proto, port, size,
                       hops=t.hops, blocked_at=blocked_at if verdict != "delivered" else None, evidence=t.evidence,
                       fix=FixClaim(fix.text() if fix else ""), unevaluated_rules=t.unknown_rules,
                       stale_neighbour=list(t.stale_neighbour) if t.stale_neighbour else None, reply=reply)
    return result, fix


def trace(model: Model, src: str, dst: str, *, proto: str = "tcp", port: int = 0, size: int = 0) -> Diagnosis:
    """The static verdict alone (see run_static)."""
    return run_static(model, src, dst, proto=proto, port=port, size=size)[0]
