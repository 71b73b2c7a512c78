"""What a failed check means: the cause from the check's own measurements and the trace pipeline's
diagnosis, and the verdict in HAProxy's, AWS's and Kubernetes' words."""
from netdiag.health import classify, spec
from netdiag.reason.causes import CAUSES
from netdiag.reason.result import Diagnosis

TCP = spec.parse("web:80")
HTTP = spec.parse("http://web/health", timeout=2)


def check(ok=False, stage="connect", error="timeout", status=None, received=0, body="", detail="x", first_byte=None):
    return {"ok": ok, "stage": stage, "error": error, "status": status, "address": "10.0.0.2", "port": 80, "local": ["10.0.0.3", 40000],
            "received": received, "body": body, "detail": detail,
            "timings": {"dns": 0.001, "connect": None if stage == "connect" else 0.002, "first_byte": first_byte, "total": 2.0}}


def blocked(cause, **kw):
    return Diagnosis.from_json({"verdict": "blocked", "cause": cause, "summary": f"{cause} here", "blocked_at": 1, "size": 1472, "dst": "10.0.0.3",
            "hops": [{"n": 1, "label": "web", "interface": "eth0", "kind": "firewall", "direction": "input", "detail": "drop"}],
            "evidence": [{"kind": "nft_rule", "detail": "r", "table": "inet sg", "handle": 3}], "fix": "nft delete rule inet sg input handle 3",
            "fix_command": "nft delete rule inet sg input handle 3", "fix_check": {"checked": True, "delivers": True, "detail": "ok"}, **kw})


def test_every_verdict_uses_catalogued_causes_and_real_vocabularies():
    v = classify.verdicts(TCP, check())
    assert v["haproxy"]["status"] == "L4TOUT" and v["aws"]["reason"] == "Target.Timeout"
    assert v["kubernetes"] == "Readiness probe failed: dial tcp 10.0.0.2:80: i/o timeout"
    v = classify.verdicts(HTTP, check(error="refused"))
    assert (v["haproxy"]["status"], v["aws"]["reason"]) == ("L4CON", "Target.FailedHealthChecks")
    assert v["kubernetes"].endswith('Get "http://web/health": dial tcp 10.0.0.2:80: connect: connection refused')
    v = classify.verdicts(HTTP, check(stage="response", error="status", status=500))
    assert (v["haproxy"]["status"], v["aws"]["reason"], v["aws"]["description"]) == \
        ("L7STS", "Target.ResponseCodeMismatch", "Health checks failed with these codes: [500]")
    assert v["kubernetes"].endswith("HTTP probe failed with statuscode: 500")
    assert classify.verdicts(HTTP, check(stage="response", error="timeout"))["haproxy"]["status"] == "L7TOUT"
    assert classify.verdicts(HTTP, check(stage="response", error="malformed"))["haproxy"]["status"] == "L7RSP"
    ok = classify.verdicts(HTTP, check(ok=True, stage="done", error=None, status=200))
    assert ok["haproxy"]["status"] == "L7OK" and ok["aws"]["state"] == "healthy"
    dns = classify.verdicts(TCP, check(stage="resolve", error="nxdomain"), "10.0.0.1 answered NXDOMAIN for web", "10.0.0.1")
    assert dns["kubernetes"].endswith("dial tcp: lookup web on 10.0.0.1:53: no such host")


def test_a_handshake_failure_takes_the_traces_cause_hop_and_fix():
    r = classify.classify(HTTP, check(), src="cli", diagnosis=blocked("FIREWALL_DROP"))
    assert (r["healthy"], r["cause"], r["hop"]["interface"], r["fix_command"]) == \
        (False, "FIREWALL_DROP", "eth0", "nft delete rule inet sg input handle 3")
    assert r["cause"] in CAUSES


