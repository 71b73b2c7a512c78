"""The quiet kind and `check --serve`, their pure parts: the file format, the verdict over watch's
own objects (validated against watch's schema, so they are what a session emits), the reports
listing each flow, the run order, the Accept header, the address, and the served results' cache
and one-run-at-a-time. No root, no processes, no sleeps (threads wait on events)."""
import threading

import jsonschema
import pytest

from netdiag.check import live_kinds, quiet, report, runner, serve, spec
from netdiag.check.spec import Check
from tests.unit.test_check_spec import problems, write
from tests.unit.test_schemas import schema

WATCH = schema("watch")
PARAMS = {"for": 5.0, "containers": ["client"], "networks": [], "namespaces": [], "reasons": []}


def flow(id_, kind, port, count, recovered=None):
    return {"type": "flow", "id": id_, "kind": kind, "proto": "tcp", "count": count,
            "src": {"ip": "10.0.0.2", "label": "client"}, "dst": {"ip": "203.0.113.1", "port": port, "label": "ns:out"},
            "first_seen": 100.0, "last_seen": 103.0, "recovered": recovered, "final": True}


def diagnosis(id_, cause, fix_command, checked):
    return {"type": "diagnosis", "flow": id_, "verdict": "blocked", "cause": cause, "summary": f"{cause} happened",
            "hop": {"n": 2, "label": "host", "interface": "eth0", "direction": "forward"}, "fix": f"undo {cause}",
            "fix_command": fix_command, "fix_checked": checked, "seconds": 0.8, "probe_sport": 40000}


def session(*middle, drops=None, interrupted=False, seconds=5.0):
    objs = [{"type": "start", "watching": ["client"], "for": 5.0, "notes": [], "instance": "netdiag-1-2-ab"}, *middle,
            {"type": "end", "seconds": seconds, "interrupted": interrupted, "flows": sum(o["type"] == "flow" for o in middle),
             "events": 3, "event_lines_suppressed": 0, "lost": 0, "drops": drops or {}, "diagnoses": {}, "undiagnosed": 0,
             "elsewhere": 0}]
    for o in objs[:-1]:
        jsonschema.validate(o, WATCH)  # what a watch session really emits
    return objs


def test_the_quiet_kind_in_a_file(tmp_path):
    path = write(tmp_path, "q.yaml", """checks:
  - quiet: {for: 3s, container: web, network: [front, back], ns: edge, reason: netfilter_drop}
  - quiet: {}
  - quiet: {ns: ["ns:edge", core]}
""")
    a, b, c = spec.load([path], environ={}).checks
    assert c.params["namespaces"] == ["edge", "core"]  # as watch --ns takes them, written either way
    assert a.params == {"for": 3.0, "containers": ["web"], "networks": ["front", "back"], "namespaces": ["edge"],
                        "reasons": ["NETFILTER_DROP"]}
    assert a.name == "no failing flow for 3s in web, network front, network back, ns:edge"
    assert b.params["for"] == 10.0 and b.name == "no failing flow for 10s on this host"
    assert "quiet" in spec.PROBE_ONLY  # skipped on a snapshot: it needs the live kernel
    bad = write(tmp_path, "bad.yaml", """checks:
  - quiet: {for: 10m}
  - quiet: {container: [], fore: 2s}
  - quiet: {reason: "NO SUCH"}
""")
    found = "\n".join(problems([bad]))
    assert "bad.yaml:2: checks[0].quiet.for: " in found and "at most 300 seconds" in found
    assert "bad.yaml:3: checks[1].quiet.fore: unknown key (did you mean 'for'?)" in found
    assert "bad.yaml:3: checks[1].quiet.container" in found
    assert "bad.yaml:4: checks[2].quiet.reason" in found


def test_nothing_failing_passes():
    r = quiet.verdict(session(), PARAMS)
    assert r["status"] == "passed" and r["flows"] == [] and r["summary"] == "no failing flow in 5s watching client"


