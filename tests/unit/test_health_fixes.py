"""The proofs of health's fixes (pure): PACKET_LOSS's rule deleted on a model copy, DNS_FAILURE's
network membership on the model, a resolver that cannot be reached named by the query's own
trace, and the explicit "manual" fix where no command can exist."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.health import classify
from netdiag.health import fix_proofs
from netdiag.health.spec import parse
from netdiag.snapshot_model import Model
from netdiag.reason.result import Diagnosis
from netdiag.reason.static_trace import run_static

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())
TCP = parse("db:5432", tcp=True, http=None, host=None, expect=None, timeout=1.0, count=1, interval=1.0)


@pytest.fixture
def model():
    return Model(copy.deepcopy(FIXTURE))


def ns_of(model, name):
    return next(ns for ns in model.namespaces.values() if ns["name"] == name)


def loss_rule(ns, handle, pct):
    items = ns.setdefault("nftables", {"nftables": []})["nftables"]
    if not any(i.get("chain", {}).get("table") == "flaky" for i in items):
        items += [{"table": {"family": "inet", "name": "flaky"}},
                  {"chain": {"family": "inet", "table": "flaky", "name": "input", "type": "filter", "hook": "input", "prio": 0,
                             "policy": "accept"}}]
    items.append({"rule": {"family": "inet", "table": "flaky", "chain": "input", "handle": handle, "expr": [
        {"match": {"op": "<", "left": {"numgen": {"mode": "random", "mod": 100, "offset": 0}}, "right": pct}}, {"drop": None}]}})


def retrace(m):
    return run_static(m, "api", "db", port=5432)[0]


def test_the_loss_rule_deleted_on_the_model_leaves_no_random_drop(model):
    db = ns_of(model, "db")
    loss_rule(db, 41, 30)
    (rule,) = [r for r in retrace(model).unevaluated_rules if r.get("changes_outcome")]
    assert "probabilistic" in rule["reason"] and rule["handle"] == 41
    check = fix_proofs.loss_check(model, db["id"], rule, retrace)
    assert retrace(model).cause == "PACKET_LOSS"
    assert check["checked"] and check["delivers"] and "request and reply" in check["detail"], check
    loss_rule(db, 42, 10)  # a second loss rule: deleting the first is not the fix
    check = fix_proofs.loss_check(model, db["id"], rule, retrace)
    assert check["checked"] and check["delivers"] is False and "still unknown (PACKET_LOSS" in check["detail"], check


def test_dns_membership_check(model):
    assert fix_proofs.dns_check(model, "web", "back", "db")["delivers"] is True
    assert fix_proofs.dns_check(model, "web", "back", "nosuch")["delivers"] is False
    web = next(c for c in model.containers() if c["name"] == "web")
    assert fix_proofs.dns_check(model, "x", "fresh", "web", joining=[web])["delivers"] is True
    assert fix_proofs.dns_check(model, "x", "fresh", "web")["delivers"] is False


def resolution(error):
    return {"name": "db", "address": None, "source": None, "server": "10.50.0.1", "error": error, "answer": "no answer",
            "where": "api's /etc/resolv.conf", "nameservers": ["10.50.0.1"], "search": [], "attempts": [],
            "hint": {"fix": "x (manual: ...)"}}


def test_an_unreachable_resolver_is_named_by_the_querys_trace():
    diag = Diagnosis.from_json({"verdict": "blocked", "cause": "FIREWALL_DROP", "summary": "ip f input drops udp 53", "dst_ip": "10.50.0.1",
            "proto": "udp", "port": 53, "blocked_at": 1, "evidence": [],
            "hops": [{"n": 1, "label": "host", "interface": "br0", "kind": "bridge", "direction": "ingress", "detail": ""}],
            "fix": "nft delete rule ip f input handle 4", "fix_command": "nft delete rule ip f input handle 4",
            "fix_check": {"checked": True, "delivers": True, "detail": "with this fix the static path delivers"}})
    r = classify.classify(TCP, {"ok": False, "stage": "resolve", "error": "timeout"}, src="api",
                          resolution=resolution("timeout"), diagnosis=diag)
    assert r["cause"] == "DNS_FAILURE" and "nameserver 10.50.0.1 cannot be reached (FIREWALL_DROP)" in r["summary"]
    assert r["fix_command"] == diag.fix.command and r["fix_check"]["delivers"] and r["hop"]["interface"] == "br0"
    # a resolver that answers (the name is unknown there): the hint's fix, not a trace
    r = classify.classify(TCP, {"ok": False, "stage": "resolve", "error": "nxdomain"}, src="api", resolution=resolution("nxdomain"))
    assert r["cause"] == "DNS_FAILURE" and r["fix_command"] is None and "manual:" in r["fix"]


def test_loss_without_a_rule_is_a_manual_fix():
    loss = {"rate": 0.5, "ok": 10, "attempts": 20}
    r = classify.classify(TCP, {"ok": False, "stage": "connect", "error": "timeout", "detail": "x"}, src="api",
                          diagnosis=Diagnosis.from_json({"verdict": "delivered", "cause": None, "evidence": []}), loss=loss)
    assert r["cause"] == "PACKET_LOSS" and r["fix_command"] is None and "(manual: " in r["fix"]
