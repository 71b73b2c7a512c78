"""The diagnosis of planted faults over snapshots of fault-injection worlds (no root): the cause,
the hop and the fix_command a user sees, and the fix checked on a copy of the model (request and
reply). The snapshots come from tests/fixtures/regen_fault_worlds.py; the fault suite
(netdiag/faults) proves the same fixes on the real kernel."""
import json
from pathlib import Path

import pytest

from netdiag.model import Model
from netdiag.reason import fixes
from netdiag.reason.static_trace import run_static, trace

FIXTURES = Path(__file__).parent.parent / "fixtures" / "faults"


def world(name: str) -> tuple[Model, dict]:
    snap = json.loads((FIXTURES / f"{name}.json").read_text())
    return Model(snap), snap["fault"]


def diagnose(m: Model, f: dict):
    """(result, fix, the blocked hop, the model check of the fix)."""
    r, fix = run_static(m, f["src"], f["dst"], proto=f["proto"], port=f["port"])
    hop = r["hops"][r["blocked_at"] - 1] if r["blocked_at"] else None
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
    assert (r["cause"], hop["label"]) == ("NO_ROUTE", f["at"]), r["summary"]
    at = None if f["at"] == "host" else f["at"].removeprefix("ns:")
    route = next(x for x in (ns_named(m, at) if at else m.namespaces[m.snap["host"]])["routes"]
                 if x["type"] in ("blackhole", "unreachable", "prohibit"))
    assert fix.command == in_ns(at, f"ip route del {route['type']} {f['dst']}/32")
    assert check["checked"] and check["delivers"] and "request and reply" in check["detail"], check


@pytest.mark.parametrize("shape", ["routed", "chain"])
def test_a_policy_rule_into_a_blackhole_table_is_removed(shape):
    m, f = world(f"policy-routing-blackhole-{shape}")
    r, fix, hop, check = diagnose(m, f)
    assert (r["cause"], hop["label"]) == ("NO_ROUTE", f["at"]), r["summary"]
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
    assert (r["cause"], hop["label"], hop["interface"]) == ("LINK_DOWN", f["at"], "eth0"), r["summary"]
    server = f["server"]
    assert fix.command.startswith(f"ip netns exec {server} ip link set eth0 up")
    if shape != "bridged":  # a route back to the client's subnet, which the kernel deleted with the link
        assert fix.command.endswith(f"&& ip netns exec {server} ip route add {f['subnets'][0]} via {f['server_gw']} dev eth0")
    else:  # one subnet: the prefix route comes back with the link
        assert "&&" not in fix.command
    assert check["checked"] and check["delivers"] and "request and reply" in check["detail"], check
