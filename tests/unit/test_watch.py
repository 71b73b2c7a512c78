"""watch's pure parts: trace_pipe lines parsed, windows aggregated, flows grouped, the rate limit,
the probe's own events kept out of a flow, and every JSON line it prints against its schema."""
import io
import json
import time

import jsonschema
import pytest

from netdiag.watch import events
from netdiag.watch.flows import DropCounts, Flows, RateLimit
from netdiag.watch.session import Session
from netdiag.watch.view import JsonView, LineView
from tests.unit.test_schemas import schema

RETRANS = ("          <idle>-0       [001] ..s2. 34773.668069: tcp_retransmit_skb: skbaddr=00000000a1b2c3d4 "
           "skaddr=00000000d4c3b2a1 family=AF_INET sport=46006 dport=82 saddr=10.247.31.2 daddr=203.0.113.1 "
           "saddrv6=::ffff:10.247.31.2 daddrv6=::ffff:203.0.113.1 state=TCP_SYN_SENT err=0")
RESET = ("            wget-4242    [000] ..s1. 34772.650899: tcp_receive_reset: family=AF_INET sport=41766 dport=81 "
         "saddr=10.247.31.2 daddr=203.0.113.1 saddrv6=::ffff:10.247.31.2 daddrv6=::ffff:203.0.113.1 sock_cookie=2a")
DROP = ("          <idle>-0       [001] ..s2. 34772.659319: kfree_skb: skbaddr=00000000a1b2c3d4 rx_sk=0000000000000000 "
        "protocol=2048 location=nft_do_chain+0x46f/0x690 reason: NETFILTER_DROP")
FORMAT = ('print fmt: "...", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, '
          '{ 12, "NETFILTER_DROP" }, { 130, "MAX" })\n\tfield:enum skb_drop_reason reason;\n')


def test_trace_pipe_lines_become_events():
    assert events.parse_line(RETRANS) == {"kind": "unanswered", "ts": 34773.668069, "sport": 46006, "dport": 82,
                                          "src": "10.247.31.2", "dst": "203.0.113.1"}
    assert events.parse_line(RESET)["kind"] == "reset" and events.parse_line(RESET)["dport"] == 81
    assert events.parse_line(DROP) == {"kind": "drop", "ts": 34772.659319, "protocol": 2048,
                                       "location": "nft_do_chain+0x46f/0x690", "reason": "NETFILTER_DROP"}
    assert events.parse_line("CPU:1 [LOST 17 EVENTS]") == {"kind": "lost", "count": 17}
    assert events.parse_line("# tracer: nop") is None


def test_drop_reasons_become_the_kernels_numbers():
    assert events.reason_filter(FORMAT, ["NETFILTER_DROP", "no_socket"]) == "reason == 12 || reason == 3"
    assert events.reason_filter(FORMAT, []) == "reason != 2"  # no reason asked: only annotated drops
    with pytest.raises(ValueError, match="BOGUS"):
        events.reason_filter(FORMAT, ["BOGUS"])


def test_a_window_sums_repeats_and_counts_what_it_cannot_keep(monkeypatch):
    w = events.Window()
    first, again = events.parse_line(RETRANS), {**events.parse_line(RETRANS), "ts": 34774.0}
    w.add(first)
    w.add(again)
    w.add({"kind": "lost", "count": 3})
    out = w.drain()
    assert out[0]["count"] == 2 and out[0]["ts"] == 34773.668069 and out[0]["last_ts"] == 34774.0
    assert out[1] == {"kind": "lost", "count": 3} and w.drain() == []
    monkeypatch.setattr(events, "MAX_KEYS", 1)
    w.add(first)
    w.add({**first, "sport": 1})
    assert [e["kind"] for e in w.drain()] == ["unanswered", "lost"]


def _ev(kind="unanswered", sport=40000, dport=82, count=1, ts=None):
    ts = time.monotonic() if ts is None else ts
    return {"kind": kind, "src": "10.247.31.2", "sport": sport, "dst": "203.0.113.1", "dport": dport,
            "count": count, "ts": ts, "last_ts": ts}


SRC = {"ip": "10.247.31.2", "label": "client", "target": "client"}
DST = {"ip": "203.0.113.1", "label": "ns:out", "target": "ns:out"}


