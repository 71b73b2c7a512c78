"""netdiag.reason.nftables: the exact nft evaluator, on rulesets listed by the REAL kernel.

The JSON fixtures under tests/fixtures/nft/ are `nft -j list ruleset` of rulesets loaded into a
throwaway network namespace; their sources sit beside them (.nft, .sh) and in
tests/fixtures/regen_nft.py, which regenerates them (root, nft, iptables-nft):

    .venv/bin/python tests/fixtures/regen_nft.py

The tests themselves are pure: no root, no processes.
"""
from __future__ import annotations

import json

import pytest

from netdiag.reason.nftables import Packet, base_chains, evaluate, rule_text
from tests.fixtures.regen_nft import FIXTURES, sources

# ---------------------------------------------------------------------------------------------
# helpers


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


HOST = "192.168.1.10"
LOCAL = {HOST, "127.0.0.1", "172.17.0.1", "172.18.0.1", "172.19.0.1"}


def rule_handle(ruleset: dict, family: str, table: str, chain: str, comment: str) -> int:
    for item in ruleset["nftables"]:
        r = item.get("rule")
        if r and (r["family"], r["table"], r["chain"]) == (family, table, chain) and r.get("comment") == comment:
            return r["handle"]
    raise AssertionError(f"no rule {comment!r} in {family} {table} {chain}")


def verdicts(res) -> list[tuple[str, str]]:
    return [(s.chain, s.verdict) for s in res.steps]


# ---------------------------------------------------------------------------------------------
# fixtures are what the kernel lists for today's render()


def test_netdiag_fixture_is_current_render():
    for name, (kind, text) in sources().items():
        assert (FIXTURES / f"{name}.{kind}").read_text() == text, \
            f"{name}: the source changed; regenerate: .venv/bin/python tests/fixtures/regen_nft.py"
        assert load(name)["nftables"], name


# ---------------------------------------------------------------------------------------------
# netdiag's own firewall


@pytest.fixture(scope="module")
def nd():
    return load("netdiag")


def pre(ruleset, dport, proto="tcp", dst=HOST, hook="prerouting", **kw):
    pkt = Packet(src="203.0.113.5", dst=dst, proto=proto, sport=40000, dport=dport,
                 iif=None if hook == "output" else "eth0", oif="lo" if hook == "output" else None)
    return evaluate(ruleset, hook, pkt, chain_type="nat", local_addrs=LOCAL, **kw)


def test_published_port_dnat_rewrites_destination(nd):
    res = pre(nd, 8080)
    assert res.verdict == "accept" and res.packet_exact and res.unknown == []
    assert (res.packet.dst, res.packet.dport, res.packet.ct_status) == ("172.18.0.2", 80, frozenset({"dnat"}))
    assert (res.packet.src, res.packet.sport) == ("203.0.113.5", 40000)
    assert [s.text for s in res.steps] == ["fib daddr type local jump published", "tcp dport 8080 dnat to 172.18.0.2:80"]
    assert res.steps[-1].verdict == "dnat" and res.steps[-1].comment == "port 8080->c0ffee00c0ff:80/tcp"
    assert res.steps[-1].handle == rule_handle(nd, "ip", "netdiag", "published", "port 8080->c0ffee00c0ff:80/tcp")
    assert res.deciding is None


def test_offset_range_uses_the_map(nd):
    res = pre(nd, 9001)
    assert (res.packet.dst, res.packet.dport) == ("172.17.0.3", 81)
    assert res.steps[-1].text.startswith("tcp dport 9000-9002 dnat ip to tcp dport map { 9000 : 172.17.0.3 . 80,")


def test_same_port_range_keeps_the_port(nd):
    res = pre(nd, 5001, proto="udp")
    assert (res.packet.dst, res.packet.dport) == ("172.17.0.2", 5001)
    assert pre(nd, 5001).packet.dst == HOST  # tcp 5001 is not published


def test_loopback_only_port(nd):
    res = pre(nd, 6000, dst="127.0.0.1", hook="output")
    assert (res.packet.dst, res.packet.dport) == ("172.17.0.3", 60)
    assert res.steps[0].comment == "published ports from the host"
    assert pre(nd, 6000).packet.dst == HOST  # not from outside on the host's address


