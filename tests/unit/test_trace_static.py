"""The static path engine over a lab snapshot (no root): verdicts, causes, hops and evidence."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.snapshot_model import Model
from netdiag.reason.static_trace import trace

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


@pytest.fixture
def model():
    return Model(copy.deepcopy(FIXTURE))


def outside(m):
    return "ns:" + next(n for ns in m.namespaces.values() for n in ns["netns_names"] if n.endswith("-out"))


def test_same_network_delivered_with_the_hops_a_packet_takes(model):
    r = trace(model, "api", "db", port=5432)
    assert r.verdict == "delivered" and r.cause is None
    assert [(h.label.split(" ")[0], h.interface, h.direction) for h in r.hops] == [
        ("api", "eth0", "egress"), ("host", r.hops[1].interface, "ingress"), ("host", r.hops[2].interface, "forward"),
        ("host", r.hops[3].interface, "egress"), ("db", "eth0", "ingress"), ("db", "tcp/5432", "deliver")]
    assert r.hops[2].interface.startswith("br-")


def test_published_port_from_outside_goes_through_dnat(model):
    r = trace(model, outside(model), "203.0.113.2", port=8080)
    assert r.verdict == "delivered"
    assert any(e.kind == "dnat" and "172.17.0.2:80" in e.detail for e in r.evidence)
    assert r.hops[-1].label.startswith("web")


def test_causes_from_the_model(model):
    r = trace(model, "web", "10.50.0.3", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "NETWORK_ISOLATION")
    assert any(e.kind == "nft_rule" and "isolate" in e.detail for e in r.evidence)
    r = trace(model, "db", "api", port=9000)
    assert r.cause == "LISTENER_LOOPBACK_ONLY" and "0.0.0.0:9000" in r.fix.text
    assert trace(model, "db", "api", port=81).cause == "NO_LISTENER"
    r = trace(model, outside(model), "203.0.113.2", port=80)
    assert r.cause == "PORT_NOT_PUBLISHED" and "-p 80:80" in r.fix.text
    r = trace(model, outside(model), "172.17.0.2", port=80)
    assert r.cause == "NO_ROUTE"


def test_faults_planted_in_the_model(model):
    host = model.host
    saved = dict(host["sysctls"])
    for key in host["sysctls"]:  # writing ip_forward sets every interface's forwarding, as here
        if key == "net.ipv4.ip_forward" or key.endswith(".forwarding"):
            host["sysctls"][key] = "0"
    assert trace(model, "web", "203.0.113.1", port=80).cause == "FORWARDING_DISABLED"
    host["sysctls"] = saved
    db = model.resolve("db")
    veth = model.peer(db, model.link(db, "eth0"))[1]
    veth["up"] = False
    r = trace(model, "api", "db", port=5432)
    assert r.cause == "LINK_DOWN" and r.hops[r.blocked_at - 1].interface == veth["name"]
    veth["up"] = True
    veth["mtu"] = 1000
    r = trace(model, "api", "db", proto="icmp", size=1400)
    assert r.cause == "MTU_BLACKHOLE"
    assert trace(model, "api", "db", proto="icmp", size=900).verdict == "delivered"
    web = model.resolve("web")
    web["routes"] = [rt for rt in web["routes"] if rt["dst"] != "default"]
    assert trace(model, "web", "203.0.113.1", port=80).cause == "NO_ROUTE"


def test_a_none_container_and_a_duplicate_address(model):
    db = model.resolve("db")
    db["links"] = [link for link in db["links"] if link["kind"] == "loopback"]
    db["addresses"] = [a for a in db["addresses"] if a["ifname"] == "lo"]
    assert trace(model, "db", "203.0.113.1", port=80).cause == "NETWORK_NONE"
    m = Model(copy.deepcopy(FIXTURE))
    db = m.resolve("db")
    db["addresses"].append({"ifname": "eth0", "address": "10.50.0.2", "local": "10.50.0.2", "prefixlen": 24, "scope": "global"})
    assert trace(m, "web", "10.50.0.2", port=80).cause in ("ADDRESS_CONFLICT", "NETWORK_ISOLATION")
    m.host["nftables"] = {"nftables": []}
    assert trace(m, "web", "10.50.0.2", port=80).cause == "ADDRESS_CONFLICT"


def test_result_follows_the_contract(model):
    r = trace(model, "db", "api", port=81)
    assert set(r.to_json()) >= {"verdict", "cause", "summary", "hops", "blocked_at", "evidence", "fix"}
    assert all(set(h) >= {"n", "namespace", "interface", "kind", "direction", "seen", "detail"} for h in r.to_json()["hops"])
    json.dumps(r.to_json())
