"""A VPN's policy routing in the model (no root): wg-quick's `not fwmark 51820 table 51820` and
`table main suppress_prefixlength 0` (netdiag/reason/routing.py), and what the trace makes of a
route into a tunnel or over a container subnet (netdiag/reason/vpn.py)."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.snapshot_model import Model
from netdiag.reason import fixes, routing
from netdiag.reason.static_trace import run_static, trace

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())
DEFAULTS = [{"priority": 0, "table": 255, "action": 1}, {"priority": 32766, "table": 254, "action": 1},
            {"priority": 32767, "table": 253, "action": 1}]
WG_QUICK = [{"priority": 32764, "table": 254, "action": 1, "suppress_prefixlen": 0},
            {"priority": 32765, "table": 51820, "action": 1, "fwmark": 51820, "invert": True}]


def ns_with(routes, rules):
    return {"routes": routes, "rules": rules}


def route(dst, dev, table=254):
    return {"dst": dst, "dev": dev, "table": table, "type": "unicast", "gateway": None, "prefsrc": None, "metric": 0}


def test_wg_quick_sends_the_default_into_the_tunnel_and_keeps_mains_specific_routes():
    ns = ns_with([route("default", "eth0"), route("203.0.113.0/24", "eth0"), route("172.18.0.0/16", "br0"),
                  route("default", "wg0", 51820)], DEFAULTS + WG_QUICK)
    r = routing.lookup(ns, "192.0.2.80")
    assert (r.dev, r.table, r.rule_priority) == ("wg0", 51820, 32765)
    assert routing.rule_text(routing.rule_of(ns, r)) == "priority 32765 not fwmark 51820 lookup 51820"
    assert routing.lookup(ns, "172.18.0.2").dev == "br0"  # longer than /0: not suppressed
    assert routing.lookup(ns, "203.0.113.1").dev == "eth0"


def test_an_inverted_rule_does_not_take_what_its_selectors_match():
    ns = ns_with([route("default", "eth0"), route("default", "wg0", 7)],
                 DEFAULTS + [{"priority": 100, "table": 7, "action": 1, "dst": "192.0.2.0/24", "invert": True}])
    assert routing.lookup(ns, "192.0.2.80").dev == "eth0"
    assert routing.lookup(ns, "198.51.100.1").dev == "wg0"


@pytest.fixture
def model():
    return Model(copy.deepcopy(FIXTURE))


def host(model):
    return model.namespaces[model.snap["host"]]


def add_tunnel(h):
    h["links"].append({"index": 99, "name": "wg0", "kind": "tun", "mac": None, "mtu": 1420, "state": "UNKNOWN",
                       "flags": ["UP", "POINTOPOINT", "NOARP", "LOWER_UP"], "up": True, "master": None, "link": None,
                       "link_netnsid": None})
    h["addresses"].append({"ifname": "wg0", "address": "10.66.0.2", "local": "10.66.0.2", "prefixlen": 32, "scope": "global"})


def test_a_vpn_route_more_specific_than_a_container_subnet_is_a_subnet_overlap_fixed_by_more_specific_routes(model):
    h = host(model)
    add_tunnel(h)
    net = next(n for n in model.snap["networks"] if n["name"] == "back")
    db_ip = next(c["networks"]["back"]["ip"] for c in model.containers() if c["name"] == "db").split("/")[0]
    h["routes"].append(route(db_ip.rsplit(".", 1)[0] + ".0/25", "wg0"))  # more specific than back's /24
    r, fix = run_static(model, "host", "db", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "SUBNET_OVERLAP"), r.summary
    assert fix.command.startswith("ip route add ") and f"dev {net['bridge']}" in fix.command
    assert fixes.check(model, fix, lambda m: trace(m, "host", "db", port=5432))["delivers"]


def test_a_vpn_route_that_replaced_the_bridges_own_is_an_overlap_too(model):
    """`ip route replace SUBNET dev wg0`: the bridge's route is gone, the VPN's has its very prefix."""
    h = host(model)
    add_tunnel(h)
    net = next(n for n in model.snap["networks"] if n["name"] == "back")
    h["routes"] = [r for r in h["routes"] if not (r["table"] == 254 and r["dst"] == net["subnet"])] + [route(net["subnet"], "wg0")]
    r, fix = run_static(model, "host", "db", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "SUBNET_OVERLAP"), r.summary
    assert fixes.check(model, fix, lambda m: trace(m, "host", "db", port=5432))["delivers"]


def test_a_bridge_route_removed_under_a_wider_route_is_not_an_overlap(model):
    h = host(model)
    net = next(n for n in model.snap["networks"] if n["name"] == "back")
    h["routes"] = [r for r in h["routes"] if not (r["table"] == 254 and r["dst"] == net["subnet"])]
    r, _ = run_static(model, "host", "db", port=5432)
    assert r.cause != "SUBNET_OVERLAP", r.summary


def test_a_route_into_a_tunnel_ends_the_trace_there_not_in_a_namespace_that_holds_the_address(model):
    h = host(model)
    add_tunnel(h)
    h["routes"].append(route("203.0.113.1/32", "wg0"))  # the outside's address, now behind the VPN
    r, _ = run_static(model, "host", "203.0.113.1", port=80)
    assert r.verdict == "unknown" and "enters the tunnel wg0 (tun)" in r.summary, r.summary
    assert r.hops[-1].interface == "wg0"
