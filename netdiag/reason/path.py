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

from ..model import Model
from ..observe.iptables import ruleset_for
from . import routing
from .nftables import Packet, evaluate

EPHEMERAL_SPORT = 40000
VXLAN_OVERHEAD = 50
HEADERS = {"tcp": 40, "udp": 28, "icmp": 28}
MAX_HOPS = 64


class Stop(Exception):
    """The packet dies here (or the walk cannot go on): carries the verdict."""

    def __init__(self, verdict: str, cause: str | None, summary: str, fix: str = "", evidence: list | None = None):
        super().__init__(summary)
        self.verdict, self.cause, self.summary, self.fix, self.evidence = verdict, cause, summary, fix, evidence or []


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

    # -- bookkeeping ---------------------------------------------------------------------------------
    def hop(self, ns: dict, interface: str, kind: str, direction: str, detail: str = "") -> int:
        if len(self.hops) >= MAX_HOPS:
            raise Stop("unknown", None, "the path loops (more than 64 hops)", "look for a routing loop between the namespaces listed")
        self.hops.append({"n": len(self.hops) + 1, "namespace": ns["id"], "label": ns["label"], "interface": interface,
                          "kind": kind, "direction": direction, "seen": None, "detail": detail})
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
                       f"run it on a network instead: netdiag run --network bridge ... (or 'netdiag network connect NET {src_ns['name']}')")
        pkt = Packet(src="0.0.0.0", dst=dst_ip, proto=self.proto, sport=EPHEMERAL_SPORT, dport=self.dport,
                     length=self.size or 64)
        return self.output(src_ns, pkt)

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
        if route.type in ("none", "unreachable", "blackhole", "prohibit"):
            self.hop(ns, iif or "-", "route", "lookup", route.text)
            word = "has no route to" if route.type == "none" else f"has a {route.type} route for"
            raise Stop("blocked", "NO_ROUTE", f"{ns['label']} {word} {dst}",
                       f"add a route, e.g. 'ip route add {dst} via GATEWAY' in {ns['label']}, or connect it to a network that reaches {dst}",
                       [{"kind": "route", "detail": f"{ns['label']}: lookup {dst} -> {route.text}"}])
        self.note("route", f"{ns['label']}: {dst} -> {route.text}")
        return route

    def filter(self, ns: dict, hook: str, pkt: Packet, families=("ip", "inet")) -> None:
        res = self.nft(ns, hook, pkt, chain_type="filter", families=families)
        if res.verdict == "drop":
            self.hop(ns, pkt.oif or pkt.iif or "-", "firewall", hook, res.deciding.text if res.deciding else "")
            raise self.firewall_stop(ns, hook, pkt, res.deciding)

    def firewall_stop(self, ns: dict, hook: str, pkt: Packet, step) -> Stop:
        where = f"{step.family} {step.table} {step.chain}" + (f" (handle {step.handle})" if step.handle else "")
        shown = step.text + (f' comment "{step.comment}"' if step.comment and step.comment not in step.text else "")
        ev = [{"kind": "nft_rule", "detail": f"{where}: {shown}", "table": f"{step.family} {step.table}",
               "chain": step.chain, "handle": step.handle, "rule": step.text}]
        comment = (step.comment or "").lower()
        if comment.startswith("isolate") or step.chain.startswith("DOCKER-ISOLATION"):
            return Stop("blocked", "NETWORK_ISOLATION",
                        f"{pkt.src} and {pkt.dst} are on different networks, and {ns['label']} isolates them ({where})",
                        "connect the source container to the destination's network: netdiag network connect NETWORK CONTAINER", ev)
        if "icc off" in comment or (step.table == "filter" and step.chain in ("FORWARD", "DOCKER-FORWARD") and pkt.iif == pkt.oif):
            return Stop("blocked", "ICC_DISABLED",
                        f"containers on {pkt.oif} may not talk to each other (enable_icc=false): {where} drops {pkt.src} -> {pkt.dst}",
                        "recreate the network without -o com.docker.network.bridge.enable_icc=false, or talk through a published port", ev)
        if comment.startswith("unpublished"):
            return Stop("blocked", "PORT_NOT_PUBLISHED",
                        f"{pkt.dst}:{pkt.dport} is a container address: it is not reachable from outside the host, only published ports are",
                        f"publish the port (netdiag run -p HOSTPORT:{pkt.dport} ...) and connect to the host's address", ev)
        verdict = "rejects" if step.verdict == "reject" else "drops"
        return Stop("blocked", "FIREWALL_DROP", f"{ns['label']} {verdict} the packet at {hook}: rule {step.text!r} in {where}",
                    f"remove or change that rule, e.g. 'nft delete rule {step.family} {step.table} {step.chain} handle {step.handle}'"
                    if step.handle else "change the chain's policy or add an accept rule before it", ev)

    def postrouting(self, ns: dict, pkt: Packet, route: routing.Route) -> Packet:
        masq = routing.source_for(ns, route)
        res = self.nft(ns, "postrouting", replace(pkt, oif=route.dev), chain_type="nat", masq=masq)
        if res.packet.src != pkt.src:
            self.note("snat", f"{ns['label']}: source {pkt.src} rewritten to {res.packet.src} on {route.dev}",
                      rule=res.steps[-1].text if res.steps else "")
        self.filter(ns, "postrouting", res.packet)
        return res.packet

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
        return self.transmit(ns, link, pkt, nexthop, encap)

    def check_link(self, ns: dict, link: dict, n: int) -> None:
        # flags, not operstate: the kernel updates operstate lazily (linkwatch), a new link can read
        # DOWN for a moment while it is UP with carrier (LOWER_UP)
        no_carrier = link["kind"] not in ("bridge", "loopback", "vxlan") and "LOWER_UP" not in link.get("flags", ["LOWER_UP"])
        if not link["up"] or no_carrier:
            raise Stop("blocked", "LINK_DOWN", f"{link['name']} in {ns['label']} is down, so nothing passes through it",
                       f"bring it up: ip link set {link['name']} up (in {ns['label']})",
                       [{"kind": "link", "detail": f"{ns['label']} {link['name']}: state {link.get('state')}, flags {','.join(link['flags'])}"}])

    def check_mtu(self, ns: dict, link: dict, pkt: Packet, encap: Packet | None) -> None:
        if not self.size:
            return
        size = self.size + HEADERS.get(self.proto, 28) + (VXLAN_OVERHEAD if encap else 0)
        if link.get("mtu") and size > link["mtu"] and encap and not self.outer_df:
            self.note("mtu", f"{ns['label']} {link['name']}: the {size}-byte VXLAN packet exceeds MTU {link['mtu']}; "
                      "the outer packet has no DF bit (vxlan df unset), so the kernel fragments it: slower, but delivered")
            return
        if link.get("mtu") and size > link["mtu"]:
            inner = " (inner packet plus 50 bytes of VXLAN)" if encap else ""
            raise Stop("blocked", "MTU_BLACKHOLE",
                       f"a {size}-byte packet{inner} does not fit {link['name']}'s MTU of {link['mtu']} in {ns['label']}; "
                       "with DF set it is dropped, and if the ICMP 'fragmentation needed' is lost the connection hangs",
                       f"lower the MTU of the sender's interface to {link['mtu'] - (VXLAN_OVERHEAD if encap else 0)} "
                       "(e.g. -o com.docker.network.driver.mtu=...), or raise the MTU of the path",
                       [{"kind": "mtu", "detail": f"{ns['label']} {link['name']} mtu {link['mtu']} < packet {size}"}])

    def transmit(self, ns: dict, link: dict, pkt: Packet, nexthop: str, encap: Packet | None):
        kind = link["kind"]
        if kind == "veth":
            pair = self.model.peer(ns, link)
            if not pair:
                raise Stop("unknown", None, f"the other end of {link['name']} in {ns['label']} is in a namespace netdiag could not observe",
                           "run netdiag as root, or take the snapshot where both ends are visible")
            return self.ingress(*pair, pkt, nexthop, encap)
        if kind == "bridge":
            port, owner = self.bridge_port_for(ns, link, nexthop, exclude=None)
            return self.out_port(ns, link, port, pkt, nexthop, encap)
        if kind == "vxlan":
            return self.vxlan_out(ns, link, pkt, nexthop)
        if kind == "loopback":
            return self.input(ns, replace(pkt, iif="lo"), encap)
        raise Stop("unknown", None, f"the packet leaves {ns['label']} through {link['name']} ({kind}): beyond it netdiag sees nothing",
                   "trace from a namespace on the other side, or observe that host too")

    def ingress(self, ns: dict, link: dict, pkt: Packet, nexthop: str, encap: Packet | None):
        n = self.hop(ns, link["name"], link["kind"], "ingress")
        self.check_link(ns, link, n)
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
            raise Stop("blocked", "ADDRESS_CONFLICT", f"{ip} is configured in {len(real)} namespaces on bridge {bridge['name']}: {names}",
                       "give each container its own address (remove the duplicate --ip or the hand-made address)",
                       [{"kind": "address", "detail": f"{o[1]['label']} has {ip}"} for o in real])
        if real:
            return real[0]
        vx = [o for o in owners if o[1] is None]
        if vx:
            return vx[0]
        raise Stop("blocked", "NO_NEIGHBOR", f"nothing on bridge {bridge['name']} in {ns['label']} has the address {ip}",
                   f"check the address: no container on {bridge['name']}'s network owns {ip} (is it running? is the gateway right?)",
                   [{"kind": "bridge", "detail": f"ports of {bridge['name']}: " + ", ".join(
                       p["name"] for p in ns["links"] if p.get("master") == bridge["name"])}])

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
        self.check_mtu(ns, port, pkt, encap)  # a bridge drops frames larger than the port's MTU, silently
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
                           f"goes {('via ' + back.dev) if back.dev else 'nowhere'} and rp_filter={mode} (strict) requires the same interface",
                           f"fix the route back to {pkt.src} in {ns['label']}, or set net.ipv4.conf.{ifname}.rp_filter=2 (loose) there",
                           [{"kind": "sysctl", "detail": f"net.ipv4.conf.{ifname}.rp_filter / all.rp_filter -> {mode}"},
                            {"kind": "route", "detail": f"reverse lookup {pkt.src} -> {back.text}"}])
        pkt = replace(pkt, iif=ifname, oif=None)
        res = self.nft(ns, "prerouting", pkt, chain_type="nat")
        if (res.packet.dst, res.packet.dport) != (pkt.dst, pkt.dport):
            self.note("dnat", f"{ns['label']}: {pkt.dst}:{pkt.dport} rewritten to {res.packet.dst}:{res.packet.dport}",
                      rule=res.steps[-1].text if res.steps else "")
            pkt = res.packet
        self.filter(ns, "prerouting", pkt)
        route = self.route(ns, pkt.dst, pkt.src, ifname)
        if route.type == "local":
            return self.input(ns, pkt, encap)
        if not routing.forwarding_enabled(ns, ifname):
            self.hop(ns, ifname, "forward", "forward", "ip_forward=0")
            raise Stop("blocked", "FORWARDING_DISABLED",
                       f"{ns['label']} receives the packet for {pkt.dst} on {ifname} but does not forward: net.ipv4.ip_forward=0",
                       f"enable forwarding in {ns['label']}: sysctl -w net.ipv4.ip_forward=1",
                       [{"kind": "sysctl", "detail": f"{ns['label']}: net.ipv4.ip_forward={ns.get('sysctls', {}).get('net.ipv4.ip_forward')}"}])
        fwd = replace(pkt, oif=route.dev)
        self.filter(ns, "forward", fwd)
        fwd = self.postrouting(ns, fwd, route)
        return self.egress(ns, route, fwd, encap)

    def input(self, ns: dict, pkt: Packet, encap: Packet | None):
        self.filter(ns, "input", pkt)
        vx = self.vxlan_device_for(ns, pkt)
        if vx is not None:
            return self.vxlan_in(ns, vx, encap)
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
        if loop and not pkt.dst.startswith("127."):
            s = loop[0]
            who = s.get("process") or "the server"
            raise Stop("blocked", "LISTENER_LOOPBACK_ONLY",
                       f"{who} in {ns['label']} is listening only on {s['local']}:{s['port']}, so connections to {pkt.dst}:{pkt.dport} are refused",
                       f"make the server listen on 0.0.0.0:{s['port']} (all addresses)",
                       [{"kind": "socket", "detail": f"{ns['label']}: {s['proto']} {s['local']}:{s['port']} ({who})"}])
        if ns["kind"] == "host":
            exposed = [(c["name"], c["ns"]) for c in self.model.containers() if c.get("ns") in self.model.namespaces and any(
                s["port"] == pkt.dport and s["proto"] == self.proto for s in self.model.namespaces[c["ns"]].get("sockets", []))]
            if exposed:
                names = ", ".join(name for name, _ in exposed)
                raise Stop("blocked", "PORT_NOT_PUBLISHED",
                           f"nothing on the host listens on {pkt.dst}:{pkt.dport}, and no published port forwards it; "
                           f"{names} listen(s) on {pkt.dport} inside the container",
                           f"publish it: netdiag run -p {pkt.dport}:{pkt.dport} ... (or -p HOSTPORT:{pkt.dport})",
                           [{"kind": "socket", "detail": f"container {n} listens on {pkt.dport}/{self.proto}"} for n, _ in exposed])
        raise Stop("blocked", "NO_LISTENER", f"nothing in {ns['label']} listens on {self.proto} port {pkt.dport}: the connection is refused",
                   f"start the server in {ns['label']}, or use the port it really listens on"
                   + (f" ({', '.join(str(s['port']) for s in ns.get('sockets', []) if s['proto'] == self.proto)})"
                      if ns.get("sockets") else ""),
                   [{"kind": "socket", "detail": f"{ns['label']} listens on: " + (", ".join(
                       f"{s['local']}:{s['port']}/{s['proto']}" for s in ns.get("sockets", [])) or "nothing")}])

    # -- VXLAN ----------------------------------------------------------------------------------------
    def vxlan_out(self, ns: dict, dev: dict, pkt: Packet, nexthop: str):
        v = dev.get("vxlan") or {}
        mac = self.mac_of(nexthop)
        fdb = [f for f in ns["fdb"] if f["ifname"] == dev["name"] and f.get("dst")]
        chosen = [f for f in fdb if mac and f["lladdr"] == mac] or [f for f in fdb if f["lladdr"] == "00:00:00:00:00:00"]
        if not chosen:
            raise Stop("blocked", "OVERLAY_PEER_UNKNOWN",
                       f"{dev['name']} (VNI {v.get('vni')}) in {ns['label']} has no forwarding entry for {nexthop}"
                       + (f" (MAC {mac})" if mac else "") + ": it does not know which host to send it to",
                       f"add the peer VTEP: bridge fdb append 00:00:00:00:00:00 dev {dev['name']} dst REMOTE_IP (in {ns['label']})",
                       [{"kind": "fdb", "detail": f"{dev['name']}: " + (", ".join(f"{f['lladdr']} dst {f['dst']}" for f in fdb) or "no entries")}])
        remote = chosen[0]["dst"]
        # the outer packet carries DF when the device says so, or inherits it from our DF probe
        self.outer_df = v.get("df") in ("set", "inherit") and bool(self.size)
        self.note("vxlan", f"{ns['label']}: {dev['name']} VNI {v.get('vni')} encapsulates to {remote}:{v.get('port') or 4789}")
        outer = Packet(src=v.get("local") or "0.0.0.0", dst=remote, proto="udp", sport=EPHEMERAL_SPORT, dport=v.get("port") or 4789,
                       length=pkt.length + VXLAN_OVERHEAD)
        try:
            return self.output(ns, outer, encap=pkt)
        except Stop as stop:
            if stop.cause in ("MTU_BLACKHOLE",) or stop.verdict != "blocked":
                raise
            raise Stop("blocked", "UNDERLAY_UNREACHABLE",
                       f"the VXLAN peer {remote} cannot be reached from {ns['label']} over the underlay: {stop.summary}",
                       stop.fix, stop.evidence) from None

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
        return None


