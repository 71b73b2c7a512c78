"""The NFT_MSG_TRACE parser and probe filter over real messages from this kernel (6.18), recorded
by tests/fixtures/nftrace/record.py (regenerate: sudo .venv/bin/python tests/fixtures/nftrace/record.py).

The expected rules are named by the handles `nft -a -j list ruleset` gave when recording (stored
next to the messages), never by what the parser itself produced."""
import json
import os
import struct
from pathlib import Path

import pytest

from netdiag.probe import nftrace
from runtime.kernel.syscalls import proc_start_time

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nftrace" / "traces.json"
DATA = json.loads(FIXTURE.read_text())
A, R, B = DATA["namespaces"]


def rule(ns: str, needle: str, chain: str | None = None) -> dict:
    """The one recorded rule of namespace `ns` (and `chain`) whose nft text contains `needle`."""
    found = [r for r in DATA["rules"][ns] if needle in r["text"] and chain in (None, r["chain"])]
    assert len(found) == 1, (needle, found)
    return found[0]


def trace(name: str) -> tuple[dict, list[dict]]:
    sc = DATA["scenarios"][name]
    raw = [(ns, ev) for ns, hexdata in sc["messages"] for ev in nftrace.parse(bytes.fromhex(hexdata))]
    names = {ns: {int(i): n for i, n in m.items()} for ns, m in sc["ifnames"].items()}
    return sc, nftrace.select(raw, sc["proto"], sc["mark"], sc["table"], names)


def steps(events, ns=R, direction="probe"):
    return [(e["chain"], e["handle"], e["verdict"]) for e in events if e["ns_path"] == ns and e["direction"] == direction]


def test_every_recorded_message_is_a_trace_event_with_known_fields():
    count = 0
    for sc in DATA["scenarios"].values():
        for _, hexdata in sc["messages"]:
            for ev in nftrace.parse(bytes.fromhex(hexdata)):
                count += 1
                assert ev["family"] in ("inet", "ip", "bridge"), ev
                assert ev["type"] in ("rule", "policy", "return"), ev
                assert ev["table"] and ev["chain"] and len(ev["trace_id"]) == 8
                assert ev["type"] != "policy" or ev["verdict"] in ("accept", "drop")
    assert count > 200


def test_user_nft_drop_rule_is_named_exactly():
    sc, events = trace("tcp_user_drop")
    drop = nftrace.first_drop(events)
    expected = rule(B, "tcp dport 83 counter packets 0 bytes 0 drop")
    assert (drop["ns_path"], drop["family"], drop["table"], drop["chain"], drop["handle"]) == \
           (B, expected["family"], expected["table"], expected["chain"], expected["handle"])
    assert drop["type"] == "rule" and drop["direction"] == "probe" and drop["iif"] == "b-r"
    assert drop["packet"] == {"src": "10.233.1.2", "dst": "10.233.2.2", "proto": 6, "sport": sc["mark"], "dport": 83}
    # on its way the probe was forwarded by r (iptables-nft rule accepting port 83), bridged out through br0
    assert ("FORWARD", rule(R, "tcp dport 83")["handle"], "accept") in steps(events)
    assert any(e["family"] == "bridge" and e["table"] == "user" and e["oif"] == "r-b" for e in events)


def test_policy_drop_after_jumps_and_returns():
    _, events = trace("tcp_policy_drop")
    drop = nftrace.first_drop(events)
    assert (drop["family"], drop["table"], drop["chain"], drop["type"], drop["handle"]) == ("ip", "filter", "FORWARD", "policy", None)
    walk = [s for s in steps(events) if s[0] != "pre"][:5]
    assert walk == [("FORWARD", rule(R, "jump USERCHAIN")["handle"], "jump USERCHAIN"),
                    ("USERCHAIN", rule(R, "return", chain="USERCHAIN")["handle"], "return"),
                    ("FORWARD", rule(R, "jump ISO")["handle"], "jump ISO"),
                    ("ISO", None, "return"),  # the addrtype rule did not match: the chain's implicit end
                    ("FORWARD", None, "drop")]