def test_not_local_or_unpublished_is_left_alone(nd):
    res = pre(nd, 8080, dst="8.8.8.8")  # fib daddr type unicast: the jump does not match
    assert res.verdict == "accept" and res.packet.dst == "8.8.8.8"
    assert verdicts(res) == [("prerouting", "policy accept")]
    res = pre(nd, 22)
    assert res.packet.dst == HOST and verdicts(res) == [("prerouting", "jump published"), ("prerouting", "policy accept")]


def test_established_packets_skip_nat_chains(nd):
    pkt = Packet("203.0.113.5", HOST, "tcp", 40000, 8080, iif="eth0", ct_state="established")
    res = evaluate(nd, "prerouting", pkt, chain_type="nat", local_addrs=LOCAL)
    assert res.packet == pkt and res.steps == []


def test_fib_without_local_addresses_is_unknown_not_guessed(nd):
    pkt = Packet("203.0.113.5", HOST, "tcp", 40000, 8080, iif="eth0")
    res = evaluate(nd, "prerouting", pkt, chain_type="nat")
    assert res.verdict == "accept" and not res.packet_exact  # the jump might DNAT it
    assert [u["reason"] for u in res.unknown] == ["fib daddr type: the namespace's local addresses were not given"]
    assert res.unknown[0]["changes_outcome"] is True


def fwd(ruleset, src, dst, dport, iif, oif, **kw):
    pkt = Packet(src=src, dst=dst, proto="tcp", sport=40000, dport=dport, iif=iif, oif=oif,
                 ct_state=kw.pop("ct_state", "new"), ct_status=frozenset(kw.pop("ct_status", ())))
    return evaluate(ruleset, "forward", pkt, local_addrs=LOCAL, **kw)


def test_published_port_is_forwarded(nd):
    res = fwd(nd, "203.0.113.5", "172.18.0.2", 80, "eth0", "br-0123456789ab", ct_status={"dnat"})
    assert res.verdict == "accept"
    assert [(s.comment, s.verdict) for s in res.steps] == [("published on br-0123456789ab", "accept")]
    assert res.deciding is None and res.unknown == []


def test_unpublished_port_is_dropped(nd):
    res = fwd(nd, "203.0.113.5", "172.18.0.2", 22, "eth0", "br-0123456789ab")
    assert res.verdict == "drop"
    d = res.deciding
    assert (d.family, d.table, d.chain, d.verdict) == ("ip", "netdiag", "forward", "drop")
    assert d.comment == "unpublished on br-0123456789ab"
    assert d.text == 'oifname "br-0123456789ab" iifname != "br-0123456789ab" drop'
    assert d.handle == rule_handle(nd, "ip", "netdiag", "forward", "unpublished on br-0123456789ab")
    assert res.steps == [d]


def test_isolation_between_bridges(nd):
    res = fwd(nd, "172.17.0.2", "172.18.0.2", 80, "docker0", "br-0123456789ab")
    assert res.verdict == "drop" and res.deciding.comment == "isolate docker0"
    assert res.deciding.text == 'iifname "docker0" oifname != "docker0" oifname @bridges drop'
    # even a DNATed (published) packet from another bridge is isolated: isolation comes first
    res = fwd(nd, "172.17.0.2", "172.18.0.2", 80, "docker0", "br-0123456789ab", ct_status={"dnat"})
    assert res.deciding.comment == "isolate docker0"


def test_internal_network(nd):
    res = fwd(nd, "172.19.0.2", "8.8.8.8", 443, "br-fedcba987654", "eth0")
    assert res.verdict == "drop" and res.deciding.comment == "internal br-fedcba987654"


def test_outbound_and_replies_are_accepted(nd):
    res = fwd(nd, "172.17.0.2", "8.8.8.8", 443, "docker0", "eth0")
    assert res.verdict == "accept" and res.steps[0].comment == "from docker0"
    res = fwd(nd, "8.8.8.8", "172.17.0.2", 40000, "eth0", "docker0", ct_state="established")
    assert res.verdict == "accept" and res.steps[0].comment == "replies to docker0"