def destination_ip(model: Model, src_ns: dict, dst: str) -> str:
    """DST as an address: an IP as given; a container or namespace by the address it shares a subnet
    with the source on, else its first non-loopback address."""
    try:
        return str(ipaddress.ip_address(dst))
    except ValueError:
        pass
    ns = model.resolve(dst)
    mine = [ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in src_ns["addresses"]]
    addrs = [a["address"] for a in ns["addresses"] if not a["address"].startswith("127.")]
    for a in addrs:
        if any(ipaddress.ip_address(a) in net for net in mine):
            return a
    if not addrs:
        from runtime.errors import NetdiagError

        raise NetdiagError(f"{ns['label']} has no address but loopback", "it cannot be reached over the network",
                           "attach it to a network (it may run with --network none)")
    return addrs[0]


def trace(model: Model, src: str, dst: str, *, proto: str = "tcp", port: int = 0, size: int = 0) -> dict:
    """The static verdict as the JSON object of the diagnosis contract."""
    src_ns = model.resolve(src)
    dst_ip = destination_ip(model, src_ns, dst)
    t = Trace(model, proto, port, size)
    verdict, cause, summary, fix, blocked_at = "delivered", None, "", "", None
    try:
        end, pkt = t.run(src_ns, dst_ip)
        ret = routing.lookup(end["ns"], pkt.src)
        summary = f"{proto.upper()} {'port ' + str(port) + ' ' if proto != 'icmp' else ''}from {src_ns['label']} reaches {end['ns']['label']}"
        if pkt.dst != dst_ip or pkt.dport != port:
            summary += f" (via {pkt.dst}:{pkt.dport})" if proto != "icmp" else f" (via {pkt.dst})"
        if ret.type == "none" and not routing.is_local(end["ns"], pkt.src):
            verdict, cause = "blocked", "NO_NAT"
            summary = (f"the packet reaches {end['ns']['label']}, but its source {pkt.src} was not masqueraded and "
                       f"{end['ns']['label']} has no route back to it, so replies are lost")
            fix = (f"masquerade traffic leaving the container network (drop -o com.docker.network.bridge.enable_ip_masquerade=false), "
                   f"or give {end['ns']['label']} a route back to {pkt.src} via the host")
            blocked_at = len(t.hops)
            t.note("route", f"{end['ns']['label']}: route back to {pkt.src} -> none")
    except Stop as stop:
        verdict, cause, summary, fix = stop.verdict, stop.cause, stop.summary, stop.fix
        t.evidence.extend(stop.evidence)
        blocked_at = len(t.hops) if t.hops else None
    return {"verdict": verdict, "cause": cause, "summary": summary[0].upper() + summary[1:] if summary else summary,
            "src": src_ns["label"], "dst": dst, "dst_ip": dst_ip, "proto": proto, "port": port, "size": size,
            "hops": t.hops, "blocked_at": blocked_at if verdict != "delivered" else None,
            "evidence": t.evidence, "fix": fix, "unevaluated_rules": t.unknown_rules, "mode": "static",
            "stale_neighbour": list(t.stale_neighbour) if t.stale_neighbour else None}