def test_a_share_of_handshakes_lost_is_packet_loss_with_the_rate_and_the_rule():
    rule = {"family": "inet", "table": "sg", "chain": "input", "handle": 3, "text": "numgen random mod 100 < 30 drop",
            "reason": "probabilistic (numgen random): drops about 30% of packets", "changes_outcome": True, "namespace": "web"}
    diag = blocked("FIREWALL_DROP", unevaluated_rules=[rule])  # the trace caught one of the lost packets
    loss = {"rate": 0.7, "ok": 14, "attempts": 20, "fix_command": "nsenter -t 9 -n nft delete rule inet sg input handle 3"}
    r = classify.classify(TCP, check(), src="cli", diagnosis=diag, loss=loss)
    assert r["cause"] == "PACKET_LOSS" and r["success_rate"] == 0.7 and "70%" in r["summary"]
    assert r["fix_command"] == loss["fix_command"] and any(e.get("handle") == 3 for e in r["evidence"])
    # a deterministic block stays what the trace says, whatever a burst measured
    assert classify.classify(TCP, check(), src="cli", diagnosis=blocked("NO_LISTENER"), loss=loss)["cause"] == "NO_LISTENER"
    # the path works now and every handshake got through: intermittent, not diagnosed
    r = classify.classify(TCP, check(), src="cli", diagnosis=Diagnosis.from_json({"verdict": "delivered", "cause": None, "evidence": []}),
                          loss={"rate": 1.0, "ok": 20, "attempts": 20})
    assert r["cause"] is None and "intermittent" in r["summary"]


def test_after_the_handshake_the_check_itself_decides():
    r = classify.classify(HTTP, check(stage="response", error="status", status=503, body="db down"), src="cli")
    assert r["cause"] == "APP_ERROR" and "503" in r["summary"] and "db down" in r["evidence"][0]["detail"]
    late = {"status": 200, "timings": {"total": 3.2}}
    r = classify.classify(HTTP, check(stage="response", error="timeout"), src="cli", late=late,
                          mtu={"static": blocked("MTU_BLACKHOLE")})
    assert r["cause"] == "SLOW_RESPONSE" and r["measured"] == 3.2 and "3.20 s" in r["summary"]  # it did arrive
    r = classify.classify(HTTP, check(stage="response", error="timeout", received=216), src="cli",
                          mtu={"static": blocked("MTU_BLACKHOLE"), "live": blocked("FIREWALL_DROP")})
    assert r["cause"] == "MTU_BLACKHOLE" and "216 bytes" in r["summary"] and "lets path MTU discovery work" in r["fix"]
    r = classify.classify(HTTP, check(stage="response", error="timeout"), src="cli",
                          mtu={"static": Diagnosis.from_json({"verdict": "delivered", "cause": None, "size": 1472, "dst": "10.0.0.3"})})
    assert r["cause"] == "SLOW_RESPONSE" and r["measured"] is None and any(e["kind"] == "path_back" for e in r["evidence"])


def test_a_name_that_does_not_resolve_says_who_was_asked():
    res = {"name": "web", "address": None, "source": None, "server": "10.255.255.53", "error": "timeout",
           "answer": "10.255.255.53 did not answer within 2.0s", "where": "cli's /etc/resolv.conf", "nameservers": ["10.255.255.53"],
           "search": [], "attempts": [{"server": "10.255.255.53", "name": "web", "answer": "10.255.255.53 did not answer within 2.0s"}],
           "hint": {"detail": "web is on the default bridge", "fix": "x", "fix_command": "netdiag network connect n cli"}}
    r = classify.classify(TCP, check(stage="resolve", error="timeout"), src="cli", resolution=res)
    assert r["cause"] == "DNS_FAILURE" and "10.255.255.53" in r["summary"] and r["fix_command"] == "netdiag network connect n cli"
    assert [e["kind"] for e in r["evidence"]] == ["resolver", "dns", "hint"]


def test_healthy_with_a_series():
    series = {"count": 5, "ok": 5, "success_rate": 1.0, "p50": 0.002, "p95": 0.004, "failures": {}}
    r = classify.classify(TCP, check(ok=True, stage="done", error=None), src="cli", series=series)
    assert r["healthy"] and "5/5" in r["summary"] and "p95 4 ms" in r["summary"]


def test_a_series_latency_counts_the_checks_that_failed_at_the_time_they_took():
    """12 of 20 timed out at 1 s: the p95 is the timeout, not the 8 ms of the 8 that answered."""
    from netdiag.health.pipeline import _series

    checks = [{"ok": True, "timings": {"total": 0.008}}] * 8 + \
             [{"ok": False, "stage": "connect", "error": "timeout", "timings": {"total": 1.0}}] * 12
    s = _series(checks)
    assert (s["count"], s["ok"], s["p95"], s["answered_p95"]) == (20, 8, 1.0, 0.008)
    assert s["p50"] == 1.0 and s["failures"] == {"connect:timeout": 12}