def test_icc_false_drops_in_the_bridge_family(nd):
    pkt = Packet("172.18.0.2", "172.18.0.3", "tcp", 40000, 80, iif="veth1a", oif="veth1b")
    res = evaluate(nd, "forward", pkt, families=("bridge",))
    assert res.verdict == "drop" and res.deciding.family == "bridge"
    assert res.deciding.comment == "icc off on br-0123456789ab"
    assert res.deciding.text == "iifname @ports_0123456789ab oifname @ports_0123456789ab drop"
    # the ip-family forward chain is not consulted for bridge-family evaluation, and vice versa
    assert all(s.family == "bridge" for s in res.steps)
    other = Packet("172.17.0.2", "172.17.0.3", "tcp", 40000, 80, iif="vethx", oif="vethy")
    assert evaluate(nd, "forward", other, families=("bridge",)).verdict == "accept"


def test_masquerade_and_hairpin(nd):
    pkt = Packet("172.17.0.2", "8.8.8.8", "udp", 40000, 53, iif="docker0", oif="eth0")
    res = evaluate(nd, "postrouting", pkt, chain_type="nat", masquerade_addr=HOST)
    assert (res.packet.src, res.packet.ct_status) == (HOST, frozenset({"snat"}))
    assert res.steps[-1].comment == "masquerade docker0" and res.steps[-1].verdict == "masquerade"
    # without masquerade_addr the rewrite is reported, not invented
    res = evaluate(nd, "postrouting", pkt, chain_type="nat")
    assert res.verdict == "accept" and not res.packet_exact and res.packet.src == "172.17.0.2"
    assert "masquerade_addr not given" in res.unknown[0]["reason"]
    # hairpin: a DNATed packet from the bridge back into it is masqueraded to the gateway
    hp = Packet("172.18.0.3", "172.18.0.2", "tcp", 40000, 80, iif="br-0123456789ab", oif="br-0123456789ab",
                ct_status=frozenset({"dnat"}))
    res = evaluate(nd, "postrouting", hp, chain_type="nat", masquerade_addr="172.18.0.1")
    assert res.packet.src == "172.18.0.1" and res.steps[-1].comment == "hairpin br-0123456789ab"
    # the same without DNAT stays as it is (container to container)
    res = evaluate(nd, "postrouting", replace_status(hp, ()), chain_type="nat", masquerade_addr="172.18.0.1")
    assert res.packet.src == "172.18.0.3" and verdicts(res) == [("postrouting", "policy accept")]


def replace_status(pkt, status):
    from dataclasses import replace

    return replace(pkt, ct_status=frozenset(status))


def test_chain_type_filter(nd):
    pkt = Packet("203.0.113.5", HOST, "tcp", 40000, 8080, iif="eth0")
    res = evaluate(nd, "prerouting", pkt, chain_type="filter", local_addrs=LOCAL)
    assert res.verdict == "accept" and verdicts(res) == [("guard", "policy accept")] and res.packet == pkt


def test_loopback_destination_from_a_neighbour_is_dropped_before_dnat(nd):
    spoofed = Packet("203.0.113.5", "127.0.0.1", "tcp", 40000, 6000, iif="eth0")
    res = evaluate(nd, "prerouting", spoofed, chain_type="filter", local_addrs=LOCAL)
    assert res.verdict == "drop" and res.deciding.comment == "loopback addresses only from lo"
    local = Packet("127.0.0.1", "127.0.0.1", "tcp", 40000, 6000, iif="lo")
    assert evaluate(nd, "prerouting", local, chain_type="filter", local_addrs=LOCAL).verdict == "accept"


# ---------------------------------------------------------------------------------------------
# a user's drop rule in another table


