"""Routing in the static trace: the routing decision at each hop and, when there is no usable
route, where the packet dies (a down link, nothing beyond, no route back for the reply) with the
route that would serve and the fix that adds it. A part (mixin) of static_trace.Trace."""
from __future__ import annotations

import ipaddress

from . import cni_plugins, fixes, routing, vpn
from .fixes import Fix
from .stop import Stop

REPLY_WORDS = {"tcp": "SYN-ACK", "udp": "UDP answer", "icmp": "echo reply"}


class RouteSteps:
    """The routing steps of the walk: methods of static_trace.Trace, which mixes them in."""

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
            self.blocked_hop = hop.n
            host = self.model.namespaces[hop.namespace]
            cni = cni_plugins.masquerade_fix(self.model, host, dst) if net is not None and "cni" in (net.get("runtime"), net.get("driver")) else None
            if cni is not None:  # a pod's masquerade, written by its CNI bridge plugin, is gone: put it back
                fix, what = cni[0], f"network {net['name']}"
            elif net is not None:  # a runtime's network made without masquerade: route it upstream, or masquerade again
                fix.alternatives.append(f"masquerade {net['name']} again: recreate it without "
                                        "-o com.docker.network.bridge.enable_ip_masquerade=false")
                what = f"network {net['name']}"
            else:  # a subnet the host routes: the host masquerades it where it leaves by its uplink
                route_back = fix.command
                fix = Fix(fixes.in_ns(host, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", subnet, "-o", hop.interface,
                                             "-j", "MASQUERADE"]),
                          fixes.add_masquerade(host["id"], subnet, hop.interface),
                          advice=f"{host['label']} masquerades {subnet} where it leaves through {hop.interface}",
                          alternatives=[f"{route_back} (a route back to {subnet}, where {ns['label']} is yours to change)"]
                          if route_back else [])
                what = f"subnet {subnet}, which {host['label']} routes"
            return Stop("blocked", "NO_NAT",
                        f"the packet reaches its destination, but its private source {dst} ({what}) left {hop.label} "
                        f"through {hop.interface} without masquerade, and {ns['label']} {word} {dst}, so replies are lost"
                        + (f": {cni[1]}" if cni else ""), fix, evidence)
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
        out = [h for h in self.hops if h.leg != "reply" and h.direction == "egress"
               and h.kind not in ("firewall", "route", "socket") and h.namespace != (self.src_ns or {}).get("id")]
        host = self.model.snap.get("host")
        net = next((n for n in self.model.snap.get("networks") or [] if n.get("bridge") and n.get("subnet")
                    and addr in ipaddress.ip_network(n["subnet"], strict=False)), None)
        if net is not None:
            return next(((h, net, net["subnet"]) for h in out if h.namespace == host and h.interface != net["bridge"]
                         and self.master_of(host, h.interface) != net["bridge"]), None)
        for h in out:
            ns = self.model.namespaces.get(h.namespace) or {}
            uplink = next((r["dev"] for r in ns.get("routes", []) if r.get("table") == 254
                           and r.get("dst") in ("default", "0.0.0.0/0") and r.get("type", "unicast") == "unicast"), None)
            behind = next((ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in ns.get("addresses", [])
                           if a["ifname"] != h.interface and a["prefixlen"] < 32 and not a["address"].startswith("127.")
                           and addr in ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False)), None)
            if uplink == h.interface and behind is not None:
                return h, None, str(behind)
        return None

    def master_of(self, ns_id: str, ifname: str) -> str | None:
        ns = self.model.namespaces.get(ns_id) or {}
        return next((x.get("master") for x in ns.get("links", []) if x["name"] == ifname), None)

    def route_back_fix(self, ns: dict, dst: str) -> Fix:
        """A route to `dst`'s subnet through the neighbour the request came from, on the interface it
        arrived on in `ns`; else the default route fix."""
        came = [h for h in self.hops if h.leg != "reply"]
        arrived = next((h for h in came if h.namespace == ns["id"] and h.direction in ("ingress", "forward")
                        and h.kind not in ("firewall", "route", "rp_filter")), None)
        dev = arrived.interface if arrived else None
        if arrived and arrived.kind != "bridge" and self.master_of(ns["id"], dev):
            dev = self.master_of(ns["id"], dev)  # arrived on a bridge port: the route goes via the bridge
        mine = [ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False) for a in ns["addresses"]
                if a["ifname"] == dev and not a["address"].startswith("127.")]
        before = [h for h in came if arrived and h.n < arrived.n and h.namespace != ns["id"]]
        gw = None
        for h in reversed(before):
            prev = self.model.namespaces.get(h.namespace) or {}
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
        out = next((h for h in self.hops[before:] if h.namespace == host["id"] and h.direction == "egress"), None)
        self.blocked_hop = out.n if out else None
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
        if (overlay_fix := self.overlay_route_fix(ns, dst)) is not None:
            return overlay_fix
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
        if (overlay_fix := self.overlay_route_fix(ns, dst)) is not None:
            return overlay_fix  # a pod subnet of another node: the overlay's route, not a default route
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


def _rfc1918(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
