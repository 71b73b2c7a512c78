"""A VPN's routes next to container networks.

A VPN client (wg-quick, OpenVPN, a corporate client) adds a tunnel device and routes into it: a
full tunnel's `ip rule not fwmark 51820 table 51820` with a default route there (and `table main
suppress_prefixlength 0`, so main's more specific routes, container subnets among them, still
win), or a split tunnel's routes for the subnets behind the VPN. Two things follow for a trace:

  * a packet routed into a tunnel device (tun, wireguard) is handed to a user-space program or to
    the kernel's WireGuard, which carries it to the VPN's server: the path goes on beyond the
    host, unseen. The trace says so and stops there, instead of jumping to whatever namespace
    happens to hold the destination address on this machine;
  * a VPN route that takes (part of) a container network's subnet away from its bridge sends the
    host's packets for those containers (published ports after DNAT, the answers to containers'
    own connections) into the tunnel: SUBNET_OVERLAP. The fix gives the containers' addresses back
    to the bridge: routes more specific than the VPN's in main, or, where the VPN's route sits in a
    table a policy rule consults before main, a rule before that one that looks the subnet up in
    main (the way wg-quick keeps local subnets out of its tunnel).
Pure: reads the model only.
"""
from __future__ import annotations

import ipaddress

from . import fixes, routing
from .fixes import Fix
from .stop import Stop

TUNNEL_KINDS = ("tun", "wireguard")


def into_tunnel(ns: dict, link: dict, route: routing.Route | None) -> Stop:
    """Where the trace of a packet routed into a tunnel device ends: unknown beyond the host."""
    rule = routing.rule_of(ns, route) if route is not None else None
    why = f"route {route.text}" if route is not None else "its route"
    if rule and not routing.is_default_rule(rule):
        why += f", chosen by policy rule {routing.rule_text(rule)}"
    return Stop("unknown", None,
                f"the packet enters the tunnel {link['name']} ({link['kind']}) in {ns['label']} ({why}): the VPN carries it "
                f"to its server, beyond what netdiag observes",
                Fix(advice=f"trace from the VPN's far side, or keep this destination out of the tunnel (a route for it that "
                           f"does not use {link['name']}) if it must not go through the VPN",
                    why_unchecked="the tunnel's far side is not in the model"),
                [{"kind": "route", "detail": f"{ns['label']}: {why} -> tunnel {link['name']}"}])


def overlap_stop(model, ns: dict, dst: str, route: routing.Route) -> Stop | None:
    """SUBNET_OVERLAP when `route` takes `dst`, an address of a bridge network of this host, away
    from that network's bridge; None otherwise."""
    if ns["id"] != model.snap.get("host") or route.type != "unicast" or not route.dev:
        return None
    net = _network_of(model, dst)
    if net is None or route.dev == net["bridge"] or not any(x["name"] == net["bridge"] for x in ns["links"]):
        return None
    subnet = ipaddress.ip_network(net["subnet"], strict=False)
    taken = ipaddress.ip_network("0.0.0.0/0" if route.dst == "default" else route.dst, strict=False)
    if taken.prefixlen < subnet.prefixlen and not any(
            r.get("dev") == net["bridge"] and r["table"] == routing.RT_TABLE_MAIN and r["dst"] == str(subnet) for r in ns["routes"]):
        return None  # the bridge's own route is gone and a wider one took over: a missing route, not an overlap
    rule = routing.rule_of(ns, route)
    in_main = route.table == routing.RT_TABLE_MAIN
    if in_main:
        part = taken if taken.subnet_of(subnet) else subnet
        if part.prefixlen >= 32:
            fix = Fix(advice=f"move network {net['name']} to a subnet no route covers (netdiag network create picks one)",
                      why_unchecked="a /32 route cannot be outdone by a more specific one")
        else:
            halves = list(part.subnets(prefixlen_diff=1))
            cmds = [fixes.in_ns(ns, ["ip", "route", "add", str(h), "dev", net["bridge"]]) for h in halves]
            applies = [fixes.replace_route(ns["id"], str(h), None, net["bridge"]) for h in halves]
            fix = Fix(" && ".join(cmds), _both(applies),
                      advice=f"routes more specific than {route.text} give {part} back to {net['bridge']}",
                      alternatives=[f"move network {net['name']} to a subnet no route covers (netdiag network create picks one)"])
    else:
        priority = _free_priority(ns, (rule or {}).get("priority", routing.RT_TABLE_MAIN))
        argv = ["ip", "rule", "add", "priority", str(priority), "to", str(subnet), "lookup", "main"]
        fix = Fix(fixes.in_ns(ns, argv), _add_rule(ns["id"], priority, str(subnet)),
                  advice=f"look {subnet} up in main (its bridge's route) before the VPN's rule sends it to table {route.table}",
                  alternatives=[f"move network {net['name']} to a subnet no route covers (netdiag network create picks one)"])
    via = f" (policy rule {routing.rule_text(rule)})" if rule and not routing.is_default_rule(rule) else ""
    return Stop("blocked", "SUBNET_OVERLAP",
                f"route {route.text}{via} in {ns['label']} overlaps network {net['name']} ({net['subnet']}, bridge {net['bridge']}): "
                f"packets for {dst} go to {route.dev} instead of the bridge", fix,
                [{"kind": "route", "detail": f"{ns['label']}: lookup {dst} -> {route.text}{via}"},
                 {"kind": "network", "detail": f"network {net['name']}: subnet {net['subnet']} on bridge {net['bridge']}"}])


def _network_of(model, ip: str) -> dict | None:
    addr = ipaddress.ip_address(ip)
    for n in model.snap.get("networks") or []:
        if n.get("driver") == "bridge" and n.get("bridge") and n.get("subnet") and \
                addr in ipaddress.ip_network(n["subnet"], strict=False):
            return n
    return None


def _free_priority(ns: dict, before: int) -> int:
    used = {r["priority"] for r in ns.get("rules") or []}
    p = max(before - 1, 1)
    while p in used and p > 1:
        p -= 1
    return p


def _add_rule(ns_id: str, priority: int, dst: str):
    def apply(model, ov):
        ns = ov.edit(ns_id)
        ns["rules"] = list(ns.get("rules") or []) + [{"priority": priority, "table": routing.RT_TABLE_MAIN, "dst": dst,
                                                      "src": None, "iif": None, "oif": None, "fwmark": None,
                                                      "action": routing.FR_ACT_TO_TBL}]
    return apply


def _both(applies):
    def apply(model, ov):
        for one in applies:
            one(model, ov)
    return apply
