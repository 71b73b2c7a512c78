"""The quiet kind and `check --serve` against the real kernel, in one lab (shared by the module's
tests: the suite's time budget): a client container on a network with a subnet no other test
uses, connecting to the outside namespace through the lab host: to a server that answers (80), to
a port nothing listens on (81, refused), and to a port a rule in the lab host's forward hook drops
(82, unanswered). A quiet check fails on exactly those two flows, each with its own cause, hop and
fix; served, /healthz answers 503 then (JSON, JUnit, TAP by the Accept header; requests that come
together share one run) and 200 once nothing fails, bound inside the lab and requested there;
SIGTERM stops it, also in the middle of a run, leaving no tracefs instance behind."""
import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from netdiag.worlds.host import OUTSIDE_IP
from runtime.kernel.ns import netns
from tests.integration.test_watch import DROPPED, OPEN, REFUSED, failing_flows, own_instances
from tests.labkit import World, wait_for

pytestmark = pytest.mark.integration
SUBNET, SERVE = "10.247.41.0/24", 8089


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quiet")
    w = World(state_dir=tmp / "ndroot")
    w.create()
    try:
        failing_flows(w, tmp, SUBNET, "qnet", "qtest")
        w.client_ns = f"/proc/{w.inspect('client')['State']['Pid']}/ns/net"
        w.tmp = tmp
        yield w
    finally:
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"


def failing_traffic(lab, seconds: float) -> threading.Thread:
    """From the client, for `seconds`: a refused connect every 0.4 s, and every 0.8 s a connect the
    rule drops, held 1.5 s (its SYN is retransmitted after 1 s). Started in the background."""
    def loop():
        held = []
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            for port in ((REFUSED, DROPPED) if n % 2 == 0 else (REFUSED,)):
                with netns(lab.client_ns):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                s.connect_ex((OUTSIDE_IP, port))
                held.append((time.monotonic() + (1.5 if port == DROPPED else 0.2), s))
            n += 1
            time.sleep(0.4)
            for when, s in [h for h in held if h[0] <= time.monotonic()]:
                s.close()
                held.remove((when, s))
        time.sleep(1.5)
        for _, s in held:
            s.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def check_file(lab, name: str, body: str) -> str:
    path = lab.tmp / name
    path.write_text(body)
    return str(path)