def test_user_drop_rule_decides_after_netdiag_accepts():
    rs = load("user_drop")
    nat = pre(rs, 8081)
    assert (nat.packet.dst, nat.packet.dport) == ("172.17.0.2", 80)
    p = nat.packet
    res = evaluate(rs, "forward", Packet(p.src, p.dst, "tcp", p.sport, p.dport, iif="eth0", oif="docker0",
                                         ct_status=p.ct_status), local_addrs=LOCAL)
    assert res.verdict == "drop"
    d = res.deciding
    assert (d.family, d.table, d.chain, d.verdict) == ("inet", "filter", "forward", "drop")
    assert d.handle == rule_handle(rs, "inet", "filter", "forward", "user: no web on .2")
    assert d.text == "ip daddr 172.17.0.2 tcp dport 80 drop" and d.comment == "user: no web on .2"
    # netdiag's chain ran first and accepted: accept ends only that base chain
    assert [(s.table, s.comment, s.verdict) for s in res.steps] == [
        ("netdiag", "published on docker0", "accept"), ("filter", "user: no web on .2", "drop")]
    # another port of the same container passes both chains
    ok = evaluate(rs, "forward", Packet(p.src, "172.17.0.2", "tcp", 1, 81, iif="eth0", oif="docker0",
                                        ct_status=frozenset({"dnat"})), local_addrs=LOCAL)
    assert ok.verdict == "accept" and ok.steps[-1].verdict == "policy accept"


# ---------------------------------------------------------------------------------------------
# policies, jumps, goto, priorities, numgen, limit, mark


@pytest.fixture(scope="module")
def pj():
    return load("policy_jump")


def pj_fwd(rs, src, dst, dport, proto="tcp", **kw):
    return evaluate(rs, "forward", Packet(src, dst, proto, 40000, dport, iif="eth0", oif="eth1", **kw))


def test_base_chains_sorted_by_priority(pj):
    assert [c["name"] for c in base_chains(pj, [("ip", "forward")])] == ["early", "main"]
    rs = load("docker_iptables")
    chains = base_chains(rs, [("ip", "prerouting"), ("inet", "prerouting")])
    assert [(c["table"], c["name"], c["prio"]) for c in chains] == [("raw", "PREROUTING", -300), ("nat", "PREROUTING", -100)]


def test_accept_in_one_base_chain_does_not_stop_the_next(pj):
    res = pj_fwd(pj, "10.9.1.1", "10.1.0.5", 80)
    assert res.verdict == "drop"
    assert verdicts(res) == [("early", "accept"), ("main", "jump checks"), ("checks", "drop")]
    assert res.deciding.comment == "blocked range" and res.deciding.chain == "checks"


def test_jump_and_return(pj):
    res = pj_fwd(pj, "10.9.9.9", "10.1.0.5", 80)
    assert res.verdict == "accept"
    assert verdicts(res) == [("early", "accept"), ("main", "jump checks"), ("checks", "return"), ("main", "accept")]
    assert res.steps[-1].text == "ip daddr 10.1.0.0/24 tcp dport { 22, 80 } accept"
    res = pj_fwd(pj, "10.3.0.1", "10.1.0.5", 80)  # falls off `checks` and returns
    assert verdicts(res)[-2:] == [("main", "jump checks"), ("main", "accept")]


def test_policy_drop_is_deciding(pj):
    res = pj_fwd(pj, "10.3.0.1", "10.2.0.1", 80)
    assert res.verdict == "drop" and res.deciding.verdict == "policy drop"
    assert (res.deciding.table, res.deciding.chain, res.deciding.handle) == ("t", "main", None)
    assert res.deciding.text == "type filter hook forward priority 0; policy drop;"


def test_goto_does_not_return(pj):
    res = pj_fwd(pj, "10.3.0.1", "10.1.0.5", 53, proto="udp")
    assert res.verdict == "accept" and verdicts(res)[-2:] == [("main", "goto tail"), ("tail", "accept")]
    res = pj_fwd(pj, "10.3.0.1", "10.1.0.5", 443)  # tail does not match: back to fwd's caller = policy
    assert res.verdict == "drop" and verdicts(res)[-2:] == [("main", "goto tail"), ("main", "policy drop")]


def test_ct_state_and_dependencies(pj):
    assert pj_fwd(pj, "10.3.0.1", "10.2.0.1", 80, ct_state="established").steps[1].comment == "replies"
    # `tcp dport { 22, 80 }` never matches udp, whatever the port
    assert pj_fwd(pj, "10.3.0.1", "10.1.0.5", 80, proto="udp").verdict == "drop"


