"""The diagnosis of planted faults over snapshots of fault-injection worlds (no root): the cause,
the hop and the fix_command a user sees, and the fix checked on a copy of the model (request and
reply). The snapshots come from tests/fixtures/regen_fault_worlds.py; the fault suite
(netdiag/faults) proves the same fixes on the real kernel."""
import json
from pathlib import Path

import pytest

from netdiag.snapshot_model import Model
from netdiag.reason import fixes
from netdiag.reason.static_trace import run_static, trace

FIXTURES = Path(__file__).parent.parent / "fixtures" / "faults"


def world(name: str) -> tuple[Model, dict]:
    snap = json.loads((FIXTURES / f"{name}.json").read_text())
    return Model(snap), snap["fault"]


def diagnose(m: Model, f: dict):
    """(result, fix, the blocked hop, the model check of the fix)."""
    r, fix = run_static(m, f["src"], f["dst"], proto=f["proto"], port=f["port"])
    hop = r.hops[r.blocked_at - 1] if r.blocked_at else None
    check = fixes.check(m, fix, lambda mm: trace(mm, f["src"], f["dst"], proto=f["proto"], port=f["port"])) if fix else None
    return r, fix, hop, check


def ns_named(m: Model, name: str) -> dict:
    return next(ns for ns in m.namespaces.values() if name in (ns.get("netns_names") or []))


def in_ns(name: str | None, cmd: str) -> str:
    return cmd if name is None else f"ip netns exec {name} {cmd}"


@pytest.mark.parametrize("shape", ["routed", "chain"])
def test_a_blackhole_route_at_a_forwarder_is_removed_not_shadowed_by_a_default(shape):
    m, f = world(f"blackhole-route-{shape}")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_ROUTE", f["at"]), r.summary
    at = None if f["at"] == "host" else f["at"].removeprefix("ns:")
    route = next(x for x in (ns_named(m, at) if at else m.namespaces[m.snap["host"]])["routes"]
                 if x["type"] in ("blackhole", "unreachable", "prohibit"))
    assert fix.command == in_ns(at, f"ip route del {route['type']} {f['dst']}/32")
    assert check["checked"] and check["delivers"] and "request and reply" in check["detail"], check


@pytest.mark.parametrize("shape", ["routed", "chain"])
def test_a_policy_rule_into_a_blackhole_table_is_removed(shape):
    m, f = world(f"policy-routing-blackhole-{shape}")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_ROUTE", f["at"]), r.summary
    at = None if f["at"] == "host" else f["at"].removeprefix("ns:")
    ns = ns_named(m, at) if at else m.namespaces[m.snap["host"]]
    rule = next(x for x in ns["rules"] if x.get("dst") == f"{f['dst']}/32")
    assert fix.command == in_ns(at, f"ip rule del priority {rule['priority']} to {f['dst']}/32 lookup {rule['table']}")
    assert any(f"ip route del blackhole default table {rule['table']}" in a for a in fix.alternatives)
    assert check["checked"] and check["delivers"], check


@pytest.mark.parametrize("shape", ["routed", "chain", "bridged"])
def test_a_veth_end_without_carrier_blames_its_peer_that_is_down(shape):
    """The server's eth0 is admin-down: the host's (or router's) end is up, without carrier. The
    hop is the server's, the fix sets the server's end up (and, where the kernel deleted the
    server's route with the link, adds a route back), checked both ways."""
    m, f = world(f"link-down-at-server-{shape}")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label, hop.interface) == ("LINK_DOWN", f["at"], "eth0"), r.summary
    server = f["server"]
    assert fix.command.startswith(f"ip netns exec {server} ip link set eth0 up")
    if shape != "bridged":  # a route back to the client's subnet, which the kernel deleted with the link
        assert fix.command.endswith(f"&& ip netns exec {server} ip route add {f['subnets'][0]} via {f['server_gw']} dev eth0")
    else:  # one subnet: the prefix route comes back with the link
        assert "&&" not in fix.command
    assert check["checked"] and check["delivers"] and "request and reply" in check["detail"], check


def test_a_client_without_its_prefix_route_gets_it_back_not_a_default_via_an_unreachable_gateway():
    """Bridged: the client's on-link route was removed too. A default via any gateway fails
    ('Nexthop has invalid gateway'): the prefix route is the fix, the server is on that subnet."""
    m, f = world("no-route-at-client-bridged")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_ROUTE", f["at"]), r.summary
    assert fix.command == f"ip netns exec {f['client']} ip route add {f['subnets'][0]} dev eth0"
    assert check["checked"] and check["delivers"], check


