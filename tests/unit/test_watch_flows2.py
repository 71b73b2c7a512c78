"""watch's part 2, the pure parts: the other tracepoints' lines turned to the connecting side's view
(SYN-ACK retransmits, sent resets, ICMP errors, stalled connections), conntrack's event messages
decoded, UDP/ICMP flows without a reply found by their deadline, and the session diagnosing each
kind with the right probe."""
import io
import json
import socket
import struct

import jsonschema

from netdiag.watch import events
from netdiag.watch.flows import Flows
from netdiag.watch.session import Session
from netdiag.watch.unreplied import Unreplied
from netdiag.watch.view import JsonView, LineView
from runtime.kernel import conntrack, wire
from tests.unit.test_schemas import schema
from tests.unit.test_watch import DST, SRC, _Diagnoser, _Scope

SYNACK = ("          <idle>-0       [000] ..s1. 100.5: tcp_retransmit_synack: family=AF_INET sport=88 dport=51000 "
          "saddr=203.0.113.1 daddr=10.247.31.2 saddrv6=::ffff:203.0.113.1 daddrv6=::ffff:10.247.31.2")
SENT_RESET = ("          <idle>-0       [000] ..s1. 101.0: tcp_send_reset: skbaddr=0000000012 skaddr=0000000000 "
              "src=203.0.113.1:81 dest=10.247.31.2:41766 state=TCP_CLOSE reason=NO_SOCKET")
ICMP = ("         python3-28990   [001] b.s2. 102.25: icmp_send: icmp_send: type=3, code=3. From 10.247.31.2:36464 "
        "to 203.0.113.1:85 ulen=9 skbaddr=00000000b9728b63")
FRAG = ("          <idle>-0       [001] ..s2. 103.0: icmp_send: icmp_send: type=3, code=4. From 10.247.31.2:0 "
        "to 203.0.113.1:0 ulen=0 skbaddr=00000000b9728b63")
STALLED = ("          <idle>-0       [001] ..s2. 104.0: tcp_retransmit_skb: skbaddr=00000000a1b2c3d4 skaddr=00000000d4c3b2a1 "
           "family=AF_INET sport={sport} dport={dport} saddr=10.247.31.2 daddr=203.0.113.1 saddrv6=::ffff:10.247.31.2 "
           "daddrv6=::ffff:203.0.113.1 state=TCP_ESTABLISHED err=0")
RESET_FORMAT = ('print fmt: "...", __print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, { 1, "NO_SOCKET" }, { 25, "MAX" })\n'
                '\tfield:enum sk_rst_reason reason;\toffset:28;\n')


def test_every_event_names_the_connecting_side_as_its_source():
    assert events.parse_line(SYNACK) == {"kind": "synack_unanswered", "ts": 100.5, "src": "10.247.31.2", "sport": 51000,
                                         "dst": "203.0.113.1", "dport": 88}
    assert events.parse_line(SENT_RESET) == {"kind": "reset_sent", "ts": 101.0, "src": "10.247.31.2", "sport": 41766,
                                             "dst": "203.0.113.1", "dport": 81}
    assert events.parse_line(ICMP) == {"kind": "unreachable", "ts": 102.25, "proto": "udp", "src": "10.247.31.2",
                                       "sport": 36464, "dst": "203.0.113.1", "dport": 85}
    assert events.parse_line(FRAG)["kind"] == "frag_needed" and events.parse_line(FRAG)["proto"] == "ip"
    client = events.parse_line(STALLED.format(sport=41000, dport=86))
    assert (client["kind"], client["src"], client["dport"]) == ("stalled", "10.247.31.2", 86)
    server = events.parse_line(STALLED.format(sport=86, dport=41000))  # the server retransmits: turned round
    assert (server["src"], server["sport"], server["dst"], server["dport"]) == ("203.0.113.1", 41000, "10.247.31.2", 86)


def test_sent_resets_are_filtered_to_refused_connects():
    assert events.sent_reset_filter(RESET_FORMAT) == "reason == 1"
    assert events.sent_reset_filter('print fmt: "src=%pISpc"\n') is None  # an older kernel: every RST


