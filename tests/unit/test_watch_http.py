"""Which pipeline diagnoses a watched flow: reach's, or health's when reach's probe of a TCP flow
is delivered and the port answers an HTTP request as HTTP; the diagnosis line in one shape from
either, and the HTTP request's connections kept out of the flow's counts. Fakes stand in for the
pipelines (the integration test in tests/integration/test_watch_http.py runs the real ones)."""
import io
import json

import jsonschema
import pytest

from netdiag.health.pipeline import Measured
from netdiag.reason.result import Diagnosis, FixClaim, Hop
from netdiag.watch import http_diagnosis
from netdiag.watch.diagnoser import Diagnoser
from netdiag.watch.http_diagnosis import choose, health_line
from netdiag.watch.session import Session
from netdiag.watch.view import JsonView
from tests.unit.test_schemas import schema
from tests.unit.test_watch import _Diagnoser, _ev, _Scope

DELIVERED, BLOCKED = {"verdict": "delivered"}, {"verdict": "blocked"}
# health's probe results (lb_probe): the head came and the body did not; nothing came; not HTTP; a 502
HEAD_ONLY = {"ok": False, "stage": "response", "error": "timeout", "status": 200, "local": ["10.247.37.2", 45000],
             "detail": "connected, request sent, the headers and 0 bytes of the body within 2s"}
SILENT = {"ok": False, "stage": "response", "error": "timeout", "status": None, "local": ["10.247.37.2", 45001],
          "detail": "connected, request sent, no byte of the response within 2s"}
NOT_HTTP = {"ok": False, "stage": "response", "error": "malformed", "status": None, "local": ["10.247.37.2", 45002],
            "detail": "the answer is not an HTTP response: b'-ERR unknown command'"}
BAD_GATEWAY = {"ok": False, "stage": "response", "error": "status", "status": 502, "local": ["10.247.37.2", 45003],
               "detail": "HTTP 502 Bad Gateway"}
MTU = {"healthy": False, "cause": "MTU_BLACKHOLE", "summary": "the answer dies on the way back at host narrow0",
       "hop": {"n": 3, "label": "host", "interface": "narrow0", "kind": "bridge", "direction": "egress", "detail": "10.247.37.0/24 dev narrow0"},
       "fix": "ip link set dev narrow0 mtu 1500  # raise narrow0's MTU", "fix_command": "ip link set dev narrow0 mtu 1500",
       "fix_check": {"checked": True, "delivers": True, "detail": "with this fix the static path delivers"}}


def test_health_diagnoses_only_a_delivered_tcp_flow_whose_port_answers_http():
    for check in (HEAD_ONLY, BAD_GATEWAY, {"ok": True, "stage": "done", "status": 404}):
        assert choose(DELIVERED, "tcp", check) == "health", check
    assert choose(BLOCKED, "tcp", HEAD_ONLY) == "reach"  # reach named where the packet dies
    assert choose({"verdict": "unknown"}, "tcp", HEAD_ONLY) == "reach"
    assert choose(DELIVERED, "udp", HEAD_ONLY) == "reach"
    assert choose(DELIVERED, "tcp", None) == "reach"  # no request made
    assert choose(DELIVERED, "tcp", SILENT) == "reach"  # no byte back: the protocol is not known
    assert choose(DELIVERED, "tcp", NOT_HTTP) == "reach"
    assert choose(DELIVERED, "tcp", {"ok": False, "stage": "connect", "error": "timeout", "status": None}) == "reach"


def _line(d: dict) -> dict:
    """The line the session prints of a diagnosis (it takes probe_connects)."""
    return {"type": "diagnosis", "flow": 1, "probe_sport": 51000, **{k: v for k, v in d.items() if k != "probe_connects"}}