def test_each_failing_flow_fails_it_with_its_diagnosis():
    objs = session(flow(1, "reset", 81, 1), flow(2, "unanswered", 82, 3, recovered=104.0),
                   diagnosis(2, "FIREWALL_DROP", "nft delete rule inet t f handle 4", True), diagnosis(1, "NO_LISTENER", None, None),
                   drops={"NETFILTER_DROP": 4})
    r = quiet.verdict(objs, PARAMS)
    assert r["status"] == "failed" and r["observed"] == "2 failing flow(s)"
    assert [(f["id"], f["diagnosis"]["cause"]) for f in r["flows"]] == [(1, "NO_LISTENER"), (2, "FIREWALL_DROP")]
    assert r["flows"][1]["recovered"] == 104.0  # it failed in the window: recovering later does not pass it
    assert (r["cause"], r["hop"]["interface"], r["fix"]) == ("NO_LISTENER", "eth0", "undo NO_LISTENER")
    details = "\n".join(e["detail"] for e in r["evidence"])
    assert "#2 client -> ns:out (203.0.113.1) tcp/82: SYN not answered (for 0.5 s, or retransmitted) x3 (recovered): FIREWALL_DROP at hop 2 " \
           "(host eth0): FIREWALL_DROP happened; fix: nft delete rule inet t f handle 4 (checked ✓)" in details
    assert "in client: NETFILTER_DROP 4" in details  # drops are evidence, not failures, unless named
    assert quiet.verdict(session(drops={"NETFILTER_DROP": 4}), PARAMS)["status"] == "passed"
    unplaced = {"type": "drops", "time": 101.0, "reason": "NETFILTER_DROP", "location": "nft_do_chain+0x46f",
                "protocol": 2048, "count": 4, "scope": "host"}  # tracefs's fallback: no place known
    details = [e["detail"] for e in quiet.verdict(session(unplaced, drops={"NETFILTER_DROP": 4}), PARAMS)["evidence"]]
    assert details == ["host-wide: NETFILTER_DROP 4"]


def test_a_named_drop_reason_fails_it_and_a_stopped_window_could_not_run():
    r = quiet.verdict(session(drops={"NETFILTER_DROP": 2, "NO_SOCKET": 1}), {**PARAMS, "reasons": ["NETFILTER_DROP"]})
    assert r["status"] == "failed" and r["observed"] == "2 drop(s) for NETFILTER_DROP" and r["cause"] is None
    r = quiet.verdict(session(flow(1, "reset", 81, 1), interrupted=True, seconds=1.2), PARAMS)
    assert r["status"] == "error" and "stopped after 1.2s of 5s" in r["summary"]


def test_the_reports_list_every_flow_with_its_diagnosis():
    many = [flow(i, "reset", 1000 + i, 1) for i in range(1, 10)] + [diagnosis(i, "NO_LISTENER", None, None) for i in range(1, 10)]
    check = Check("quiet please", "quiet", PARAMS, "q.yaml", 3)
    res = [runner._result(check, **quiet.verdict(session(*many, drops={"NO_SOCKET": 9}), PARAMS))]
    s = report.summary(res, 5.0)
    text, tap, junit = report.text(res, s), report.tap(res, s), report.junit(res, s, ["q.yaml"])
    for out in (text, tap, junit):  # nine flows: more than the six evidence lines other kinds show
        assert all(f"tcp/{1000 + i}: refused or reset (RST received) x1: NO_LISTENER" in out for i in range(1, 10)), out
        assert "NO_SOCKET 9" in out
    assert "not ok 1 - quiet please" in tap and 'type="NO_LISTENER"' in junit


def test_quiet_checks_run_after_the_others(monkeypatch):
    order = []
    for kind in ("quiet", "command"):
        monkeypatch.setitem(live_kinds.LIVE, kind, lambda p, m, live, _k=kind, **kw: order.append(_k) or
                            {"status": "passed", "summary": "ok"})
    checks = [Check(f"{k}{i}", k, {}, "f.yaml", i, index=i) for i, k in enumerate(("quiet", "command", "quiet", "command"))]
    for parallel in (1, 4):
        order.clear()
        res = runner.run_checks(checks, lambda: None, parallel=parallel)
        assert [r["name"] for r in res] == ["quiet0", "command1", "quiet2", "command3"]  # reported in the file's order
        assert order == ["command", "command", "quiet", "quiet"], order


def test_a_cancelled_run_skips_what_has_not_started_and_ends_a_window(monkeypatch):
    cancel = threading.Event()
    cancel.set()
    checks = [Check("c", "command", {}, "f.yaml", 1)]
    assert runner.run_checks(checks, lambda: None, cancel=cancel)[0]["summary"] == "not run: the run was stopped"
    view = quiet.Collected(cancel)
    with pytest.raises(KeyboardInterrupt):  # the session ends as on Ctrl-C ...
        view.tick(None)
    view.tick(None)  # ... once: it ticks again while it cleans up
    assert view.cancelled