def _ct_message(kind: str, proto: int, status: int, sport=5353, dport=85, icmp=None) -> bytes:
    ip = wire.nested(conntrack.CTA_TUPLE_IP, wire.attr(conntrack.CTA_IP_V4_SRC, socket.inet_aton("10.247.31.2")),
                     wire.attr(conntrack.CTA_IP_V4_DST, socket.inet_aton("203.0.113.1")))
    if icmp is None:
        pr = wire.nested(conntrack.CTA_TUPLE_PROTO, wire.attr(conntrack.CTA_PROTO_NUM, bytes([proto])),
                         wire.attr(conntrack.CTA_PROTO_SRC_PORT, struct.pack("!H", sport)),
                         wire.attr(conntrack.CTA_PROTO_DST_PORT, struct.pack("!H", dport)))
    else:
        pr = wire.nested(conntrack.CTA_TUPLE_PROTO, wire.attr(conntrack.CTA_PROTO_NUM, bytes([proto])),
                         wire.attr(conntrack.CTA_PROTO_ICMP_ID, struct.pack("!H", icmp)),
                         wire.attr(conntrack.CTA_PROTO_ICMP_TYPE, bytes([8])))
    body = conntrack.NFGENMSG.pack(socket.AF_INET, 0, 0) + wire.nested(conntrack.CTA_TUPLE_ORIG, ip, pr) \
        + wire.attr(conntrack.CTA_STATUS, struct.pack("!I", status))
    mtype = (conntrack.NFNL_SUBSYS_CTNETLINK << 8) | (conntrack.IPCTNL_MSG_CT_DELETE if kind == "destroy" else conntrack.IPCTNL_MSG_CT_NEW)
    flags = conntrack.NLM_F_CREATE if kind == "new" else 0
    return wire.HEADER.pack(16 + len(body), mtype, flags, 0, 0) + body


def test_conntrack_event_messages_are_decoded():
    data = _ct_message("new", 17, 8) + _ct_message("update", 17, 8 | 2) + _ct_message("destroy", 1, 8, icmp=77)
    new, update, destroy = conntrack.parse_events(data)
    assert new == {"event": "new", "src": "10.247.31.2", "dst": "203.0.113.1", "proto": 17, "sport": 5353, "dport": 85, "status": 8}
    assert update["event"] == "update" and update["status"] & 2
    assert destroy["event"] == "destroy" and destroy["icmp_id"] == 77 and destroy["icmp_type"] == 8


def test_a_flow_without_a_reply_by_its_deadline_is_unreplied_and_a_late_reply_recovers_it():
    t = Unreplied(deadline=2.0)
    udp = conntrack.parse_events(_ct_message("new", 17, 8))[0]
    replied = {**udp, "event": "update", "status": 8 | 2}
    assert t.add(udp, 10.0) == [] and t.add(udp, 10.1) == []  # the same tuple from a second namespace: one
    assert t.due(11.9) == []
    (ev,) = t.due(12.0)
    assert ev == {"kind": "unreplied", "proto": "udp", "src": "10.247.31.2", "sport": 5353, "dst": "203.0.113.1",
                  "dport": 85, "ts": 10.0, "last_ts": 10.0, "count": 1}
    assert t.add(replied, 13.0)[0]["kind"] == "replied"
    answered = conntrack.parse_events(_ct_message("new", 17, 8, sport=6000))[0]
    t.add(answered, 20.0)
    assert t.add({**answered, "event": "update", "status": 10}, 20.1) == [] and t.due(30.0) == []  # answered in time
    ping = conntrack.parse_events(_ct_message("new", 1, 8, icmp=77))[0]
    t.add(ping, 40.0)
    (gone,) = t.add({**ping, "event": "destroy"}, 40.5)  # removed before its deadline, never answered
    assert (gone["kind"], gone["proto"], gone["sport"], gone["dport"]) == ("unreplied", "icmp", 77, 0)
    tcp = conntrack.parse_events(_ct_message("new", 6, 8))[0]
    assert t.add(tcp, 50.0) == [] and t.due(60.0) == []  # TCP is the tracepoints' business