def test_healths_result_becomes_a_diagnosis_line_of_the_same_shape():
    out = health_line(MTU, 4.567)
    assert out == {"verdict": "blocked", "cause": "MTU_BLACKHOLE", "summary": MTU["summary"],
                   "hop": {"n": 3, "label": "host", "interface": "narrow0", "direction": "egress"}, "fix": MTU["fix"],
                   "fix_command": "ip link set dev narrow0 mtu 1500", "fix_checked": True, "seconds": 4.57, "by": "health"}
    healthy = health_line({"healthy": True, "cause": None, "summary": "healthy: HTTP 200", "hop": None, "fix": "",
                           "fix_command": None, "fix_check": None}, 0.5)
    assert (healthy["verdict"], healthy["cause"], healthy["fix"], healthy["fix_checked"]) == ("delivered", None, None, None)
    unsure = health_line({"healthy": False, "cause": None, "summary": "the handshake failed", "fix": ""}, 1)
    assert unsure["verdict"] == "unknown" and unsure["hop"] is None
    for d in (out, healthy, unsure):
        jsonschema.validate(_line(d), schema("watch"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_line({**out, "by": "guess"}), schema("watch"))


class _Pipelines:
    """Fakes of reach (netdiag.diagnose) and of health's measure/conclude, recording their calls."""

    def __init__(self, monkeypatch, reach: Diagnosis, check: dict | None = None, concluded: dict | None = None):
        self.calls: list[str] = []
        self.closed = False
        pipelines = self

        class _Measured(Measured):
            def close(self):
                pipelines.closed = True

        def diagnose(model, src, dst, *, record, **kw):
            self.calls.append(f"reach {src} {dst} {kw['proto']}/{kw['port']} size {kw['size']}")
            record.append({"live": {"sport": 51000, "outcome": "connected" if reach.verdict == "delivered" else "timeout"}})
            return reach

        def measure(spec, source, progress=None):
            self.calls.append(f"http {spec.show()} from {source} expect {spec.expect}")
            m = _Measured()
            m.checks.append(check)
            return m

        def conclude(model, spec, source, m, probe_timeout):
            self.calls.append("conclude")
            m.close()
            return concluded

        monkeypatch.setattr("netdiag.diagnose.diagnose", diagnose)
        monkeypatch.setattr("netdiag.observe.snapshot.live_model", lambda: "model")
        monkeypatch.setattr("netdiag.health.pipeline.Source", lambda model, target: target)
        monkeypatch.setattr("netdiag.health.pipeline.measure", measure)
        monkeypatch.setattr("netdiag.health.pipeline.conclude", conclude)


def _delivered() -> Diagnosis:
    return Diagnosis("delivered", summary="TCP port 87 from ns:cl reaches ns:out, and the SYN-ACK gets back")


def test_a_delivered_probe_and_an_http_answer_are_diagnosed_by_health(monkeypatch):
    fake = _Pipelines(monkeypatch, _delivered(), HEAD_ONLY, MTU)
    flow_id, out, sport = Diagnoser()._one(7, "ns:cl", "203.0.113.1", "tcp", 87, 1460)
    assert fake.calls == ["reach ns:cl 203.0.113.1 tcp/87 size 1460",
                          "http http://203.0.113.1:87/ from ns:cl expect ((100, 499),)", "conclude"]
    assert (flow_id, sport) == (7, 51000) and fake.closed
    assert (out["by"], out["cause"], out["verdict"], out["fix_checked"]) == ("health", "MTU_BLACKHOLE", "blocked", True)
    assert out["probe_sports"] == [51000, 45000]  # the reach probe's and the HTTP request's connection
    assert out["probe_connects"] == 2  # both connected
    jsonschema.validate(_line(out), schema("watch"))


def test_no_http_answer_leaves_reachs_diagnosis_saying_what_the_request_got(monkeypatch):
    fake = _Pipelines(monkeypatch, _delivered(), SILENT)
    _, out, _ = Diagnoser()._one(1, "ns:cl", "203.0.113.1", "tcp", 87, 1460)
    assert "conclude" not in fake.calls and fake.closed  # the request's socket closed, health not asked
    assert (out["by"], out["verdict"], out["cause"]) == ("reach", "delivered", None)
    assert out["summary"].startswith("TCP port 87 from ns:cl reaches") and "no byte of the response" in out["summary"]
    assert (out["probe_sports"], out["probe_connects"]) == ([51000, 45001], 2)  # its connection was made all the same
    jsonschema.validate(_line(out), schema("watch"))


def test_a_blocked_probe_or_a_udp_flow_makes_no_http_request(monkeypatch):
    blocked = Diagnosis("blocked", cause="FIREWALL_DROP", summary="a rule drops it", fix=FixClaim("delete it"),
                        hops=[Hop(1, "ns-1", "host", "eth0", "veth", "forward")], blocked_at=1)
    fake = _Pipelines(monkeypatch, blocked, HEAD_ONLY)
    _, out, _ = Diagnoser()._one(1, "client", "203.0.113.1", "tcp", 82, 0)
    assert fake.calls == ["reach client 203.0.113.1 tcp/82 size 0"]
    assert (out["by"], out["cause"], out["hop"], out["probe_sports"]) == \
        ("reach", "FIREWALL_DROP", {"n": 1, "label": "host", "interface": "eth0", "direction": "forward"}, [51000])
    assert out["probe_connects"] == 0  # the probe's SYN was dropped
    fake = _Pipelines(monkeypatch, _delivered(), HEAD_ONLY)
    _, out, _ = Diagnoser()._one(2, "client", "203.0.113.1", "udp", 53, 0)
    assert [c.split()[0] for c in fake.calls] == ["reach"] and out["by"] == "reach"


def test_once_stopping_the_diagnosis_is_reachs_without_a_request(monkeypatch):
    fake = _Pipelines(monkeypatch, _delivered(), HEAD_ONLY, MTU)
    d = Diagnoser()
    d.stopping.set()  # Ctrl-C while reach's probe ran
    _, out, _ = d._one(1, "ns:cl", "203.0.113.1", "tcp", 87, 1460)
    assert [c.split()[0] for c in fake.calls] == ["reach"] and out["by"] == "reach"


def test_a_source_that_cannot_be_entered_keeps_reachs_diagnosis(monkeypatch):
    from runtime.errors import PermissionDenied

    _Pipelines(monkeypatch, _delivered(), HEAD_ONLY)

    def no_way_in(model, target):
        raise PermissionDenied("Cannot enter pid:77", "it has no process", "")

    monkeypatch.setattr("netdiag.health.pipeline.Source", no_way_in)
    _, out, _ = Diagnoser()._one(1, "pid:77", "203.0.113.1", "tcp", 87, 0)
    assert out["by"] == "reach" and "no HTTP request could be made: Cannot enter pid:77" in out["summary"]


def test_the_http_requests_connections_are_not_counted_in_the_flow():
    """The request's connection stalls like the flow it diagnoses (the same answer dies the same
    way): its events, held while the diagnosis runs, leave the counts once the line names its port."""
    out = io.StringIO()
    s = Session(_Scope(), JsonView(out), diagnose=False)
    s.diagnoser = _Diagnoser()
    s._event(_ev(kind="stalled", sport=40000, dport=87, count=2))
    s.diagnoser.probing.add(1)
    s._event(_ev(kind="stalled", sport=45000, dport=87, count=2))  # the HTTP request's, not known yet: held
    flow = s.flows.get(_ev(kind="stalled", dport=87))
    assert flow.count == 2 and len(flow.held) == 1
    s.diagnoser.results.append((1, {**health_line(MTU, 4.0), "probe_sports": [51000, 45000]}, 51000))
    s._diagnosed()
    s._event(_ev(kind="stalled", sport=45000, dport=87))  # its retransmits go on: still the request's
    assert flow.count == 2 and flow.held == [] and s.causes == {"MTU_BLACKHOLE": 1}
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    diagnosis = next(x for x in lines if x["type"] == "diagnosis")
    assert (diagnosis["by"], diagnosis["probe_sports"]) == ("health", [51000, 45000])
    for obj in lines:
        jsonschema.validate(obj, schema("watch"))


def test_the_request_asks_for_a_status_below_500_and_waits_healths_timeout():
    from netdiag.health.spec import expected, parse

    spec = parse("http://203.0.113.1:87/", expect=http_diagnosis.EXPECT, timeout=http_diagnosis.HTTP_TIMEOUT)
    assert [expected(s, spec.expect) for s in (200, 301, 404, 500, 502)] == [True, True, True, False, False]
    assert spec.timeout == 2.0 and spec.path == "/" and spec.header_host == "203.0.113.1:87"


def test_the_http_requests_own_connect_does_not_mark_the_flow_recovered():
    """A completed connect names no source port: while the flow is diagnosed one is held, and the
    diagnosis's own connects (reach's probe, the HTTP request) are taken from it; what is left is a
    real recovery."""
    for connects, recovered in ((2, False), (3, True)):
        out = io.StringIO()
        s = Session(_Scope(), JsonView(out), diagnose=False)
        s.diagnoser = _Diagnoser()
        s._event(_ev(kind="stalled", sport=40000, dport=87, count=2))
        flow = s.flows.get(_ev(kind="stalled", dport=87))
        s.diagnoser.probing.add(flow.id)
        s._event({k: v for k, v in _ev(kind="established", dport=87, count=connects).items() if k != "sport"})
        assert flow.recovered is None and len(flow.held) == 1
        # reach's probe and the HTTP request each completed a connect
        s.diagnoser.results.append((flow.id, {**health_line(MTU, 4.0), "probe_sports": [51000, 45000], "probe_connects": 2}, 51000))
        s._diagnosed()
        assert bool(flow.recovered) is recovered, connects
        assert [x["recovered"] is not None for x in map(json.loads, out.getvalue().splitlines()) if x["type"] == "flow"] == \
            [False] + [True] * recovered