def test_a_client_without_any_route_gets_its_prefix_route_and_a_default_via_the_neighbour_that_forwards():
    m, f = world("no-route-at-client-routed")
    r, fix, hop, check = diagnose(m, f)
    assert fix.command == f"ip netns exec {f['client']} ip route add default via {f['client_gw']} dev eth0"
    assert check["delivers"], check
    client = ns_named(m, f["client"])
    client["routes"] = [x for x in client["routes"] if x["table"] != 254]  # the prefix route gone too
    client["neighbours"] = []  # nothing learnt: the gateway is the host across the veth, which forwards
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_ROUTE", f["at"]), r.summary
    assert fix.command == (f"ip netns exec {f['client']} ip route add {f['subnets'][0]} dev eth0 && "
                           f"ip netns exec {f['client']} ip route add default via {f['client_gw']} dev eth0")
    assert check["checked"] and check["delivers"], check


def test_a_private_destination_sent_up_the_default_route_is_no_route_at_the_host_not_beyond():
    """Chain: the host lost its route to the server's subnet, which the router behind it serves;
    the packet leaves by the default route to the outside, which has no route either. NO_ROUTE
    at the host (its egress by the uplink), fixed by a route via that router, checked both ways."""
    m, f = world("no-route-at-host-chain")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label, hop.interface, hop.direction) == ("NO_ROUTE", "host", "eth0", "egress"), r.summary
    router = ns_named(m, f["router"])
    up0 = next(a["address"] for a in router["addresses"] if a["ifname"] == "up0")
    host = m.namespaces[m.snap["host"]]
    towards = next(x["name"] for x in host["links"] if (x.get("peer") or {}).get("ns") == router["id"])
    assert fix.command == f"ip route add {f['subnets'][1]} via {up0} dev {towards}"
    assert check["checked"] and check["delivers"] and "request and reply" in check["detail"], check


def test_a_private_destination_looping_between_default_routes_is_no_route_where_it_went_up():
    m, f = world("no-route-at-host-chain")
    out = next(ns for ns in m.namespaces.values() if any(n.endswith("-out") for n in ns.get("netns_names") or []))
    out["routes"].append({"table": 254, "dst": "default", "gateway": "203.0.113.2", "dev": "eth0", "prefsrc": None,
                          "type": "unicast", "scope": "global", "proto": 3, "metric": 0})  # the outside sends it back
    out["sysctls"].update({"net.ipv4.ip_forward": "1", "net.ipv4.conf.eth0.forwarding": "1"})
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_ROUTE", "host"), r.summary
    assert "a loop" in r.summary and check["delivers"], check


def test_a_public_destination_beyond_the_uplink_is_not_blamed_on_the_host():
    """Only a private address has nowhere to go past the uplink: a public one with no route in the
    outside stays the outside's NO_ROUTE."""
    m, f = world("no-route-at-host-chain")
    r, _, hop, _ = diagnose(m, {**f, "dst": "198.51.100.7"})
    assert (r.cause, hop.label) == ("NO_ROUTE", next(
        ns["label"] for ns in m.namespaces.values() if any(n.endswith("-out") for n in ns.get("netns_names") or []))), r.summary


def test_a_destination_on_the_subnet_of_a_down_link_is_link_down_there_not_the_default_routes_fate():
    """Routed: the host's link towards the server is down; the kernel deleted its subnet's route,
    so the default route takes the packet to the outside. LINK_DOWN at the host, and setting the
    link up brings the route back (in the model too)."""
    m, f = world("link-down-at-host-routed")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("LINK_DOWN", "host"), r.summary
    host = m.namespaces[m.snap["host"]]
    down = next(x["name"] for x in host["links"] if x["kind"] == "veth" and not x["up"])
    assert (hop.interface, fix.command) == (down, f"ip link set {down} up")
    assert check["checked"] and check["delivers"], check


@pytest.mark.parametrize("shape", ["routed", "chain", "bridged"])
def test_a_server_that_answers_no_arp_is_no_neighbor_where_it_is_resolved_fixed_by_its_sysctl(shape):
    """arp_ignore=8 on the server's eth0: the namespace that must resolve it (the host when routed,
    the router in a chain, the client when bridged) never gets an answer. The fix is the sysctl,
    in the server's namespace, checked on the model."""
    m, f = world(f"neighbour-never-answers-{shape}")
    r, fix, hop, check = diagnose(m, f)
    assert (r.verdict, r.cause, hop.label, hop.direction) == ("blocked", "NO_NEIGHBOR", f["at"], "egress"), r.summary
    assert fix.command == f"ip netns exec {f['server']} sysctl -w net.ipv4.conf.eth0.arp_ignore=0"
    assert check["checked"] and check["delivers"], check


