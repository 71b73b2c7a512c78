"""The one result type of a diagnosis (netdiag/reason/result.py): its one serialiser writes the
trace schema's object, from_json reads it back unchanged, and a delivered diagnosis names no cause."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from netdiag.diagnose import diagnose
from netdiag.reason.result import Diagnosis, Evidence, FixClaim, Hop, Reply, as_json
from netdiag.snapshot_model import Model

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())
TRACE_SCHEMA = json.loads((Path(__file__).parents[2] / "netdiag" / "schemas" / "trace.schema.json").read_text())
FLOWS = [("api", "db", 5432), ("db", "api", 9000), ("web", "api", 80), ("web", "10.50.0.3", 5432)]


@pytest.fixture(scope="module")
def results() -> list[Diagnosis]:
    model = Model(copy.deepcopy(FIXTURE))
    return [diagnose(model, src, dst, port=port, live=False) for src, dst, port in FLOWS]


def test_the_fixture_flows_cover_delivered_and_blocked(results):
    assert {r.verdict for r in results} >= {"delivered", "blocked"}
    assert any(r.reply is not None for r in results) and any(r.fix.check for r in results)


def test_to_json_is_the_trace_schemas_object(results):
    for r in results:
        jsonschema.validate(r.to_json(), TRACE_SCHEMA)


def test_from_json_reads_back_what_to_json_wrote(results):
    for r in results:
        data = json.loads(json.dumps(r.to_json()))
        back = Diagnosis.from_json(data)
        assert back == r
        assert back.to_json() == data


def test_the_json_keeps_the_contracts_keys_and_their_order():
    hop = Hop(1, "ns-1", "api", "eth0", "veth", "egress", True, "10.0.0.0/24 dev eth0", ns_path="/proc/1/ns/net")
    d = Diagnosis("blocked", "FIREWALL_DROP", "host drops it", "api", "db", "10.0.0.3", "tcp", 80, 0, hops=[hop], blocked_at=1,
                  evidence=[Evidence("nft_rule", "ip f forward drop", {"handle": 4})],
                  fix=FixClaim("nft delete rule ip f forward handle 4", "nft delete rule ip f forward handle 4",
                               check={"checked": True, "delivers": True, "detail": "ok"}),
                  live={"outcome": "timeout", "detail": "no answer"}, reconciled="static and live agree")
    data = d.to_json()
    assert list(data) == ["verdict", "cause", "summary", "src", "dst", "dst_ip", "proto", "port", "size", "hops", "blocked_at",
                          "evidence", "fix", "unevaluated_rules", "mode", "stale_neighbour", "live", "reconciled",
                          "fix_command", "fix_check"]
    assert data["hops"] == [{"n": 1, "namespace": "ns-1", "label": "api", "interface": "eth0", "kind": "veth",
                             "direction": "egress", "seen": True, "detail": "10.0.0.0/24 dev eth0", "ns_path": "/proc/1/ns/net"}]
    assert data["evidence"] == [{"kind": "nft_rule", "detail": "ip f forward drop", "handle": 4}]
    jsonschema.validate(data, TRACE_SCHEMA)


def test_a_reply_hop_says_its_leg_and_the_reply_keeps_its_own_hops():
    back = Reply("delivered", [Hop(3, "ns-2", "db", "eth0", "veth", "egress", leg="reply")])
    d = Diagnosis("delivered", src="api", dst="db", dst_ip="10.0.0.3", reply=back)
    assert d.to_json()["reply"] == {"verdict": "delivered", "hops": [{"n": 3, "namespace": "ns-2", "label": "db", "interface": "eth0",
                                                                       "kind": "veth", "direction": "egress", "seen": None,
                                                                       "detail": "", "leg": "reply"}]}
    assert Diagnosis.from_json(d.to_json()) == d


def test_delivered_names_no_cause_no_hop_and_no_fix():
    d = Diagnosis("blocked", "MTU_BLACKHOLE", "too big", hops=[Hop(1, "ns", "a", "eth0", "veth", "egress")], blocked_at=1,
                  fix=FixClaim("ip link set eth0 mtu 1400"))
    assert d.blocked_hop is d.hops[0]
    d.delivered("The live probe got through")
    assert (d.verdict, d.cause, d.blocked_at, d.blocked_hop, d.fix.text) == ("delivered", None, None, None, "")
    jsonschema.validate({**d.to_json(), "src": "a", "dst": "b"}, TRACE_SCHEMA)


def test_the_fixtures_delivered_diagnoses_name_no_cause(results):
    for r in results:
        if r.verdict == "delivered":
            data = r.to_json()
            assert (data["cause"], data["blocked_at"], data["fix_command"]) == (None, None, None)


def test_an_unknown_verdict_is_refused():
    with pytest.raises(ValueError):
        Diagnosis("maybe")


def test_a_result_that_embeds_a_diagnosis_serialises_it_through_to_json(results):
    text = json.dumps({"healthy": False, "diagnosis": results[0]}, default=as_json)
    assert json.loads(text)["diagnosis"] == results[0].to_json()
    with pytest.raises(TypeError):
        json.dumps({"x": object()}, default=as_json)


def test_looked_up_namespace_paths_are_said_on_every_hop_even_when_there_is_none():
    hops = [Hop(1, "ns-1", "api", "eth0", "veth", "egress", ns_path="/proc/7/ns/net"), Hop(2, "ns-9", "gone", "eth0", "veth", "ingress")]
    d = Diagnosis("unknown", hops=hops)
    assert [("ns_path" in h) for h in d.to_json()["hops"]] == [True, False]
    d.paths_resolved = True
    assert [h.get("ns_path", "absent") for h in d.to_json()["hops"]] == ["/proc/7/ns/net", None]
    assert Diagnosis.from_json(d.to_json()) == d