def test_udp_and_tcp_flows_to_one_port_are_two_and_a_reply_recovers_only_its_own():
    flows = Flows()
    udp = {"kind": "unreplied", "proto": "udp", "src": SRC["ip"], "sport": 5353, "dst": DST["ip"], "dport": 85,
           "count": 1, "ts": 1.0, "last_ts": 1.0}
    u, _ = flows.add(udp, SRC, DST)
    t, _ = flows.add({**udp, "kind": "unanswered", "proto": "tcp"}, SRC, DST)
    assert u is not t and u.text() == "client -> ns:out (203.0.113.1) udp/85"
    import time
    now = time.monotonic()
    assert flows.recovered({**udp, "kind": "replied", "ts": now, "last_ts": now}) == [u]
    assert not t.recovered


def test_each_kind_is_diagnosed_with_its_own_probe_and_printed_as_its_schema_says():
    out = io.StringIO()
    s = Session(_Scope(), JsonView(out), diagnose=False)
    s.diagnoser = _Diagnoser()
    base = {"src": SRC["ip"], "dst": DST["ip"], "count": 1, "ts": 5.0, "last_ts": 5.0}
    s._event({**base, "kind": "unreplied", "proto": "udp", "sport": 5353, "dport": 85})
    s._event({**base, "kind": "stalled", "sport": 41000, "dport": 86, "count": 2})
    s._event({**base, "kind": "unreplied", "proto": "icmp", "sport": 77, "dport": 0})
    s._event({**base, "kind": "frag_needed", "proto": "ip", "sport": 0, "dport": 0})
    # a "fragmentation needed" alone is path MTU discovery at work: not diagnosed (a stall that follows is)
    assert [job[3:] for job in s.diagnoser.submitted] == [("udp", 85, 0), ("tcp", 86, 1460), ("icmp", 0, 0)]
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["proto"] for x in lines if x["type"] == "flow"] == ["udp", "tcp", "icmp", "ip"]
    for obj in lines + [{"type": "scope", "time": 1.0, "watching": ["client", "late"], "added": ["late"]}]:
        jsonschema.validate(obj, schema("watch"))
    text = io.StringIO()
    LineView(text).scope({"type": "scope", "time": 1.0, "watching": ["client", "late"], "added": ["late"]})
    assert text.getvalue().endswith("started since: late: watched too\n")


class _Rescanning(_Scope):
    filtered = True

    def __init__(self):
        self.watched = dict(_Scope.watched)
        self.rescans = 0

    def rescan(self, model):
        self.rescans += 1
        self.watched["10.247.31.9"] = "late"
        return ["late"]

    def conntrack_paths(self):
        return []

    def endpoint(self, ip):
        return {"ip": ip, "label": self.watched.get(ip, ip), "target": self.watched.get(ip)}


def _rescanning_session(monkeypatch, scope):
    import netdiag.observe.snapshot as snapshot

    monkeypatch.setattr(snapshot, "live_model", lambda: None)
    out = io.StringIO()
    return Session(scope, JsonView(out), diagnose=False), scope, out


def _late_event(dst: str) -> dict:
    """A refused connect from 10.247.31.9, an address of a container started after watch."""
    return {"kind": "reset", "src": "10.247.31.9", "sport": 40000, "dst": dst, "dport": 81, "count": 1, "ts": 5.0, "last_ts": 5.0}


def test_an_address_no_watched_namespace_has_rescans_once_and_a_late_container_comes_into_scope(monkeypatch):
    s, scope, out = _rescanning_session(monkeypatch, _Rescanning())
    late = _late_event(dst="203.0.113.9")
    s._event(late)
    s._event({**late, "sport": 40001})  # known now: no second rescan
    s._event({**late, "src": "10.9.9.9"})  # a stranger, but within RESCAN of the last: not looked for yet
    assert scope.rescans == 1
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[0]["type"] == "scope" and lines[0]["added"] == ["late"]
    assert [x["src"]["label"] for x in lines if x["type"] == "flow"] == ["late"]
    assert s.flows.get(late).count == 2