def test_arp_off_on_the_servers_link_is_no_neighbor_fixed_by_arp_on_and_a_static_entry_needs_no_answer():
    m, f = world("neighbour-never-answers-routed")
    server = ns_named(m, f["server"])
    server["sysctls"]["net.ipv4.conf.eth0.arp_ignore"] = "0"
    eth0 = next(x for x in server["links"] if x["name"] == "eth0")
    eth0["flags"] = [*eth0["flags"], "NOARP"]
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_NEIGHBOR", "host"), r.summary
    assert fix.command == f"ip netns exec {f['server']} ip link set eth0 arp on" and check["delivers"], check
    host = m.namespaces[m.snap["host"]]
    dev = next(x["name"] for x in host["links"] if (x.get("peer") or {}).get("ns") == server["id"])
    host["neighbours"].append({"ifname": dev, "address": f["dst"], "lladdr": eth0["mac"], "state": "PERMANENT"})
    assert trace(m, f["src"], f["dst"], proto=f["proto"], port=f["port"]).verdict == "delivered"


def test_a_duplicate_address_is_taken_from_the_impostor_and_the_client_forgets_the_mac_it_learnt():
    """Bridged: an impostor holds the server's address and the client's ARP entry points at it. The
    conflict is where the wrong MAC is used (the client's egress); the real holder is the one
    whose socket serves the flow's port; the fix removes the address from the impostor and
    flushes the client's stale entry, chained."""
    m, f = world("duplicate-address-bridged")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label, hop.direction) == ("ADDRESS_CONFLICT", f["at"], "egress"), r.summary
    impostor = f"{f['server'].removesuffix('-s')}-x"
    assert fix.command == (f"ip netns exec {impostor} ip addr del {f['dst']}/24 dev eth0 && "
                           f"ip netns exec {f['client']} ip neigh flush to {f['dst']} dev eth0")
    assert check["checked"] and check["delivers"], check


def test_a_duplicate_address_without_a_listener_to_tell_keeps_the_one_the_failing_flow_does_not_reach():
    m, f = world("duplicate-address-bridged")
    ns_named(m, f["server"])["sockets"] = []
    r, fix, hop, check = diagnose(m, {**f, "proto": "icmp"})
    assert r.cause == "ADDRESS_CONFLICT"
    assert fix.command.startswith(f"ip netns exec {f['server'].removesuffix('-s')}-x ip addr del"), fix.command
    client = ns_named(m, f["client"])
    entry = next(x for x in client["neighbours"] if x["address"] == f["dst"])
    entry["state"] = "PERMANENT"  # a static wrong entry is corrected, not flushed (flush leaves it)
    server_mac = next(x["mac"] for x in ns_named(m, f["server"])["links"] if x["name"] == "eth0")
    _, fix, _, check = diagnose(m, {**f, "proto": "icmp"})
    assert fix.command.endswith(f"ip netns exec {f['client']} ip neigh replace {f['dst']} lladdr {server_mac} dev eth0 nud permanent")
    assert check["delivers"], check


def test_a_host_resolving_over_its_own_bridge_finds_the_port_that_never_answers():
    """Bridged world, traced from the host itself: the host resolves the server through its bridge."""
    m, f = world("neighbour-never-answers-bridged")
    r, fix, hop, check = diagnose(m, {**f, "src": "host"})
    assert (r.cause, hop.label) == ("NO_NEIGHBOR", "host"), r.summary
    assert fix.command == f"ip netns exec {f['server']} sysctl -w net.ipv4.conf.eth0.arp_ignore=0" and check["delivers"], check


def test_a_namespace_elsewhere_with_the_same_address_is_never_read_for_the_arp_check():
    """Every lab has the same outside addresses, and a live model reads a namespace only when
    asked: one that holds the next hop's address but is not across the link is not asked (it may
    be gone by then: reading it raised KeyError inside the fix check)."""
    from netdiag.snapshot_model import LoadedNamespaces

    class Vanishing(LoadedNamespaces):
        def __getitem__(self, ns_id):
            if ns_id == "ns-gone":
                raise KeyError(ns_id)
            return super().__getitem__(ns_id)

        def __contains__(self, ns_id):
            return ns_id == "ns-gone" or ns_id in self.data

        def owners_of(self, ip):
            return super().owners_of(ip) + ["ns-gone"]
    m, f = world("neighbour-never-answers-routed")
    m.namespaces = Vanishing(m.snap["namespaces"])
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_NEIGHBOR", "host") and check["checked"] and check["delivers"], check


def test_a_policy_rule_that_is_itself_a_blackhole_is_removed():
    m, f = world("policy-routing-blackhole-routed")
    host = m.namespaces[m.snap["host"]]
    rule = next(x for x in host["rules"] if x.get("dst") == f"{f['dst']}/32")
    rule["action"] = 6  # ip rule add to DST blackhole
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("NO_ROUTE", "host"), r.summary
    assert fix.command == f"ip rule del priority {rule['priority']} to {f['dst']}/32 blackhole"
    assert check["checked"] and check["delivers"], check