def get(lab, path: str = "/healthz", accept: str | None = None, method: str = "GET"):
    """An HTTP request from inside the lab (the socket is made in its namespace): status, headers, body."""
    with netns(lab.namespace()):
        conn = http.client.HTTPConnection("127.0.0.1", SERVE, timeout=60)
        conn.connect()
    try:
        conn.request(method, path, headers={"Accept": accept} if accept else {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def test_a_quiet_check_fails_on_each_failing_flow_with_its_diagnosis(lab):
    path = check_file(lab, "quiet.yaml", "checks:\n  - name: nothing fails from the client\n"
                                         "    quiet: {for: 3s, container: client}\n")
    traffic = failing_traffic(lab, 3.0)
    p = lab.run("check", path, "--format", "json", timeout=60)
    traffic.join(10)
    assert p.returncode == 1, p.stderr
    r = json.loads(p.stdout)["checks"][0]
    assert r["kind"] == "quiet" and r["status"] == "failed" and r["watched"] == ["client"], r
    flows = {f["dst"]["port"]: f for f in r["flows"]}
    assert sorted(flows) == [REFUSED, DROPPED], r["flows"]  # the lab's other traffic and the probes are no flow
    refused, dropped = flows[REFUSED], flows[DROPPED]
    assert (refused["kind"], dropped["kind"]) == ("reset", "unanswered")
    for f in (refused, dropped):
        assert f["src"]["label"] == "client" and f["dst"]["label"] == f"ns:{lab.outside}"
    assert refused["diagnosis"]["cause"] == "NO_LISTENER", refused
    blocked = dropped["diagnosis"]
    assert blocked["cause"] == "FIREWALL_DROP" and blocked["fix_checked"] is True, blocked
    assert blocked["hop"]["label"] == "host" and blocked["hop"]["direction"] == "forward" and "qtest" in blocked["fix_command"]
    assert r["cause"] in ("NO_LISTENER", "FIREWALL_DROP") and r["hop"] and r["fix"]  # the first flow's
    assert r["summary"].startswith("2 failing flow(s) in 3s watching client: ")
    assert any(e["kind"] == "flow" and "FIREWALL_DROP at hop" in e["detail"] and "qtest" in e["detail"] for e in r["evidence"])


def test_served_checks_answer_503_then_200_in_each_format_and_stop_cleanly(lab):
    path = check_file(lab, "served.yaml", f"""checks:
  - name: the client reaches the outside
    reach: {{from: client, to: "{OUTSIDE_IP}", port: {OPEN}}}
  - name: nothing fails from the client
    quiet: {{for: 2s, container: client}}
""")
    proc = lab.popen("check", path, "--serve", f"127.0.0.1:{SERVE}", "--cache", "2s", stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    try:
        said = proc.stderr.readline()
        assert said.startswith(f"serving 2 checks on http://127.0.0.1:{SERVE}/healthz"), (said, proc.poll())
        traffic = failing_traffic(lab, 2.5)
        answers = {}
        asking = [threading.Thread(target=lambda a=a: answers.__setitem__(a, get(lab, accept=a)))
                  for a in ("application/json", "text/x-tap")]
        for t in asking:
            t.start()
        for t in asking:
            t.join(60)
        answered = time.monotonic()  # run 1 is kept until 2 s after about now
        (js, jh, jbody), (ts, th, tbody) = answers["application/json"], answers["text/x-tap"]
        assert (js, ts) == (503, 503) and jh["x-netdiag-run"] == th["x-netdiag-run"] == "1"  # one run for both
        assert jh["content-type"] == "application/json" and th["content-type"].startswith("text/x-tap")
        report = json.loads(jbody)
        reach, quiet = report["checks"]
        assert reach["status"] == "passed" and quiet["status"] == "failed" and report["exit"] == 1
        assert {f["dst"]["port"] for f in quiet["flows"]} == {REFUSED, DROPPED}
        assert "ok 1 - the client reaches the outside" in tbody and "not ok 2 - nothing fails from the client" in tbody
        assert "FIREWALL_DROP at hop" in tbody and "NO_LISTENER" in tbody
        xs, xh, xbody = get(lab, accept="application/xml")  # the same run, from the cache
        assert xs == 503 and xh["x-netdiag-run"] == "1" and "age" in xh
        failure = ET.fromstring(xbody).find(".//testcase[@name='nothing fails from the client']/failure")
        assert failure is not None and "2 failing flow(s)" in failure.get("message") and "FIREWALL_DROP" in failure.text
        hs, hh, hbody = get(lab, method="HEAD")  # as a load balancer may ask: the status alone
        assert (hs, hh["x-netdiag-run"], hbody) == (503, "1", "") and int(hh["content-length"]) > 0
        assert get(lab, "/metrics")[0] == 404
        traffic.join(10)
        time.sleep(max(0.0, answered + 2.1 - time.monotonic()))  # the cache expired, and nothing fails any more
        ok, oh, obody = get(lab)
        answered = time.monotonic()
        assert ok == 200 and oh["x-netdiag-run"] == "2", obody
        assert [c["status"] for c in json.loads(obody)["checks"]] == ["passed", "passed"]
        time.sleep(max(0.0, answered + 2.1 - time.monotonic()))
        third = threading.Thread(target=lambda: answers.__setitem__("third", get(lab)), daemon=True)
        third.start()  # a run under way (its quiet window has 2 s to go) when SIGTERM comes
        assert wait_for(lambda: bool(own_instances(proc.pid)), timeout=10)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        stopped_in = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and err.rstrip().endswith("stopped"), err
    assert stopped_in < 8.0, stopped_in  # bounded: nothing hangs (the answer below shows the window was cut short)
    third.join(5)
    status, headers, body = answers["third"]  # the request under way got its whole answer
    assert status == 503 and headers["x-netdiag-run"] == "3", body
    stopped = json.loads(body)["checks"][1]
    assert stopped["status"] == "error" and re.search(r"stopped after [\d.]+s of 2s", stopped["summary"]), stopped
    assert own_instances(proc.pid) == []
    assert "Traceback" not in err


def test_bad_serve_input_exits_2(lab):
    path = check_file(lab, "one.yaml", "checks:\n  - quiet: {for: 1s, container: client}\n")
    for args, said in ((["--serve", "8080"], "Invalid --serve address '8080'"),
                       (["--serve", "127.0.0.1:8080", "--cache", "soon"], "Invalid --cache"),
                       (["--serve", "127.0.0.1:8080", "-o", "x.json"], "-o does not go with --serve"),
                       (["--serve", "192.0.2.77:8080"], "Cannot serve on 192.0.2.77:8080")):
        p = lab.run("check", path, *args, timeout=30)
        assert p.returncode == 2 and said in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
