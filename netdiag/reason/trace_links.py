"""The link layer in the static trace: neighbour resolution (ARP), link state, MTU, and bridges
(which port learns the destination, address conflicts, the bridge's own filtering and its ports
out). A part (mixin) of static_trace.Trace."""
from __future__ import annotations

from dataclasses import replace

from . import fixes, overlay, routing
from .fixes import Fix
from .nftables import Packet
from .stop import Stop

VXLAN_OVERHEAD = 50
HEADERS = {"tcp": 40, "udp": 28, "icmp": 28}


class LinkSteps:
    """The link-layer and bridge steps of the walk: methods of static_trace.Trace, which mixes them in."""

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

    def wire_size(self, encap: Packet | None) -> int:
        """The probe's bytes on the wire here: its size plus headers, for TCP no more than the segment
        the sender's own interface lets it send (TCP segments to fit it), plus VXLAN's when encapsulated."""
        size = self.size + HEADERS.get(self.proto, 28)
        if self.proto == "tcp" and getattr(self, "tcp_segment", None):
            size = min(size, self.tcp_segment)
        return size + (VXLAN_OVERHEAD if encap else 0)

    def check_mtu(self, ns: dict, link: dict, pkt: Packet, encap: Packet | None, bridged: bool = False) -> None:
        if not self.size:
            return
        size = self.wire_size(encap)
        if self.proto == "tcp" and not encap and link.get("mtu") and size > link["mtu"] and ns["id"] == (self.src_ns or {}).get("id"):
            # the sender's own interface: its TCP never emits a segment larger than that MTU (the MSS)
            self.tcp_segment = link["mtu"]
            self.note("mtu", f"{ns['label']} {link['name']}: TCP segments the {size}-byte payload to its MTU of {link['mtu']}")
            return
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
        first = self.hops[0].interface if self.hops else None
        inner = link["mtu"] - (VXLAN_OVERHEAD if encap else 0)
        if link["kind"] == "vxlan":  # the overlay's own MTU: senders must fit it, it cannot grow
            encap = encap or Packet(src="", dst="", proto="udp")
        lower_cmd = fixes.in_ns(sender, ["ip", "link", "set", "dev", first, "mtu", str(inner)]) if sender and first else ""
        new_ctrs = " (for new containers: -o com.docker.network.driver.mtu=%d on the network)" % inner \
            if sender and sender.get("kind") == "container" else ""
        cni = [n for n in ((self.model.container_of(sender) or {}).get("networks") or {}) if n.startswith("cni:")] if sender else []
        if cni:  # the CNI conflist's bridge plugin sets a new pod's MTU, not a Docker network option
            new_ctrs = f' (for new pods: "mtu": {inner} in the bridge plugin of the CNI conflist {cni[0][4:]})'
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
            out = next((h for h in reversed(self.hops) if h.namespace == resolver["id"] and h.direction == "egress"), None)
            self.blocked_hop = out.n if out else None
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


def _arp_on(ns_id: str, ifname: str):
    """`ip link set IF arp on` on a model copy."""
    def apply(model, ov):
        for link in ov.edit(ns_id)["links"]:
            if link["name"] == ifname:
                link["flags"] = [f for f in link.get("flags", []) if f != "NOARP"]
    return apply
