"""The diagnosis of overlay faults over snapshots of overlay fault worlds taken on host 1 (no root):
the cause, the hop, the fix_command with the real names a user runs, what it says about netdiag's
cluster agent (the entries' owner), and the fix checked on a copy of the model. The snapshots come
from tests/fixtures/regen_overlay_worlds.py; the fault suite (netdiag/faults/overlay.py) proves the
same fixes on the real kernel."""
import copy

import pytest

from netdiag.snapshot_model import Model
from netdiag.reason import fixes, overlay
from netdiag.reason.static_trace import run_static, trace
from tests.unit.test_diagnosis_faults import world


def diagnose(m: Model, f: dict):
    """(result, fix, the blocked hop, the model check of the fix)."""
    flow = dict(proto=f["proto"], port=f["port"], size=f["size"])
    r, fix = run_static(m, f["src"], f["dst"], **flow)
    hop = r.hops[r.blocked_at - 1] if r.blocked_at else None
    check = fixes.check(m, fix, lambda mm: trace(mm, f["src"], f["dst"], **flow)) if fix and fix.apply else None
    return r, fix, hop, check


def commands(f: dict) -> dict[str, str]:
    mac, vx, vtep, ip = f["server_mac"], f["vxlan"], f["server_vtep"], f["dst"]
    return {"fdb-deleted": f"bridge fdb append {mac} dev {vx} dst {vtep}",
            "arp-deleted": f"ip neigh replace {ip} lladdr {mac} dev {vx} nud permanent",
            "fdb-stale": f"bridge fdb replace {mac} dev {vx} dst {vtep} self permanent"}


@pytest.mark.parametrize("how", ["fdb-deleted", "arp-deleted", "fdb-stale"])
def test_a_lost_forwarding_entry_gets_the_stores_entry_back_and_says_who_owns_it(how):
    m, f = world(f"overlay-{how}")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label, hop.interface) == ("OVERLAY_PEER_UNKNOWN", "host", f["vxlan"]), r.summary
    assert fix.command == commands(f)[how]
    assert check["checked"] and check["delivers"], check
    # the entry is the agent's: the fix says why a hand-made entry is the way back, and that the
    # agent does not restore it by itself
    assert "netdiag's cluster agent" in fix.advice and "no netdiag command re-syncs" in fix.advice, fix.advice
    assert f["vxlan"] in r.summary and not r.summary.startswith("Vx-"), r.summary  # a device's name as spelled


def test_a_vxlan_device_of_no_cluster_network_gets_no_note_about_the_agent():
    m, f = world("overlay-fdb-deleted")
    host = m.namespaces[m.snap["host"]]
    dev = copy.deepcopy(next(link for link in host["links"] if link["name"] == f["vxlan"]))
    assert overlay.agent_note(m, dev)
    dev["vxlan"]["vni"] += 1  # a VNI no network of the cluster has: a plain VXLAN device
    assert overlay.agent_note(m, dev) == ""


def test_vxlan_dropped_by_a_users_rule_is_underlay_unreachable_and_the_rule_goes():
    m, f = world("overlay-vxlan-dropped-on-underlay")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label) == ("UNDERLAY_UNREACHABLE", f["at"]), r.summary
    at = f["at"].removeprefix("ns:")
    ns = m.namespaces[m.snap["host"]] if f["at"] == "host" else next(
        n for n in m.namespaces.values() if at in (n.get("netns_names") or []))
    table, chain, handle = next((r["table"], r["chain"], r["handle"]) for r in _nft_rules(ns) if "4789" in r["text"] and r["table"] != "netdiag")
    cmd = f"nft delete rule inet {table} {chain} handle {handle}"
    assert fix.command == (cmd if f["at"] == "host" else f"ip netns exec {at} {cmd}")
    assert check["checked"] and check["delivers"], check


def test_an_underlay_narrower_than_the_overlay_is_an_mtu_black_hole_at_the_switch_port():
    m, f = world("overlay-underlay-narrower-than-mtu")
    r, fix, hop, check = diagnose(m, f)
    assert (r.cause, hop.label, hop.interface) == ("MTU_BLACKHOLE", f"ns:{f['underlay']}", "p0"), r.summary
    port = next(link for link in m.namespaces[hop.namespace]["links"] if link["name"] == "p0")
    client = next(c for c in m.containers() if c["name"] == f["src"])
    # the sender's MTU lowered so its segments fit once encapsulated, in the client's namespace
    assert fix.command == f"nsenter -t {client['pid']} -n ip link set dev eth0 mtu {port['mtu'] - 50}"


def _nft_rules(ns: dict) -> list[dict]:
    out = []
    for item in (ns.get("nftables") or {}).get("nftables", []):
        rule = item.get("rule")
        if rule:
            out.append({"table": rule["table"], "chain": rule["chain"], "handle": rule["handle"], "text": str(rule["expr"])})
    return out