def test_flows_group_repeats_and_leave_the_probes_events_out():
    flows = Flows()
    flow, new = flows.add(_ev(sport=40000), SRC, DST)
    assert new and flow.id == 1
    again, new = flows.add(_ev(sport=40001, count=2), SRC, DST)
    assert again is flow and not new and flow.count == 3
    other, new = flows.add(_ev(kind="reset", dport=81, count=2), SRC, DST)
    assert new and other.id == 2
    flows.ignore_probe("10.247.31.2", 40001)
    assert flow.count == 1 and flows.add(_ev(sport=40001), SRC, DST) is None
    assert [f.id for f in flows.by_impact()] == [2, 1] and len(flows) == 2


def test_rate_limit_and_drop_counts():
    limit = RateLimit(2)
    now = limit.at
    assert [limit.allow(now), limit.allow(now), limit.allow(now)] == [True, True, False]
    assert limit.suppressed == 1 and limit.allow(now + 0.5)
    drops = DropCounts()
    drops.add({**events.parse_line(DROP), "count": 4})
    drops.add({**events.parse_line(DROP), "count": 1})
    out = drops.drain()
    assert len(out) == 1 and out[0]["count"] == 5 and out[0]["scope"] == "host" and drops.total == {"NETFILTER_DROP": 5}
    assert drops.drain() == []


class _Scope:
    watched = {"10.247.31.2": "client"}

    def keeps(self, src, dst):
        return src in self.watched or dst in self.watched

    def confirms(self, ev):
        return True

    def endpoint(self, ip):
        return SRC if ip == SRC["ip"] else DST


class _Diagnoser:
    def __init__(self):
        self.submitted, self.results, self.probing = [], [], set()

    def submit(self, *job):
        self.submitted.append(job)
        return True

    def done(self):
        out, self.results = self.results, []
        return out


def test_events_of_a_flow_under_diagnosis_wait_for_the_probes_port():
    out = io.StringIO()
    s = Session(_Scope(), JsonView(out), diagnose=False)
    s.diagnoser = _Diagnoser()
    s._event(_ev(sport=40000))
    assert s.diagnoser.submitted == [(1, "client", "203.0.113.1", "tcp", 82, 0)]
    s._event(_ev(sport=40001))  # queued, not probing yet: no probe of ours to mistake it for
    s.diagnoser.probing.add(1)
    s._event(_ev(sport=51000))  # the probe's SYN retransmitted, or another client connect: not known yet
    s._event(_ev(sport=40000))
    s._event(_ev(sport=40002))
    flow = s.flows.get(_ev())
    assert flow.count == 3 and len(flow.held) == 2
    brief = {"verdict": "blocked", "cause": "FIREWALL_DROP", "summary": "dropped", "fix": "delete it",
             "fix_command": "nft delete rule inet t f handle 3", "fix_checked": True, "seconds": 2.1,
             "hop": {"n": 2, "label": "host", "interface": "eth0", "direction": "forward"}}
    s.diagnoser.results.append((1, brief, 51000))
    s._diagnosed()
    assert flow.count == 4 and flow.held == [] and flow.diagnosis == brief and s.causes == {"FIREWALL_DROP": 1}
    assert s.diagnoser.probing == set()
    s._event(_ev(sport=51000))  # late: still the probe's
    assert flow.count == 4
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["src"]["port"] for x in lines if x["type"] == "event"] == [40000, 40001, 40000, 40002]
    for obj in lines:
        jsonschema.validate(obj, schema("watch"))


def test_plain_lines_say_the_cause_hop_and_fix():
    out = io.StringIO()
    LineView(out).diagnosis({"type": "diagnosis", "flow": 1, "verdict": "blocked", "cause": "FIREWALL_DROP",
                             "summary": "a rule drops it", "fix": "delete it", "fix_command": "nft delete rule inet t f handle 3",
                             "fix_checked": True, "seconds": 1.0, "hop": {"n": 2, "label": "host", "interface": "eth0",
                                                                           "direction": "forward"}, "probe_sport": 5})
    assert out.getvalue() == ("  #1 FIREWALL_DROP at hop 2 (host eth0): a rule drops it; "
                              "fix: nft delete rule inet t f handle 3 (checked ✓)\n")


