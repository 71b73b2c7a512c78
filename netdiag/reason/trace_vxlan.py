"""VXLAN in the static trace: encapsulation towards the remote VTEP (the FDB entry and the
neighbour for the inner destination), decapsulation on the receiving host, and their fixes.
A part (mixin) of static_trace.Trace."""
from __future__ import annotations

import ipaddress
from dataclasses import replace

from . import fixes, overlay
from .fixes import Fix
from .nftables import Packet
from .stop import Stop
from .trace_links import VXLAN_OVERHEAD

EPHEMERAL_SPORT = 40000


class VxlanSteps:
    """The VXLAN steps of the walk: methods of static_trace.Trace, which mixes them in."""

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
                # a VTEP that bridges the owner (netdiag's, Docker's overlay) or is the owner: a routed
                # VXLAN device whose own address is the next hop (flannel.1 carries 10.244.N.0)
                if v.get("vni") == vni and (peers & owners or other["id"] in owners or not owners):
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

    def overlay_route_fix(self, ns: dict, dst: str) -> Fix | None:
        """A routed overlay's route (flannel's): `dst` is on a subnet connected in another observed
        namespace whose VXLAN device (same VNI and port as one of `ns`) carries an address on that
        subnet (flannel's 10.244.N.0 of the node's 10.244.N.0/24). The route
        goes to that subnet via that address, `onlink` on `ns`'s device (the address is on none of
        `ns`'s subnets), as flanneld adds it. None where no such peer exists (bridged overlays)."""
        addr = ipaddress.ip_address(dst)
        for dev in ns["links"]:
            v = dev.get("vxlan")
            if not v:
                continue
            for other in self.model.namespaces.values():
                if other["id"] == ns["id"]:
                    continue
                for peer in other["links"]:
                    pv = peer.get("vxlan") or {}
                    if pv.get("vni") != v.get("vni") or (pv.get("port") or 4789) != (v.get("port") or 4789):
                        continue
                    gw = next((a["address"] for a in other["addresses"] if a["ifname"] == peer["name"]), None)
                    # the node's pod subnet holds its VTEP's address (10.244.1.0 of 10.244.1.0/24): never the
                    # underlay's or another uplink's subnet, which the overlay does not carry
                    subnet = next((net for a in other["addresses"] if a["ifname"] != peer["name"] and a["prefixlen"] < 32
                                   for net in [ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False)]
                                   if addr in net and gw and ipaddress.ip_address(gw) in net), None)
                    if gw and subnet:
                        return Fix(fixes.in_ns(ns, ["ip", "route", "add", str(subnet), "via", gw, "dev", dev["name"], "onlink"]),
                                   fixes.replace_route(ns["id"], str(subnet), gw, dev["name"]),
                                   advice=f"{subnet} is behind {peer['name']} ({gw}) in {other['label']}, the VXLAN peer of "
                                   f"{dev['name']}: the overlay's route to it, as flanneld adds it from that node's lease")
        return None

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