def test_numgen_is_reported_as_probabilistic(pj):
    pkt = Packet("10.66.1.1", "10.1.0.5", "tcp", 40000, 80, iif="eth0")
    res = evaluate(pj, "prerouting", pkt)
    assert res.verdict == "unknown" and res.deciding is None
    assert verdicts(res) == [("pre", "policy accept")]  # the path where the rule does not match
    (u,) = res.unknown
    assert u["reason"] == "probabilistic (numgen random): drops about 10% of packets"
    assert (u["table"], u["chain"], u["verdict"], u["changes_outcome"]) == ("t", "pre", "drop", True)
    assert u["text"] == "ip saddr 10.66.0.0/16 numgen random mod 100 < 10 drop"
    # other sources: the rule cannot match (its saddr differs), nothing is unknown
    res = evaluate(pj, "prerouting", Packet("10.1.1.1", "10.1.0.5", "tcp", 40000, 80, iif="eth0"))
    assert res.verdict == "accept" and res.unknown == []


def test_unknown_rules_matter_only_when_they_could_change_the_outcome(pj):
    # meta mark: might drop this packet -> unknown
    res = evaluate(pj, "input", Packet("10.77.0.1", "10.0.0.1", "tcp", 40000, 22, iif="eth0"))
    assert res.verdict == "unknown"
    assert [u["reason"] for u in res.unknown][0] == "meta mark: packet marks are not modeled"
    # limit: accept or fall to policy accept -> accept either way
    res = evaluate(pj, "input", Packet("10.5.0.1", "10.0.0.1", "tcp", 40000, 22, iif="eth0"))
    assert res.verdict == "accept"
    (u,) = res.unknown
    assert u["reason"].startswith("rate limit (limit rate 5/minute)") and u["changes_outcome"] is False


# ---------------------------------------------------------------------------------------------
# sets, maps, wildcards, concatenations, NAT forms


@pytest.fixture(scope="module")
def cx():
    return load("constructs")


def cx_fwd(rs, src, dport, iif="a", oif="b", proto="tcp", **kw):
    res = evaluate(rs, "forward", Packet(src, "172.17.0.3", proto, 40000, dport, iif=iif, oif=oif, **kw),
                   families=("inet",))
    return res.verdict, [s.comment or s.verdict for s in res.steps]


def test_named_set_with_prefix_and_range_elements(cx):
    for src in ("10.200.0.1", "192.168.1.5", "1.2.3.4"):
        assert cx_fwd(cx, src, 80) == ("drop", ["named set"]), src
    assert cx_fwd(cx, "192.168.1.10", 80, ct_state="established") == ("accept", ["policy accept"])


def test_interface_wildcard_and_escaped_star(cx):
    assert cx_fwd(cx, "9.9.9.9", 80, iif="veth12") == ("accept", ["wildcard"])
    assert cx_fwd(cx, "9.9.9.9", 80, iif="veth12", oif="eth*")[1][0] != "wildcard"  # `eth\*` is a literal star
    assert cx_fwd(cx, "9.9.9.9", 80, iif="veth12", oif="eth0") == ("accept", ["wildcard"])


def test_anonymous_sets_ranges_and_negation(cx):
    assert cx_fwd(cx, "3.3.3.3", 1500, proto="udp") == ("accept", ["anon sets"])
    assert cx_fwd(cx, "2.2.2.7", 1500, proto="udp", ct_state="established") == ("accept", ["policy accept"])


def test_concatenation_and_status_word(cx):
    assert cx_fwd(cx, "5.6.7.8", 443) == ("accept", ["concat"])
    assert cx_fwd(cx, "5.6.7.8", 444) == ("drop", ["status word"])  # status != 0x20 without the dnat bit
    res = evaluate(cx, "forward", Packet("5.6.7.8", "172.17.0.3", "tcp", 1, 444, iif="a", oif="b",
                                         ct_status=frozenset({"dnat"})), families=("inet",))
    assert res.verdict == "unknown"  # with the dnat bit the word also holds confirmed, assured ...: not modeled
    assert "whole status word" in res.unknown[0]["reason"]


