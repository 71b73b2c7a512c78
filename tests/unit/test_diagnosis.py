"""The diagnosis over a lab snapshot (no root): causes chosen from what a rule is, fixes checked on a
copy of the model, and the reconcile branches between the static path and the live evidence."""
import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from netdiag.snapshot_model import Model
from netdiag.reason import fixes, reconcile
from netdiag.reason.causes import CAUSES
from netdiag.reason.static_trace import run_static, trace
from netdiag.reason.stop import Stop

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


@pytest.fixture
def model():
    return Model(copy.deepcopy(FIXTURE))


def ns_of(model, name):
    return next(ns for ns in model.namespaces.values() if ns["name"] == name)


def host(model):
    return model.namespaces[model.snap["host"]]


def rules(ns):
    return ns["nftables"]["nftables"]


def outside(m):
    return "ns:" + next(n for ns in m.namespaces.values() for n in ns["netns_names"] if n.endswith("-out"))


# -- causes from what the rule is -----------------------------------------------------------------

def test_a_rule_named_like_docker_isolation_but_matching_a_port_is_a_firewall_drop(model):
    h = host(model)
    db_ip = next(a["address"] for a in ns_of(model, "db")["addresses"] if a["ifname"] == "eth0")
    rules(h).append({"chain": {"family": "ip", "table": "mine", "name": "DOCKER-ISOLATION-STAGE-2", "type": "filter",
                               "hook": "forward", "prio": -10, "policy": "accept"}})
    rules(h).append({"rule": {"family": "ip", "table": "mine", "chain": "DOCKER-ISOLATION-STAGE-2", "handle": 7,
                              "comment": "isolate everything", "expr": [
                                  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": db_ip}},
                                  {"drop": None}]}})
    r, fix = run_static(model, "api", "db", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "FIREWALL_DROP"), r.summary  # not NETWORK_ISOLATION by name
    assert fix.command == "nft delete rule ip mine DOCKER-ISOLATION-STAGE-2 handle 7"
    check = fixes.check(model, fix, lambda m: trace(m, "api", "db", port=5432))
    assert check["checked"] and check["delivers"], check
    assert run_static(model, "api", "db", port=5432)[0].cause == "FIREWALL_DROP"  # the check edited a copy only


