"""firewalld's table in the model (no root): its default zone's reject of a bridge in no zone is
another manager's firewall, fixed with firewall-cmd (netdiag/reason/firewalld.py). The table's
shape is firewalld 1.3's own (src/firewall/core/nftables.py), as a real firewalld builds it in
tests/integration/test_coexistence_firewalld.py."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.snapshot_model import Model
from netdiag.reason import fixes
from netdiag.reason.static_trace import run_static, trace

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())
T = {"family": "inet", "table": "firewalld"}


def _match(key, right, op="=="):
    return {"match": {"op": op, "left": key, "right": right}}


def firewalld_table() -> list[dict]:
    """firewalld's forward path with no interface in any zone: everything falls into public."""
    reject = {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}
    out = [{"table": {"family": "inet", "name": "firewalld"}},
           {"chain": {**T, "name": "filter_FORWARD", "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}}]
    out += [{"chain": {**T, "name": n}} for n in ("filter_FORWARD_ZONES", "filter_FWD_public", "filter_FWD_public_allow")]
    rules = [("filter_FORWARD", [_match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}]),
             ("filter_FORWARD", [_match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}]),
             ("filter_FORWARD", [_match({"meta": {"key": "iifname"}}, "lo"), {"accept": None}]),
             ("filter_FORWARD", [{"jump": {"target": "filter_FORWARD_ZONES"}}]),
             ("filter_FORWARD", [reject]),
             ("filter_FORWARD_ZONES", [{"goto": {"target": "filter_FWD_public"}}]),
             ("filter_FWD_public", [{"jump": {"target": "filter_FWD_public_allow"}}]),
             ("filter_FWD_public", [reject])]
    out += [{"rule": {**T, "chain": c, "handle": 100 + i, "expr": e}} for i, (c, e) in enumerate(rules)]
    return out


@pytest.fixture
def model():
    m = Model(copy.deepcopy(FIXTURE))
    h = m.namespaces[m.snap["host"]]
    h["nftables"]["nftables"] += firewalld_table()
    h.setdefault("sysctls", {})["net.bridge.bridge-nf-call-iptables"] = "1"
    return m


def bridge(model, net):
    return next(n["bridge"] for n in model.snap["networks"] if n["name"] == net)


def test_a_running_firewalld_rejecting_a_bridge_in_no_zone_is_a_foreign_firewall_fixed_with_its_trusted_zone(model):
    model.namespaces[model.snap["host"]]["firewall_daemons"] = ["firewalld"]
    r, fix = run_static(model, "api", "db", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "FOREIGN_FIREWALL"), r.summary
    br = bridge(model, "back")
    assert fix.command == f"firewall-cmd --zone=trusted --change-interface={br}"
    rule = next(e for e in r.evidence if e.kind == "nft_rule")
    assert (rule.extra["table"], rule.extra["chain"]) == ("inet firewalld", "filter_FWD_public")
    check = fixes.check(model, fix, lambda m: trace(m, "api", "db", port=5432))
    assert check["checked"] and check["delivers"], check


def test_a_table_named_firewalld_with_no_firewalld_running_is_an_ordinary_firewall_drop(model):
    r, fix = run_static(model, "api", "db", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "FIREWALL_DROP"), r.summary
    assert "firewall-cmd" not in fix.command