def test_reject_is_a_rule_drop_and_its_icmp_error_a_reply():
    sc, events = trace("tcp_reject")
    drop = nftrace.first_drop(events)
    assert (drop["chain"], drop["handle"], drop["type"]) == ("FORWARD", rule(R, "tcp dport 82")["handle"], "rule")
    errors = [e for e in events if e["packet"].get("icmp_type") == 3]
    assert errors and all(e["direction"] == "reply" and e["packet"]["icmp_code"] == 3 for e in errors)
    assert errors[0]["chain"] == "OUTPUT" and errors[0]["oif"] == "r-a"  # sent by r itself


def test_accepted_probe_and_its_answer_have_no_drop():
    sc, events = trace("tcp_accepted")
    assert nftrace.first_drop(events) is None
    assert ("FORWARD", rule(R, "tcp dport 81")["handle"], "accept") in steps(events)
    assert ("FORWARD", rule(R, "ct state related,established")["handle"], "accept") in steps(events, direction="reply")
    assert steps(events, ns=B) == [("input", None, "accept")]  # b's input policy
    reply = next(e for e in events if e["direction"] == "reply")
    assert (reply["packet"]["sport"], reply["packet"]["dport"]) == (81, sc["mark"])
    # nothing of netdiag's own tables, no bare end-of-chain markers
    assert not any(e["table"].startswith(nftrace.TABLE_PREFIX) for e in events)
    assert not any(e["type"] == "rule" and e["handle"] is None for e in events)


def test_someone_elses_traced_flow_is_left_out():
    sc, events = trace("foreign_trace")
    raw_ports = {nftrace.packet(ev["network"], ev["transport"])["dport"] for _, h in sc["messages"]
                 for ev in nftrace.parse(bytes.fromhex(h)) if ev["network"]}
    assert 84 in raw_ports  # the other flow was traced in the kernel...
    assert events and all(84 not in (e["packet"]["sport"], e["packet"]["dport"]) for e in events)  # ...but is not ours
    assert {e["packet"]["sport"] for e in events if e["direction"] == "probe"} == {sc["mark"]}


def test_icmp_error_is_followed_through_forward_although_its_trace_id_changes():
    _, events = trace("udp_unreachable")
    fwd = [e for e in events if e["direction"] == "reply" and e["chain"] == "FORWARD"]
    assert fwd and all(e["packet"]["icmp_type"] == 3 for e in fwd)
    assert fwd[-1]["verdict"] == "accept" and fwd[-1]["handle"] == rule(R, "ct state related,established")["handle"]
    pre = next(e for e in events if e["direction"] == "reply" and e["chain"] == "pre")
    assert pre["trace_id"] != fwd[0]["trace_id"]


def test_icmp_echo_request_and_reply():
    _, events = trace("icmp_echo")
    assert {e["packet"]["icmp_type"] for e in events if e["direction"] == "probe"} == {8}
    assert {e["packet"]["icmp_type"] for e in events if e["direction"] == "reply"} == {0}
    assert ("FORWARD", rule(R, "meta l4proto icmp")["handle"], "accept") in steps(events)


# -- synthetic messages: verdicts the recordings do not contain ----------------------------------------