def test_metrics_address_is_addr_colon_port():
    from runtime.errors import InvalidArgument

    from netdiag.watch.metrics import parse_address

    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464) and parse_address("[::1]:80") == ("::1", 80)
    for bad in ("9464", "localhost:80", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(InvalidArgument):
            parse_address(bad)


def test_a_storm_of_new_flows_waits_for_at_most_max_waiting_diagnoses():
    from netdiag.watch import diagnoser

    d = diagnoser.Diagnoser()  # not started: the queue only fills
    assert all(d.submit(i, "client", "203.0.113.1", "tcp", 80) for i in range(diagnoser.MAX_WAITING))
    assert not d.submit(99, "client", "203.0.113.1", "tcp", 80)


def test_a_completed_connect_marks_its_failing_flow_recovered_until_it_fails_again():
    line = ("   wget-77 [000] ..s1. 34780.5: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=40100 "
            "dport=82 saddr=10.247.31.2 daddr=203.0.113.1 saddrv6=::ffff:10.247.31.2 daddrv6=::ffff:203.0.113.1 "
            "oldstate=TCP_SYN_SENT newstate=TCP_ESTABLISHED")
    assert events.parse_line(line) == {"kind": "established", "ts": 34780.5, "dport": 82, "src": "10.247.31.2",
                                       "dst": "203.0.113.1"}
    flows = Flows()
    t = time.monotonic()
    flow, _ = flows.add(_ev(ts=t - 2), SRC, DST)
    ok = {"kind": "established", "src": SRC["ip"], "dst": DST["ip"], "dport": 82, "count": 1}
    assert flows.recovered({**ok, "ts": t - 3, "last_ts": t - 3}) == []  # before the failure: no news
    assert flows.recovered({**ok, "ts": t - 1, "last_ts": t - 1}) == [flow] and flow.recovered
    assert flows.recovered({**ok, "ts": t, "last_ts": t}) == []  # marked once
    other, _ = flows.add(_ev(kind="reset", dport=81, ts=t - 2), SRC, DST)
    assert [f.id for f in flows.by_impact()] == [other.id, flow.id]  # failing first
    flows.add(_ev(ts=t + 1), SRC, DST)
    assert flow.recovered is None  # failing again


def _state(ts, old, new, sport=0):
    return (f"   curl-77 [000] ..... {ts}: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport={sport} "
            "dport=82 saddr=10.247.31.2 daddr=203.0.113.1 saddrv6=::ffff:10.247.31.2 daddrv6=::ffff:203.0.113.1 "
            f"oldstate={old} newstate={new}")


def test_a_connect_waiting_half_a_second_is_pending_once_and_one_answered_or_ended_is_not():
    connecting = events.parse_line(_state(100.0, "TCP_CLOSE", "TCP_SYN_SENT"))
    assert connecting == {"kind": "connecting", "ts": 100.0, "dport": 82, "src": "10.247.31.2", "dst": "203.0.113.1"}
    ended = events.parse_line(_state(100.2, "TCP_SYN_SENT", "TCP_CLOSE", 40100))
    answered = events.parse_line(_state(100.3, "TCP_SYN_SENT", "TCP_ESTABLISHED", 40101))
    assert (ended["kind"], answered["kind"]) == ("connect_ended", "established")
    p = events.Pending()
    for ev in (connecting, {**connecting, "ts": 100.1}, {**connecting, "ts": 100.2}):
        p.add(ev)
    p.add(ended)  # the oldest ends first (refused, or given up)
    assert p.due(100.0 + events.PENDING - 0.01) == []
    due = p.due(100.2 + events.PENDING)
    assert due == [{"kind": "pending", "ts": 100.1, "last_ts": 100.2, "src": "10.247.31.2", "dst": "203.0.113.1",
                    "dport": 82, "count": 2}]
    assert p.due(200.0) == []  # each connect once
    p.add(answered)
    p.add(answered)
    assert p.waiting == {} and p.size == 0
    p.add(answered)  # a connect that began before watch did: nothing to end
    assert p.size == 0


def test_pending_connects_are_bounded(monkeypatch):
    monkeypatch.setattr(events, "MAX_PENDING", 3)
    p = events.Pending()
    for i in range(5):
        p.add({"kind": "connecting", "ts": float(i), "src": "10.0.0.1", "dst": f"10.0.1.{i}", "dport": 80})
    assert p.size == 3 and [k[1] for k in p.waiting] == ["10.0.1.2", "10.0.1.3", "10.0.1.4"]


class _WatchedScope(_Scope):
    """A filtered scope whose namespace has one connect waiting, from port 40123."""

    def __init__(self, waiting=True):
        self.waiting = waiting

    def connecting_port(self, ev):
        return 40123 if self.waiting else None


def test_a_pending_connect_opens_its_flow_with_the_waiting_sockets_port_once():
    out = io.StringIO()
    s = Session(_WatchedScope(), JsonView(out), diagnose=False)
    s.diagnoser = _Diagnoser()
    t = time.monotonic()
    pending = {"kind": "pending", "src": SRC["ip"], "dst": DST["ip"], "dport": 82, "count": 1, "ts": t, "last_ts": t}
    s._event(pending)
    flow = s.flows.get(_ev())
    assert flow.kind == "unanswered" and flow.count == 1 and flow.sports == {40123: 1}
    event = [json.loads(x) for x in out.getvalue().splitlines() if '"event"' in x][0]
    assert event["kind"] == "unanswered" and event["src"]["port"] == 40123
    jsonschema.validate(event, schema("watch"))
    assert s.diagnoser.submitted == [(1, "client", "203.0.113.1", "tcp", 82, 0)]
    s._event({**pending, "ts": t + 0.1, "last_ts": t + 0.1})  # failing already: its retransmits count
    s._event(_ev(sport=40123, ts=t + 1))  # the retransmit
    assert flow.count == 2 and len(s.diagnoser.submitted) == 1
    other = Session(_WatchedScope(waiting=False), JsonView(io.StringIO()), diagnose=False)
    other._event(pending)  # the watched namespace has no such connect: the address is someone else's
    assert len(other.flows) == 0 and other.elsewhere == 1


def test_a_connect_that_ended_unanswered_after_waiting_is_pending_even_when_read_late():
    p = events.Pending()
    start = {"kind": "connecting", "ts": 100.0, "src": "10.0.0.1", "dst": "10.0.1.1", "dport": 80}
    p.add(start)
    p.add({**start, "kind": "connect_ended", "ts": 100.0 + events.PENDING + 0.2})  # both read in one batch
    p.add(start)
    p.add({**start, "kind": "connect_ended", "ts": 100.1})  # refused at once: no flow of this kind
    p.add(start)
    p.add({**start, "kind": "established", "ts": 101.0})  # slow, but answered
    assert p.due(100.0) == [{"kind": "pending", "ts": 100.0, "src": "10.0.0.1", "dst": "10.0.1.1", "dport": 80,
                             "count": 1, "last_ts": 100.0, "ended": True}]
    assert p.due(200.0) == [] and p.size == 0


def test_an_ipv6_sockets_ipv4_peer_is_read_and_an_ipv6_flow_is_left_out():
    """A server on [::] (busybox httpd, nginx, Python's default) has IPv6 sockets whose IPv4 peers
    the kernel reports in the v4 fields and as v4-mapped v6 ones; a pure IPv6 flow is not read yet."""
    mapped = ("          <idle>-0       [001] ..s2. 500.25: tcp_retransmit_skb: skbaddr=00000000a1b2c3d4 "
              "skaddr=00000000d4c3b2a1 family=AF_INET6 sport=87 dport=46006 saddr=203.0.113.1 daddr=10.247.31.2 "
              "saddrv6=::ffff:203.0.113.1 daddrv6=::ffff:10.247.31.2 state=TCP_ESTABLISHED err=0")
    assert events.parse_line(mapped) == {"kind": "stalled", "ts": 500.25, "src": "10.247.31.2", "sport": 46006,
                                         "dst": "203.0.113.1", "dport": 87}  # the server's retransmit, turned round
    v6 = mapped.replace("saddrv6=::ffff:203.0.113.1 daddrv6=::ffff:10.247.31.2", "saddrv6=fd00::1 daddrv6=fd00::2")
    assert events.parse_line(v6) is None
    state = _state(100.0, "TCP_CLOSE", "TCP_SYN_SENT")
    assert events.parse_line(state.replace("saddrv6=::ffff:10.247.31.2", "saddrv6=fd00::1")) is None