def test_verdict_map(cx):
    est = {"ct_state": "established"}
    assert cx_fwd(cx, "9.9.9.9", 22, iif="eth0", **est) == ("accept", ["vmap"])
    assert cx_fwd(cx, "9.9.9.9", 22, iif="eth2", **est) == ("drop", ["vmap"])
    assert cx_fwd(cx, "9.9.9.9", 22, iif="eth1", **est) == ("drop", ["vmap", "sub drop"])
    assert cx_fwd(cx, "9.9.9.9", 22, iif="eth1", proto="udp", **est) == ("accept", ["vmap", "return", "policy accept"])
    assert cx_fwd(cx, "9.9.9.9", 22, iif="eth9", **est) == ("accept", ["policy accept"])  # no element: no verdict


def cx_nat(rs, dst, dport, hook="prerouting"):
    return evaluate(rs, hook, Packet("198.51.100.7", dst, "tcp", 40000, dport, iif="eth0", oif="eth0"),
                    families=("inet",), chain_type="nat", local_addrs={"192.0.2.1", "127.0.0.1"})


def test_dnat_maps_and_forms(cx):
    res = cx_nat(cx, "192.0.2.1", 80)
    assert (res.packet.dst, res.packet.dport, res.steps[-1].comment) == ("10.0.0.2", 8080, "concat map")
    assert res.steps[-1].text == "dnat ip to ip daddr . tcp dport map { 192.0.2.1 . 80 : 10.0.0.2 . 8080 }"
    res = cx_nat(cx, "192.0.2.1", 443)
    assert (res.packet.dst, res.packet.dport, res.steps[-1].comment) == ("10.0.0.2", 8443, "named map")
    res = cx_nat(cx, "192.0.2.1", 81)
    assert (res.packet.dst, res.packet.dport, res.packet_exact) == ("10.0.0.3", 81, True)
    res = cx_nat(cx, "192.0.2.1", 83)  # the kernel picks from a range: reported, not invented
    assert res.verdict == "accept" and not res.packet_exact and "dnat" in res.packet.ct_status
    assert res.unknown[0]["verdict"] == "dnat" and res.unknown[0]["changes_outcome"]
    res = cx_nat(cx, "192.0.2.1", 82, hook="output")
    assert (res.packet.dst, res.packet.dport, res.packet_exact) == ("192.0.2.1", 82, True)  # nat chain is prerouting
    res = cx_nat(cx, "192.0.2.1", 82)
    assert res.packet.dport == 8080 and not res.packet_exact  # the address is the input interface's


def test_snat_with_port(cx):
    res = evaluate(cx, "postrouting", Packet("10.0.0.2", "8.8.8.8", "tcp", 40000, 443, oif="eth0"),
                   families=("inet",), chain_type="nat")
    assert (res.packet.src, res.packet.sport, res.packet.ct_status) == ("192.0.2.9", 1000, frozenset({"snat"}))
    res = evaluate(cx, "postrouting", Packet("10.0.0.2", "8.8.8.8", "udp", 40000, 53, oif="eth0"),
                   families=("inet",), chain_type="nat")
    assert res.packet.src == "10.0.0.2"


# ---------------------------------------------------------------------------------------------
# Docker's iptables-nft rules: native parts evaluate exactly, xt parts are reported


@pytest.fixture(scope="module")
def dk():
    return load("docker_iptables")


def dk_fwd(rs, src, dst, dport, iif, oif, **kw):
    return evaluate(rs, "forward", Packet(src, dst, "tcp", 40000, dport, iif=iif, oif=oif, **kw), local_addrs=LOCAL)


def test_docker_isolation_is_exact(dk):
    res = dk_fwd(dk, "172.17.0.2", "172.18.0.2", 80, "docker0", "br-1")
    assert res.verdict == "drop" and res.unknown == []
    assert (res.deciding.table, res.deciding.chain, res.deciding.text) == \
        ("filter", "DOCKER-ISOLATION-STAGE-2", 'oifname "br-1" counter drop')
    assert verdicts(res) == [("FORWARD", "jump DOCKER-USER"), ("DOCKER-USER", "return"),
                             ("FORWARD", "jump DOCKER-ISOLATION-STAGE-1"),
                             ("DOCKER-ISOLATION-STAGE-1", "jump DOCKER-ISOLATION-STAGE-2"),
                             ("DOCKER-ISOLATION-STAGE-2", "drop")]