def test_the_collecting_view_prints_nothing(capsys):
    """Everything a session shows goes to the check's result, never to stdout (which may be the report)."""
    from netdiag.watch.flows import Flow

    view = quiet.Collected()
    objs = session()
    view.started({k: v for k, v in objs[0].items() if k != "type"})
    for name in ("event", "drops", "diagnosis"):
        getattr(view, name)({"type": name})
    view.flow(Flow(1, "reset", {"ip": "10.0.0.2", "label": "c"}, {"ip": "10.0.0.3", "label": "d"}, 81, 1.0, 1.0), final=True)
    view.end(objs[-1])
    view.tick(None)
    view.close()
    assert capsys.readouterr().out == ""
    assert [o["type"] for o in view.objects] == ["start", "event", "drops", "diagnosis", "flow", "end"]


def test_a_host_that_cannot_be_watched_is_could_not_run(monkeypatch):
    from netdiag.watch import events, session

    class NoTracefs:
        def __init__(self, scope, view, **kw):
            pass

        def run(self, seconds):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(session, "Session", NoTracefs)
    monkeypatch.setattr("netdiag.watch.scope.Scope", lambda model, **kw: None)
    r = quiet.quiet(PARAMS, None, live=True)
    assert r["status"] == "error" and "Permission denied (watch needs root and tracefs)" in r["summary"]

    def unknown(reasons):
        raise ValueError("this kernel has no drop reason NOPE")

    monkeypatch.setattr(events, "check_reasons", unknown)
    r = quiet.quiet({**PARAMS, "reasons": ["NOPE"]}, None, live=True)
    assert r["status"] == "error" and r["summary"] == "could not run: this kernel has no drop reason NOPE"


@pytest.mark.parametrize("accept,fmt", [
    (None, "json"), ("*/*", "json"), ("application/json", "json"), ("application/xml", "junit"), ("text/xml", "junit"),
    ("text/x-tap", "tap"), ("application/vnd.netdiag-tap", "tap"), ("text/plain", "text"),
    ("text/html, application/xml;q=0.9, */*;q=0.8", "junit"), ("application/json;q=0.5, text/x-tap", "tap"),
    ("text/x-tap;q=0, application/xml;q=0.1", "junit"), ("image/png", "json"), ("application/xml;q=oops", "json"),
])
def test_the_accept_header_chooses_the_format(accept, fmt):
    assert serve.negotiate(accept) == fmt


def test_the_address():
    assert serve.parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert serve.parse_address("[::1]:9") == ("::1", 9)
    for bad in ("8080", ":8080", "localhost:80", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:http", "300.1.1.1:80"):
        with pytest.raises(serve.InvalidArgument) as e:
            serve.parse_address(bad)
        assert e.value.exit_code == 2 and "Invalid --serve address" in str(e.value)


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def test_results_are_kept_for_the_cache_duration():
    clock, runs = Clock(), []
    results = serve.Results(lambda: runs.append(1) or ([{"status": "passed"}], {"n": len(runs)}), cache=5.0, clock=clock)
    first, cached = results.get()
    assert (first.number, cached) == (1, False)
    clock.now += 4.9
    assert results.get() == (first, True)
    clock.now += 0.2
    second, cached = results.get()
    assert (second.number, cached, len(runs)) == (2, False, 2)
    assert serve.response(second, "json", [])[0] == 200


def test_requests_during_a_run_wait_for_it_and_never_start_another():
    entered, release, runs = threading.Event(), threading.Event(), []

    def slow():
        runs.append(1)
        entered.set()
        release.wait(10)
        return [{"status": "failed"}], {}

    results = serve.Results(slow, cache=0.0)  # no cache: only the run under way is shared
    got = []
    threads = [threading.Thread(target=lambda: got.append(results.get()[0].number)) for _ in range(4)]
    threads[0].start()
    assert entered.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert got == [1, 1, 1, 1] and len(runs) == 1
    assert results.get()[0].number == 2  # a request after it, with no cache: a new run


def test_a_run_that_cannot_read_the_host_answers_503_and_is_not_kept():
    calls = []

    def broken():
        calls.append(1)
        raise serve.InvalidArgument("Cannot read the host", "no permission", "")

    results = serve.Results(broken, cache=60.0)
    run, _ = results.get()
    status, ctype, body = serve.response(run, "json", [])
    assert status == 503 and b"Cannot read the host" in body
    results.get()
    assert len(calls) == 2