def test_conntrack_sockets_of_namespaces_gone_are_let_go(monkeypatch, tmp_path):
    """A socket keeps its namespace alive: one whose namespace left the scope or is gone is closed."""
    from netdiag.watch import unreplied

    class Sock:
        closed = False

        def close(self):
            self.closed = True

    monkeypatch.setattr(conntrack, "subscribe", lambda path: Sock())
    monkeypatch.setattr(conntrack, "read_events", lambda sock: ([], 0))
    alive, gone = tmp_path / "alive", tmp_path / "gone"
    alive.touch()
    events_ = unreplied.ConntrackEvents()
    events_.watch([None, str(alive), str(gone), "/left/scope"])
    left = events_.sockets["/left/scope"]
    events_.watch([None, str(alive), str(gone)])
    assert left.closed and set(events_.sockets) == {None, str(alive), str(gone)}
    dead = events_.sockets[str(gone)]
    events_.poll(now=events_.checked + unreplied.GONE_CHECK)
    assert dead.closed and set(events_.sockets) == {None, str(alive)}


class _Late(_Rescanning):
    """A container whose first event comes before the host lists it: the first rescan sees its
    namespace only by its process (pid:N), the second as the container."""

    def rescan(self, model):
        if self.rescans == 0:
            self.rescans = 1
            self.watched_by_pid = True
            return []
        self.watched_by_pid = False
        return super().rescan(model)

    def endpoint(self, ip):
        if ip == "10.247.31.9" and getattr(self, "watched_by_pid", False):
            return {"ip": ip, "label": "pid:4242", "target": "pid:4242"}
        return super().endpoint(ip)


def test_a_flow_first_named_by_its_process_is_named_once_a_later_rescan_finds_its_container(monkeypatch):
    from netdiag.watch import session

    s, scope, _ = _rescanning_session(monkeypatch, _Late())
    ev = _late_event(dst="10.247.31.2")
    s._event(ev)  # kept (a watched destination), its source a namespace without a container yet
    flow = s.flows.get(ev)
    assert flow.src["label"] == "pid:4242" and scope.rescans == 1
    s.next_rescan = s.forget_at = 0.0  # RESCAN and RECHECK passed
    s._event({**ev, "sport": 40001})
    assert scope.rescans == 2 and flow.src["label"] == "late" and flow.count == 2
    assert session.RECHECK <= 5  # a retrying client is named within a few seconds


def test_metrics_count_connects_and_the_other_failing_flows_apart():
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from netdiag.watch.metrics import Metrics

    m = Metrics()
    m.failed("reset", "tcp", "client", "ns:out", 81, 2)
    m.failed("unreplied", "udp", "client", "ns:out", 85, 3)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(m.registry).decode()) for s in fam.samples}
    assert samples[("netdiag_watch_failed_connects_total",
                    (("dst", "ns:out"), ("kind", "reset"), ("port", "81"), ("src", "client")))] == 2
    assert samples[("netdiag_watch_failed_flows_total",
                    (("dst", "ns:out"), ("kind", "unreplied"), ("port", "85"), ("proto", "udp"), ("src", "client")))] == 3


def test_one_lost_packet_is_no_stall_and_repeated_retransmits_are():
    s = Session(_Scope(), JsonView(io.StringIO()), diagnose=False)
    ev = {"kind": "stalled", "src": SRC["ip"], "sport": 41000, "dst": DST["ip"], "dport": 86, "count": 1, "ts": 5.0, "last_ts": 5.0}
    s._event(ev)
    s._event({**ev, "sport": 41001})  # another connection's one loss
    assert len(s.flows) == 0
    s._event({**ev, "ts": 5.6, "last_ts": 5.6})  # the first connection again: stalled, counted from its first
    (flow,) = s.flows.by_impact()
    assert flow.count == 2 and flow.sports == {41000: 2}
    s._event({**ev, "ts": 7.0, "last_ts": 7.0})
    assert flow.count == 3