def test_docker_outbound_is_exact(dk):
    res = dk_fwd(dk, "172.17.0.2", "8.8.8.8", 443, "docker0", "eth0")
    assert res.verdict == "accept" and res.unknown == []  # the conntrack rule is for -o docker0 only
    assert res.steps[-1].text == 'iifname "docker0" oifname != "docker0" counter accept'


def test_docker_user_reject_is_exact(dk):
    res = dk_fwd(dk, "10.9.9.9", "8.8.8.8", 443, "docker0", "eth0")
    assert res.verdict == "drop" and res.deciding.verdict == "reject"
    assert res.deciding.text == 'ip saddr 10.9.9.9 counter xt target "REJECT"'


def test_docker_conntrack_match_is_unknown_only_when_it_matters(dk):
    # published port: the opaque conntrack rule would accept, and so does DOCKER's rule -> accept
    res = dk_fwd(dk, "203.0.113.5", "172.17.0.2", 80, "eth0", "docker0", ct_status=frozenset({"dnat"}))
    assert res.verdict == "accept"
    (u,) = res.unknown
    assert u["text"] == 'oifname "docker0" xt match "conntrack" counter accept'
    assert "xt" in u["reason"] and u["changes_outcome"] is False
    assert res.steps[-1].chain == "DOCKER" and res.steps[-1].verdict == "accept"
    # unpublished port: the conntrack rule decides between accept and the policy drop -> unknown
    res = dk_fwd(dk, "203.0.113.5", "172.17.0.2", 22, "eth0", "docker0")
    assert res.verdict == "unknown" and res.deciding.verdict == "policy drop"
    assert res.unknown[0]["changes_outcome"] is True


def test_docker_raw_direct_routing_drop_is_exact(dk):
    pkt = Packet("203.0.113.5", "172.17.0.2", "tcp", 40000, 80, iif="eth0")
    res = evaluate(dk, "prerouting", pkt, local_addrs=LOCAL)
    assert res.verdict == "drop" and res.deciding.table == "raw"
    assert res.deciding.text == 'iifname != "docker0" ip daddr 172.17.0.2 counter drop'


def test_docker_nat_addrtype_and_dnat_are_reported(dk):
    pkt = Packet("203.0.113.5", HOST, "tcp", 40000, 8080, iif="eth0")
    res = evaluate(dk, "prerouting", pkt, chain_type="nat", local_addrs=LOCAL)
    assert res.verdict == "accept" and not res.packet_exact
    reasons = {u["text"]: u for u in res.unknown}
    assert reasons['xt match "addrtype" counter jump DOCKER']["changes_outcome"] is True
    dnat = reasons['iifname != "docker0" tcp dport 8080 counter xt target "DNAT"']
    assert dnat["verdict"] == "dnat" and "opaque" in dnat["reason"]
    # a port Docker does not publish: whichever way addrtype goes, nothing changes
    res = evaluate(dk, "prerouting", Packet("203.0.113.5", HOST, "tcp", 40000, 22, iif="eth0"),
                   chain_type="nat", local_addrs=LOCAL)
    assert res.verdict == "accept" and res.packet_exact
    assert [u["changes_outcome"] for u in res.unknown] == [False]


def test_docker_masquerade_target_is_exact(dk):
    pkt = Packet("172.17.0.2", "8.8.8.8", "tcp", 40000, 443, iif="docker0", oif="eth0")
    res = evaluate(dk, "postrouting", pkt, chain_type="nat", masquerade_addr=HOST)
    assert res.verdict == "accept" and res.packet_exact and res.unknown == []
    assert res.packet.src == HOST and res.steps[-1].verdict == "masquerade"
    assert res.steps[-1].text == 'oifname != "docker0" ip saddr 172.17.0.0/16 counter xt target "MASQUERADE"'


def test_rule_text_of_every_fixture_rule_is_nft_like():
    for name in sources():
        for item in load(name)["nftables"]:
            if "rule" in item:
                text = rule_text(item["rule"])
                assert text and "{\"" not in text, (name, text)