def test_icc_needs_the_networks_icc_off_not_the_rules_shape(model):
    h = host(model)
    bridge = next(n["bridge"] for n in model.snap["networks"] if n["name"] == "back")
    rules(h).append({"chain": {"family": "ip", "table": "mine", "name": "fw", "type": "filter", "hook": "forward",
                               "prio": -10, "policy": "accept"}})
    rules(h).append({"rule": {"family": "ip", "table": "mine", "chain": "fw", "handle": 9, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": bridge}},
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": bridge}}, {"drop": None}]}})
    model.snap["networks"] = [dict(n) for n in model.snap["networks"]]
    h.setdefault("sysctls", {})["net.bridge.bridge-nf-call-iptables"] = "1"
    assert trace(model, "api", "db", port=5432).cause == "FIREWALL_DROP"  # icc is on: a user's rule
    for n in model.snap["networks"]:
        if n["name"] == "back":
            n["options"] = {**n.get("options", {}), "com.docker.network.bridge.enable_icc": "false"}
    assert trace(model, "api", "db", port=5432).cause == "ICC_DISABLED"


def docker_forward_policy(model, h) -> None:
    """What a Docker engine adds to a host: its network docker-x, FORWARD policy drop with a jump to
    DOCKER-USER and an accept for its own bridge, and br_netfilter handing bridged frames to it."""
    model.snap["networks"].append({"runtime": "docker", "name": "dnet", "bridge": "docker-x", "subnet": "10.99.0.0/24",
                                   "options": {}})
    rules(h).append({"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "type": "filter", "hook": "forward",
                               "prio": 0, "policy": "drop"}})
    rules(h).append({"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER"}})
    rules(h).append({"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 3,
                              "expr": [{"jump": {"target": "DOCKER-USER"}}]}})
    rules(h).append({"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 4, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "docker-x"}}, {"accept": None}]}})
    h.setdefault("sysctls", {})["net.bridge.bridge-nf-call-iptables"] = "1"


def test_a_policy_drop_of_a_table_that_governs_other_networks_is_a_foreign_firewall(model):
    h = host(model)
    backend = next(n for n in model.snap["networks"] if n["name"] == "back")
    docker_forward_policy(model, h)
    r, fix = run_static(model, "api", "db", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "FOREIGN_FIREWALL"), r.summary
    br = backend["bridge"]
    assert fix.command == f"nft insert rule ip filter DOCKER-USER iifname {br} accept && nft insert rule ip filter DOCKER-USER oifname {br} accept"
    assert fixes.check(model, fix, lambda m: trace(m, "api", "db", port=5432))["delivers"]


def test_a_plain_bridge_under_another_managers_policy_is_a_foreign_firewall_fixed_both_ways(model):
    """A bridge no runtime records (made by hand), on a host whose FORWARD policy belongs to Docker:
    FOREIGN_FIREWALL, and the fix accepts that bridge's traffic both ways in DOCKER-USER, checked
    on the request and the reply."""
    h = host(model)
    br = next(n["bridge"] for n in model.snap["networks"] if n["name"] == "back")
    model.snap["networks"] = [n for n in model.snap["networks"] if n["name"] != "back"]  # no runtime knows it now
    docker_forward_policy(model, h)
    r, fix = run_static(model, "api", "db", port=5432)
    assert (r.verdict, r.cause) == ("blocked", "FOREIGN_FIREWALL"), r.summary
    assert f"bridge {br} (a plain Linux bridge" in r.summary
    assert fix.command == f"nft insert rule ip filter DOCKER-USER iifname {br} oifname {br} accept"
    check = fixes.check(model, fix, lambda m: trace(m, "api", "db", port=5432))
    assert check["checked"] and check["delivers"], check
    # an accept for the request only is not a fix: the reply dies at the same policy
    only_request = fixes.Fix("x", fixes.insert_rules(h["id"], "ip", "filter", "DOCKER-USER",
                                                     [fixes.flow_accept("", r.dst_ip, "tcp", 5432)]))
    check = fixes.check(model, only_request, lambda m: trace(m, "api", "db", port=5432))
    assert check["checked"] and not check["delivers"] and "FOREIGN_FIREWALL" in check["detail"], check


def test_every_cause_the_engine_can_name_is_in_the_catalogue():
    import re

    reason = Path(__file__).parents[2] / "netdiag" / "reason"
    src = "".join(p.read_text() for p in [reason / "static_trace.py", *sorted(reason.glob("trace_*.py")),
                                          reason / "attribute.py", reason / "reconcile.py"])
    named = set(re.findall(r'"([A-Z_]{6,})"', src)) & {c for c in re.findall(r'Stop\([^,]+, "([A-Z_]+)"', src)} | \
        set(re.findall(r'cause="([A-Z_]+)"', src))
    assert named and named <= set(CAUSES), named - set(CAUSES)
    with pytest.raises(ValueError):
        Stop("blocked", "NOT_A_CAUSE", "x")


# -- fix checks -----------------------------------------------------------------------------------------

def test_a_fix_the_model_cannot_express_is_reported_unchecked(model):
    r, fix = run_static(model, outside(model), "203.0.113.2", port=80)
    assert r.cause == "PORT_NOT_PUBLISHED" and fix.apply is None
    check = fixes.check(model, fix, lambda m: trace(m, outside(model), "203.0.113.2", port=80))
    assert check == {"checked": False, "delivers": None, "detail": fix.why_unchecked}


def test_a_host_port_nobody_serves_names_the_one_container_that_publishes_nothing(model):
    # db (5432) and api (80) both publish nothing: which one was meant is a guess, so no attribution
    assert run_static(model, outside(model), "203.0.113.2", port=9999)[0].cause == "NO_LISTENER"
    api = next(c for c in model.containers() if c["name"] == "api")
    model.namespaces[api["ns"]]["sockets"] = []
    r, fix = run_static(model, outside(model), "203.0.113.2", port=9999)
    assert r.cause == "PORT_NOT_PUBLISHED" and "db listens on 5432 but publishes no port" in r.summary
    assert "-p 9999:5432" in fix.command and fix.apply is None


def test_a_fix_that_does_not_help_says_what_still_blocks(model):
    r, fix = run_static(model, "db", "api", port=9000)
    assert r.cause == "LISTENER_LOOPBACK_ONLY"
    useless = fixes.Fix("true", lambda m, ov: None)
    check = fixes.check(model, useless, lambda m: trace(m, "db", "api", port=9000))
    assert check["checked"] and not check["delivers"] and "LISTENER_LOOPBACK_ONLY" in check["detail"]
    assert fixes.check(model, fix, lambda m: trace(m, "db", "api", port=9000))["delivers"]


# -- reconcile ------------------------------------------------------------------------------------------

def live(outcome, detail="", seen=(), nftrace=(), drops=()):
    return SimpleNamespace(outcome=outcome, detail=detail, seen=list(seen), nftrace=list(nftrace), drops=list(drops),
                           elapsed=0.1, notes=[], nftrace_error=None, drops_scope="host")


def seen_all(r, count=1):
    return [{"ns_path": h.ns_path, "ifname": h.interface, "count": count} for h in r.hops]


def test_reconcile_agree(model):
    r = trace(model, "api", "db", port=5432)
    out, fix = r, reconcile.merge(model, r, live("connected", "ok", seen_all(r)))
    assert out.reconciled == "static and live agree" and out.verdict == "delivered" and fix is None


def test_reconcile_disagree_live_delivered_wins_and_says_so(model):
    r = trace(model, "db", "api", port=81)
    out, _ = r, reconcile.merge(model, r, live("connected", "handshake"))
    assert out.verdict == "delivered" and out.reconciled.startswith("DISAGREE")


def test_reconcile_static_delivered_probe_lost_without_a_netfilter_drop_is_unknown(model):
    r = trace(model, "api", "db", port=5432)
    out, _ = r, reconcile.merge(model, r, live("timeout", "no answer", drops=[{"reason": "NO_SOCKET", "count": 2}]))
    assert out.verdict == "unknown" and "kernel's packet trace saw none" in out.summary
    assert any(e.kind == "kernel_drop" and e.extra["scope"] == "host-wide" for e in out.evidence)


@pytest.mark.parametrize("proto", ["tcp", 6])  # the kernel's trace events carry the protocol number
def test_reconcile_the_kernels_trace_decides_over_the_static_path(model, proto):
    r = trace(model, "api", "db", port=5432)
    h = host(model)
    rules(h).append({"chain": {"family": "inet", "table": "t", "name": "c", "type": "filter", "hook": "forward",
                               "prio": 0, "policy": "accept"}})
    rules(h).append({"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 5,
                              "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 0}}, {"drop": None}]}})
    for hp in r.hops:
        hp.ns_path = f"/fake/{hp.namespace}"
    host_path = f"/fake/{h['id']}"
    event = {"ns_path": host_path, "family": "inet", "table": "t", "chain": "c", "handle": 5, "type": "rule",
             "verdict": "drop", "iif": r.hops[1].interface, "oif": r.hops[3].interface,
             "packet": {"src": "10.50.0.2", "dst": r.dst_ip, "proto": proto, "sport": 40000, "dport": 5432}}
    out, fix = r, reconcile.merge(model, r, live("timeout", "no answer", nftrace=[event]))
    assert (out.verdict, out.cause) == ("blocked", "FIREWALL_DROP")
    assert out.reconciled.startswith("the kernel's packet trace decides") and out.blocked_at
    assert fix.command == "nft delete rule inet t c handle 5"


@pytest.mark.parametrize("proto", ["tcp", 6])
def test_reconcile_a_policy_drop_named_by_the_kernel_gets_an_accept_for_this_flow(model, proto):
    r = trace(model, "api", "db", port=5432)
    h = host(model)
    rules(h).append({"chain": {"family": "inet", "table": "t", "name": "c", "type": "filter", "hook": "forward",
                               "prio": 0, "policy": "drop"}})
    for hp in r.hops:
        hp.ns_path = f"/fake/{hp.namespace}"
    event = {"ns_path": f"/fake/{h['id']}", "family": "inet", "table": "t", "chain": "c", "type": "policy", "verdict": "drop",
             "iif": r.hops[1].interface, "oif": r.hops[3].interface,
             "packet": {"src": "10.50.0.2", "dst": r.dst_ip, "proto": proto, "sport": 40000, "dport": 5432}}
    out, fix = r, reconcile.merge(model, r, live("timeout", "no answer", nftrace=[event]))
    assert (out.verdict, out.cause) == ("blocked", "FIREWALL_DROP")
    assert fix.command.endswith(f"nft insert rule inet t c ip saddr 10.50.0.2 ip daddr {r.dst_ip} tcp dport 5432 accept")


def test_reconcile_when_captures_failed_and_the_probe_could_not_run(model):
    r = trace(model, "api", "db", port=5432)
    for hp in r.hops:
        hp.ns_path = "/fake"
    failed = [{"ns_path": "/fake", "ifname": hp.interface, "count": None, "error": "cannot capture"} for hp in r.hops]
    out, _ = r, reconcile.merge(model, r, live("connected", "ok", failed))
    assert all(hp.seen is None for hp in out.hops) and out.live["last_seen_hop"] is None
    assert out.reconciled == "static and live agree"
    out = trace(model, "api", "db", port=5432)
    reconcile.merge(model, out, live("error", "probe child died"))
    assert out.verdict == "delivered" and "could not run" in out.reconciled


@pytest.mark.parametrize("proto", ["icmp", 1])  # the kernel's trace events carry the protocol number
def test_reconcile_a_dropped_icmp_error_back_to_the_sender_is_evidence_not_the_cause(model, proto):
    r = trace(model, "api", "db", port=5432)
    r.verdict, r.cause, r.summary, r.blocked_at = "blocked", "MTU_BLACKHOLE", "a 1500-byte packet does not fit", 3
    h = host(model)
    rules(h).append({"chain": {"family": "inet", "table": "t", "name": "out", "type": "filter", "hook": "output",
                               "prio": 0, "policy": "accept"}})
    rules(h).append({"rule": {"family": "inet", "table": "t", "chain": "out", "handle": 9, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": "destination-unreachable"}},
        {"drop": None}]}})
    for hp in r.hops:
        hp.ns_path = f"/fake/{hp.namespace}"
    event = {"ns_path": f"/fake/{h['id']}", "family": "inet", "table": "t", "chain": "out", "handle": 9, "type": "rule",
             "verdict": "drop", "direction": "reply", "iif": None, "oif": "eth0",
             "packet": {"src": "10.0.0.1", "dst": "10.50.0.2", "proto": proto, "icmp_type": 3, "icmp_code": 4}}
    static_fix = fixes.Fix("ip link set dev eth0 mtu 1500", lambda m, ov: None)
    out, fix = r, reconcile.merge(model, r, live("timeout", "no answer", nftrace=[event]), static_fix)
    assert (out.verdict, out.cause, out.blocked_at) == ("blocked", "MTU_BLACKHOLE", 3)  # not FIREWALL_DROP
    assert out.reconciled.startswith("static and live agree") and "not the probe" in out.reconciled
    assert any("what makes it a black hole" in e.detail for e in out.evidence if e.kind == "nft_trace")
    eats = [e for e in out.evidence if e.kind == "nft_rule" and e.extra.get("handle") == 9]
    assert eats and eats[0].extra["table"] == "inet t" and eats[0].extra["namespace"] == h["id"]
    # the fix stays the MTU step's (checked on the model), and names the rule that eats the ICMP
    assert fix.command == static_fix.command and fix.apply is static_fix.apply
    assert any(a.startswith("nft delete rule inet t out handle 9") for a in fix.alternatives), fix.alternatives
    assert "inet t out handle 9" in out.fix.text and "inet t out" in out.summary


def test_reconcile_a_dropped_answer_is_never_the_probes_drop(model):
    """The answer (here the SYN-ACK) dropped by a rule is a related packet: it does not become the
    drop of the probe (no FIREWALL_DROP 'for the probe' with a fix naming the client's port)."""
    r = trace(model, "api", "db", port=5432)
    h = host(model)
    for hp in r.hops:
        hp.ns_path = f"/fake/{hp.namespace}"
    event = {"ns_path": f"/fake/{h['id']}", "family": "inet", "table": "t", "chain": "c", "type": "policy", "verdict": "drop",
             "direction": "reply", "iif": r.hops[3].interface, "oif": r.hops[1].interface,
             "packet": {"src": r.dst_ip, "dst": "10.50.0.2", "proto": 6, "sport": 5432, "dport": 40000}}
    assert reconcile.first_drop([event]) is None
    out, _ = r, reconcile.merge(model, r, live("timeout", "no answer", nftrace=[event]))
    assert "the probe's answer (not the probe)" in out.reconciled
    assert all(e.extra.get("packet_role") == "related" for e in out.evidence if e.kind == "nft_trace")


def test_a_summary_is_a_sentence_but_a_name_keeps_its_spelling():
    from netdiag.reason.stop import sentence

    assert sentence("nothing in web listens on tcp port 81", ["web"]) == "Nothing in web listens on tcp port 81"
    assert sentence("web1 (netdiag container) drops the packet", ["web1 (netdiag container)"]) == \
        "web1 (netdiag container) drops the packet"
    assert sentence("vx-8aa0 has no FDB entry for 02:42:0a:00:01:03", ["h1", "vx-8aa0"]).startswith("vx-8aa0 ")
    assert sentence("", ["x"]) == ""


# -- the round trip: the reply's way back -----------------------------------------------------------------

def test_a_delivered_trace_follows_the_reply_back_through_the_nat_it_passed(model):
    r = trace(model, outside(model), "203.0.113.2", port=8080)  # a published port: DNAT on the way in
    assert r.verdict == "delivered" and "SYN-ACK gets back" in r.summary
    back = r.reply.hops
    assert r.reply.verdict == "delivered" and all(h.leg == "reply" for h in back)
    assert back[0].label.startswith("web") and back[-1].label == outside(model) and back[-1].kind == "socket"
    assert any(e.kind == "nat" and "reverses the request's DNAT" in e.detail for e in r.evidence)
    r = trace(model, "api", "203.0.113.1", proto="icmp")  # masqueraded on the way out: de-SNAT on the way back
    assert r.verdict == "delivered" and r.reply.hops[-1].label.startswith("api")
    assert any(e.kind == "nat" and "reverses the request's SNAT" in e.detail for e in r.evidence)


def test_a_server_without_a_route_back_is_no_route_at_the_server_and_the_fix_adds_it(model):
    web = ns_of(model, "web")
    web["routes"] = [x for x in web["routes"] if x["dst"] != "default"]
    r, fix = run_static(model, outside(model), "203.0.113.2", port=8080)
    assert (r.verdict, r.cause) == ("blocked", "NO_ROUTE"), r.summary  # not NO_NAT: nothing is NATed there
    hop = r.hops[r.blocked_at - 1]
    assert (hop.namespace, hop.kind, hop.leg) == (web["id"], "route", "reply")
    assert "SYN-ACK does not get back" in r.summary
    assert fix.command.endswith("ip route add 203.0.113.0/24 via 172.17.0.1 dev eth0"), fix.command
    check = fixes.check(model, fix, lambda m: trace(m, outside(model), "203.0.113.2", port=8080))
    assert check["checked"] and check["delivers"], check
    assert "40000" not in fix.text()


def test_a_reply_dropped_by_a_policy_gets_an_accept_for_established_flows_never_the_clients_port(model):
    h = host(model)
    web_ip = "172.17.0.2"
    rules(h).append({"chain": {"family": "inet", "table": "fw", "name": "fwd", "type": "filter", "hook": "forward",
                               "prio": 0, "policy": "drop"}})
    rules(h).append({"rule": {"family": "inet", "table": "fw", "chain": "fwd", "handle": 3, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": web_ip}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"accept": None}]}})
    r, fix = run_static(model, outside(model), "203.0.113.2", port=8080)
    assert (r.verdict, r.cause) == ("blocked", "FIREWALL_DROP"), r.summary
    hop = r.hops[r.blocked_at - 1]
    assert (hop.namespace, hop.kind, hop.leg) == (h["id"], "firewall", "reply")
    assert fix.command == "nft insert rule inet fw fwd ct state established,related accept"
    assert "40000" not in fix.text()  # the client's ephemeral port is never opened
    check = fixes.check(model, fix, lambda m: trace(m, outside(model), "203.0.113.2", port=8080))
    assert check["checked"] and check["delivers"], check


def test_no_nat_is_named_where_a_private_source_leaves_the_host_unmasqueraded(model):
    h = host(model)
    rules(h)[:] = [i for i in rules(h) if not ("rule" in i and any("masquerade" in e for e in i["rule"]["expr"]))]
    r, fix = run_static(model, "api", "203.0.113.1", proto="icmp")
    assert (r.verdict, r.cause) == ("blocked", "NO_NAT"), r.summary
    hop = r.hops[r.blocked_at - 1]
    assert (hop.namespace, hop.interface, hop.direction) == (h["id"], "eth0", "egress")
    assert "ip route add 10.50.0.0/24 via 203.0.113.2 dev eth0" in fix.command
    assert fixes.check(model, fix, lambda m: trace(m, "api", "203.0.113.1", proto="icmp"))["delivers"]


def test_reconcile_an_answer_the_kernel_dropped_where_the_model_saw_none_is_the_replys_own_hop(model):
    r = trace(model, "api", "db", port=5432)
    h = host(model)
    rules(h).append({"chain": {"family": "inet", "table": "t", "name": "c", "type": "filter", "hook": "forward",
                               "prio": 0, "policy": "drop"}})
    for hp in r.hops:
        hp.ns_path = f"/fake/{hp.namespace}"
    event = {"ns_path": f"/fake/{h['id']}", "family": "inet", "table": "t", "chain": "c", "type": "policy", "verdict": "drop",
             "direction": "reply", "iif": r.hops[3].interface, "oif": r.hops[1].interface,
             "packet": {"src": r.dst_ip, "dst": "10.50.0.2", "proto": 6, "sport": 5432, "dport": 40000}}
    out, fix = r, reconcile.merge(model, r, live("timeout", "no answer", nftrace=[event]))
    assert (out.verdict, out.cause) == ("blocked", "FIREWALL_DROP")
    hop = out.hops[out.blocked_at - 1]
    assert (hop.namespace, hop.leg) == (h["id"], "reply") and "answer" in out.summary
    assert fix.command == "nft insert rule inet t c ct state established,related accept"  # never port 40000


def test_reconcile_a_router_answering_frag_needed_where_the_model_sees_no_mtu_step_is_a_black_hole_there(model):
    """The static path delivers (no link of the model is too small), the probe is lost, and the
    kernel's trace saw the host answer it with ICMP 'fragmentation needed' that a rule then dropped:
    MTU_BLACKHOLE at the host, the fix lets that ICMP through; not a drop of the probe."""
    r = trace(model, "api", "db", port=5432, size=1400)
    assert r.verdict == "delivered"
    h = host(model)
    rules(h).append({"chain": {"family": "inet", "table": "t", "name": "out", "type": "filter", "hook": "output",
                               "prio": 0, "policy": "accept"}})
    rules(h).append({"rule": {"family": "inet", "table": "t", "chain": "out", "handle": 9, "expr": [
        {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": "destination-unreachable"}},
        {"drop": None}]}})
    for hp in r.hops:
        hp.ns_path = f"/fake/{hp.namespace}"
    event = {"ns_path": f"/fake/{h['id']}", "family": "inet", "table": "t", "chain": "out", "handle": 9, "type": "rule",
             "verdict": "drop", "direction": "reply", "iif": None, "oif": r.hops[1].interface,
             "packet": {"src": "10.50.0.1", "dst": "10.50.0.2", "proto": 1, "icmp_type": 3, "icmp_code": 4}}
    out, fix = r, reconcile.merge(model, r, live("timeout", "1400 bytes not acknowledged", seen_all(r, 1), nftrace=[event]))
    assert (out.verdict, out.cause) == ("blocked", "MTU_BLACKHOLE"), out.summary
    assert out.hops[out.blocked_at - 1].namespace == h["id"]
    assert fix.command == "nft delete rule inet t out handle 9" and fix.apply is None


def test_a_forward_policy_drop_gets_the_flow_and_its_answers_accepted_checked_both_ways(model):
    h = host(model)
    rules(h).append({"chain": {"family": "inet", "table": "fw", "name": "gate", "type": "filter", "hook": "forward",
                               "prio": 0, "policy": "drop"}})
    r, fix = run_static(model, outside(model), "203.0.113.2", port=8080)
    assert (r.verdict, r.cause) == ("blocked", "FIREWALL_DROP") and not r.hops[r.blocked_at - 1].leg
    assert fix.command == ("nft insert rule inet fw gate ct state established,related accept && "
                           "nft insert rule inet fw gate ip saddr 203.0.113.1 ip daddr 172.17.0.2 tcp dport 80 accept")
    check = fixes.check(model, fix, lambda m: trace(m, outside(model), "203.0.113.2", port=8080))
    assert check["checked"] and check["delivers"] and "request and reply" in check["detail"], check