def attr(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def message(*attrs: bytes, family: int = 2, mtype: int = nftrace.NFT_MSG_TRACE) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def verdict(code: int, chain: str | None = None) -> bytes:
    inner = attr(1, struct.pack("!i", code)) + (attr(2, chain.encode() + b"\0") if chain else b"")
    return attr(5 | 0x8000, inner)


@pytest.mark.parametrize("code,chain,expected", [(-3, "DOCKER", "jump DOCKER"), (-4, "X", "goto X"),
                                                 (3 | (7 << 16), None, "queue"), (1, None, "accept"), (-5, None, "return")])
def test_verdict_codes(code, chain, expected):
    msg = message(attr(1, b"filter\0"), attr(2, b"FORWARD\0"), attr(3, struct.pack("!Q", 42)),
                  attr(4, struct.pack("!I", 3)), verdict(code, chain), attr(6, struct.pack("!I", 0xDEADBEEF)))
    ev, = nftrace.parse(msg + message(mtype=2))  # an NLMSG_ERROR after it is skipped
    assert (ev["table"], ev["chain"], ev["handle"], ev["type"], ev["verdict"], ev["trace_id"]) == \
           ("filter", "FORWARD", 42, "rule", expected, "deadbeef")


def test_first_drop_takes_the_first_rule_or_policy_drop():
    def ev(type_, verdict_, handle=None):
        return {"type": type_, "verdict": verdict_, "handle": handle}

    assert nftrace.first_drop([]) is None
    assert nftrace.first_drop([ev("rule", "continue", 1), ev("policy", "accept"), ev("return", "return")]) is None
    assert nftrace.first_drop([ev("rule", "queue", 2), ev("policy", "drop"), ev("rule", "drop", 3)]) == ev("policy", "drop")
    assert nftrace.first_drop([ev("rule", "accept", 1), ev("rule", "drop", 3)]) == ev("rule", "drop", 3)


def test_a_related_packets_drop_is_not_the_probes():
    """An ICMP error quoting the probe, or the answer, dropped by a rule: not the probe's drop."""
    frag = {"type": "rule", "verdict": "drop", "handle": 2, "direction": "reply",
            "packet": {"proto": 1, "icmp_type": 3, "icmp_code": 4}}
    answer = {"type": "policy", "verdict": "drop", "handle": None, "direction": "reply", "packet": {"proto": 6}}
    probe = {"type": "rule", "verdict": "drop", "handle": 7, "direction": "probe", "packet": {"proto": 6}}
    assert nftrace.first_drop([frag, answer]) is None
    assert nftrace.related_drops([frag, probe, answer]) == [frag, answer]
    assert nftrace.first_drop([frag, answer, probe]) is probe


def test_script_is_bounded_to_the_probe_and_refuses_bad_names():
    name = nftrace.table_name(4194303, "0a1b2c3d")  # no such pid: its start time is unknown (0)
    text = nftrace.script(name, "tcp", 40123)
    assert name == "netdiag_trace_4194303_0_0a1b2c3d"
    assert nftrace.table_name(os.getpid(), "ab").startswith(f"netdiag_trace_{os.getpid()}_{proc_start_time(os.getpid())}_")
    assert text.count("priority -350") == 4 and "table inet " + name in text and "table bridge " + name in text
    assert "th sport 40123 meta nftrace set 1" in text and "th dport 40123 meta nftrace set 1" in text
    assert "icmp id 40123" in nftrace.script(name, "icmp", 40123)
    for bad in (("x; flush ruleset", "tcp", 1), (name, "sctp", 1), (name, "tcp", 0), (name, "tcp", 70000)):
        with pytest.raises(ValueError):
            nftrace.script(*bad)


def test_describe():
    _, events = trace("tcp_user_drop")
    assert nftrace.describe(nftrace.first_drop(events)) == \
        f"inet user input handle {rule(B, 'tcp dport 83')['handle']}: drop (probe, iif b-r)"


def test_a_leftover_is_stale_when_its_owner_is_gone_or_its_pid_was_reused():
    from netdiag.probe.tracers import instance_owner_gone

    start = proc_start_time(1)
    assert not instance_owner_gone(f"netdiag-1-{start}-ab12")        # pid 1, the same process
    assert instance_owner_gone(f"netdiag-1-{start + 1}-ab12")         # pid 1 handed out again
    assert instance_owner_gone("netdiag-4194303-ab12")                # an older netdiag's name, owner gone
    assert not instance_owner_gone("netdiag-someone-else")            # not a name netdiag makes
    assert nftrace.owner_alive("1", str(start)) and not nftrace.owner_alive("1", str(start + 1))
