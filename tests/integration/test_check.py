"""`netdiag check` against a real lab world (one per module: the checks only read it, and the tests
that change it undo their change): a file of passing checks of every kind exits 0, a file of
failing checks of every kind exits 1 with each failure's own cause, hop and fix; the JSON, the
JUnit XML (schema-checked, parsed) and the TAP are what CI tools read; probes side by side never
mix; a snapshot is checked offline without privileges; retries, --fail-fast, --generate.

The world (tests/fixtures/checks/lab_pass.yaml says it too): network front 10.81.0.0/24 with web
(httpd :80, published 8080:80), cli and app; network back 10.82.0.0/24 (--internal) with db (a
listener on :5432) and app; app listens on 8080, on 127.0.0.1:9000, and on 9090 behind a drop rule
in its own namespace."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import xmlschema
import yaml

from tests.labkit import World

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHECKS = FIXTURES / "checks"
XSD = FIXTURES / "junit" / "junit-10.xsd"
STATIC_KINDS = {"listening", "published", "internal", "route", "no_listener"}


def pid_of(w, name):
    return json.loads(w.ok("inspect", name))[0]["State"]["Pid"]


def in_ctr(w, name, *argv):
    p = w.in_lab("nsenter", "-t", str(pid_of(w, name)), "-n", *argv)
    assert p.returncode == 0, p.stderr


def files_in(w, name, files):
    root = f"/proc/{pid_of(w, name)}/root/www"
    for _ in range(100):
        if os.path.isdir(root):
            break
        time.sleep(0.05)
    for rel, body in files.items():
        Path(root, rel).write_text(body)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(state_dir=tmp_path_factory.mktemp("check") / "ndroot")
    w.create()
    try:
        w.ok("network", "create", "--subnet", "10.81.0.0/24", "front")
        w.ok("network", "create", "--subnet", "10.82.0.0/24", "--internal", "back")
        w.ok("run", "-d", "--name", "web", "--network", "front", "-p", "8080:80", "busybox", "sh", "-c",
             "mkdir -p /www && exec httpd -f -p 80 -h /www")
        w.ok("run", "-d", "--name", "app", "--network", "front", "busybox", "sh", "-c",
             "mkdir -p /www && httpd -p 127.0.0.1:9000 -h /www && httpd -p 9090 -h /www && exec httpd -f -p 8080 -h /www")
        w.ok("network", "connect", "back", "app")
        w.ok("run", "-d", "--name", "db", "--network", "back", "busybox", "sh", "-c", "mkdir -p /www && exec httpd -f -p 5432 -h /www")
        w.ok("run", "-d", "--name", "cli", "--network", "front", "busybox", "sleep", "3600")
        files_in(w, "web", {"index.html": "web ok\n", "health": "ok\n"})
        files_in(w, "app", {"index.html": "app ok\n"})
        in_ctr(w, "app", "nft", "add", "table", "inet", "sg")
        in_ctr(w, "app", "nft", "add", "chain", "inet", "sg", "input", "{ type filter hook input priority 0 ; }")
        in_ctr(w, "app", "nft", "add", "rule", "inet", "sg", "input", "tcp", "dport", "9090", "counter", "drop")
        yield w
    finally:
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"


def check(w, *args, timeout=120, caps=True):
    argv = [sys.executable, "-m", "netdiag", "check", "--var", f"OUTSIDE=ns:{w.outside}", *args]
    if not caps:  # root's uid, no capability: what an unprivileged CI runner has
        argv = ["setpriv", "--bounding-set", "-all", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=w.env, preexec_fn=w.enter())


def as_json(p):
    doc = json.loads(p.stdout)
    assert p.returncode == doc["exit"], (p.returncode, p.stderr)
    return doc


def test_every_kind_passes_in_a_world_that_is_right(world):
    p = check(world, str(CHECKS / "lab_pass.yaml"), "--format", "json", "--parallel", "8")
    doc = as_json(p)
    assert p.returncode == 0, [(c["name"], c["summary"]) for c in doc["checks"] if c["status"] != "passed"]
    kinds = {c["kind"] for c in doc["checks"]}
    assert kinds == {"reach", "http", "dns", "mtu", "latency"} | STATIC_KINDS
    for c in doc["checks"]:
        assert c["mode"] == ("model" if c["kind"] in STATIC_KINDS else "live"), c
    by = {c["name"]: c for c in doc["checks"]}
    # the included file's checks come first; a blocked expectation passes for the right reason only
    assert doc["files"][0].endswith("lab_static.yaml") and doc["checks"][0]["kind"] == "listening"
    assert by["the front cannot reach the database, because back is internal"]["observed"] == "blocked: INTERNAL_NETWORK"
    assert by["app's 9090 is firewalled"]["observed"] == "blocked: FIREWALL_DROP"
    assert by["the database is not reachable from outside"]["observed"] == "blocked: PORT_NOT_PUBLISHED"
    assert by["cli GET http://web:80/health -> 200 containing 'ok'"]["diagnosis"]["status"] == 200
    lines = check(world, str(CHECKS / "lab_pass.yaml")).stdout.splitlines()  # CI: plain lines, the file's order
    assert lines[0].startswith("PASS  app listens on 0.0.0.0:8080/tcp") and lines[-1].startswith("22 checks: 22 passed, 0 failed")


def test_every_kind_fails_with_its_cause_hop_and_fix(world):
    p = check(world, str(CHECKS / "lab_fail.yaml"), "--format", "json", "--parallel", "8")
    doc = as_json(p)
    assert p.returncode == 1 and doc["summary"]["failed"] == doc["summary"]["total"] == 20
    kinds = set()
    for c in doc["checks"]:
        want = re.match(r"expect (\S+):", c["name"]).group(1)
        assert c["status"] == "failed" and c["cause"] == (None if want == "-" else want), (c["name"], c["cause"], c["summary"])
        assert c["summary"] and c["fix"], c["name"]
        if c["kind"] in {"reach", "mtu"} | STATIC_KINDS:
            assert c["hop"] and c["hop"]["label"], c["name"]
        kinds.add(c["kind"])
    assert kinds == {"reach", "http", "dns", "mtu", "latency"} | STATIC_KINDS
    by = {c["name"]: c for c in doc["checks"]}
    drop = by["expect FIREWALL_DROP: cli reaches app's firewalled 9090"]
    assert drop["hop"]["label"].startswith("app") and "nft delete rule inet sg input handle" in drop["fix_command"]
    assert drop["fix_check"]["delivers"] and any(e["kind"] == "nft_trace" for e in drop["evidence"])
    assert not any(e["kind"] in ("kernel_drop", "nft_counter") for c in doc["checks"] for e in c["evidence"])  # host-wide: never
    wrong = by["expect NO_LISTENER: port 81 is firewalled"]
    assert wrong["expected"] == "blocked: FIREWALL_DROP" and "but blocked: NO_LISTENER" in wrong["summary"]
    assert by["expect -: app's 8080 is blocked"]["observed"] == "reachable"
    http = by["expect FIREWALL_DROP: the firewalled port over HTTP"]
    assert http["diagnosis"]["verdicts"]["haproxy"]["status"] == "L4TOUT" and "nft delete rule" in http["fix_command"]
    dns = by["expect DNS_FAILURE: the front resolves the database"]
    assert "is on front, not on back" in json.dumps(dns["evidence"]) and dns["fix_command"] == "netdiag network connect back cli"


def test_junit_and_tap_reports_of_a_failing_run(world, tmp_path):
    out = tmp_path / "report.xml"
    p = check(world, str(CHECKS / "lab_fail.yaml"), str(CHECKS / "lab_pass.yaml"), "--format", "junit", "-o", str(out), "-j", "8")
    assert p.returncode == 1 and "42 checks: 22 passed, 20 failed" in p.stdout  # progress stays on the terminal
    xmlschema.XMLSchema(str(XSD)).validate(str(out))
    from junitparser import Failure, JUnitXml

    suites = {s.name: s for s in JUnitXml.fromfile(str(out))}
    assert [Path(n).name for n in suites] == ["lab_fail.yaml", "lab_static.yaml", "lab_pass.yaml"]
    fail = suites[str(CHECKS / "lab_fail.yaml")]
    assert (fail.tests, fail.failures, fail.errors) == (20, 20, 0)
    case = next(c for c in fail if c.name.startswith("expect MTU_BLACKHOLE"))
    (res,) = case.result
    assert isinstance(res, Failure) and res.type == "MTU_BLACKHOLE" and "fix " in res.text and "hop    #1" in res.text
    p = check(world, str(CHECKS / "lab_fail.yaml"), "--format", "tap", "-j", "8")
    lines = p.stdout.splitlines()
    assert p.returncode == 1 and lines[:2] == ["TAP version 13", "1..20"]
    assert sum(ln.startswith("not ok ") for ln in lines) == 20
    start = lines.index("  ---")
    block = yaml.safe_load("\n".join(ln[2:] for ln in lines[start + 1:lines.index("  ...")]))
    assert block["cause"] == "FIREWALL_DROP" and block["hop"]["label"].startswith("app") and block["fix_command"]


def test_parallel_probes_never_mix(world, tmp_path):
    """48 live probes, 8 at a time, to shared destinations through shared hops: delivered ones
    and dropped ones side by side. Each must come out as the world says, and each probe's kernel
    trace must hold only its own packets (its own source address, its own mark)."""
    truth = [("cli", "app", 8080, "reachable"), ("cli", "app", 9090, {"blocked": "FIREWALL_DROP"}),
             ("app", "db", 5432, "reachable"), ("cli", "db", 5432, {"blocked": "INTERNAL_NETWORK"}),
             ("web", "app", 8080, "reachable"), ("cli", "app", 81, {"blocked": "NO_LISTENER"}),
             ("web", "app", 9090, {"blocked": "FIREWALL_DROP"}), ("cli", "web", 80, "reachable")]
    checks = [{"reach": {"from": s, "to": d, "port": port, "expect": want}} for s, d, port, want in truth] * 6
    f = tmp_path / "many.yaml"
    f.write_text(yaml.safe_dump({"checks": checks}))
    t0 = time.monotonic()
    doc = as_json(check(world, str(f), "--format", "json", "--parallel", "8"))
    elapsed = time.monotonic() - t0
    assert doc["summary"]["passed"] == 48, [(c["name"], c["observed"]) for c in doc["checks"] if c["status"] != "passed"]
    ips = {n: {ep["IPAddress"] for ep in json.loads(world.ok("inspect", n))[0]["NetworkSettings"]["Networks"].values()}
           for n in ("cli", "app", "web")}
    for c in doc["checks"]:
        events = c["diagnosis"]["live"]["nftrace"]
        assert events, c["name"]
        src = ips[c["params"]["from"]]
        marks = {e["packet"]["sport"] for e in events if e["direction"] == "probe"} | \
                {e["packet"]["dport"] for e in events if e["direction"] == "reply"}
        assert len(marks) == 1, (c["name"], marks)
        assert {e["packet"]["src"] for e in events if e["direction"] == "probe"} <= src, c["name"]
    assert elapsed < 48 * 0.5, elapsed  # 12 of them wait a second each for a dropped SYN: they overlap


def test_a_snapshot_is_checked_offline_without_privileges(world, tmp_path):
    snap = tmp_path / "host.json"
    world.ok("snapshot", "-o", str(snap))
    p = check(world, str(CHECKS / "lab_pass.yaml"), "--snapshot", str(snap), "--format", "json", caps=False)
    doc = as_json(p)
    assert p.returncode == 0, [c["summary"] for c in doc["checks"] if c["status"] not in ("passed", "skipped")]
    for c in doc["checks"]:
        if c["kind"] in ("http", "dns", "latency"):
            assert c["status"] == "skipped", c  # never passed without a probe
        else:
            assert c["status"] == "passed" and c["mode"] == ("model" if c["kind"] in STATIC_KINDS else "static"), c
    p = check(world, str(CHECKS / "lab_fail.yaml"), "--snapshot", str(snap), "--format", "json", caps=False)
    doc = as_json(p)
    assert p.returncode == 1 and {c["status"] for c in doc["checks"]} == {"failed", "skipped"}
    # live, without privileges: nothing can be probed or seen, which is "could not run", not "failed"
    p = check(world, str(CHECKS / "lab_pass.yaml"), "--format", "json", caps=False)
    doc = as_json(p)
    assert p.returncode == 3 and doc["summary"]["failed"] == 0 and doc["summary"]["error"] > 0
    assert "run it as root, or check a snapshot" in next(c["summary"] for c in doc["checks"] if c["status"] == "error")


def test_invalid_files_exit_2_naming_the_line(world, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("checks:\n  - reach: {from: cli, to: app, port: 8080}\n  - reach: {from: cli, to: app, port: http}\n")
    p = check(world, str(f))
    assert p.returncode == 2 and f"{f}:3: checks[1].reach.port: 'http' is not of type 'integer'" in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_retry_until_the_server_is_up_and_fail_fast(world, tmp_path):
    f = tmp_path / "late.yaml"
    f.write_text("checks:\n  - listening: {target: app, port: 7070}\n  - reach: {from: cli, to: app, port: 7070}\n")
    started = []  # httpd without -f puts itself in the background: exec returns
    starter = threading.Timer(2.0, lambda: started.append(world.run("exec", "app", "httpd", "-p", "7070", "-h", "/www")))
    starter.start()
    try:
        doc = as_json(check(world, str(f), "--format", "json", "--retry-timeout", "20s", "--parallel", "2"))
    finally:
        starter.join()
    assert started[0].returncode == 0, started[0].stderr
    assert doc["exit"] == 0 and all(c["attempts"] > 1 for c in doc["checks"]), [(c["name"], c["attempts"]) for c in doc["checks"]]
    f.write_text("checks:\n  - listening: {target: app, port: 7171}\n  - reach: {from: cli, to: app, port: 8080}\n"
                 "  - dns: {from: cli, name: web}\n")
    doc = as_json(check(world, str(f), "--format", "json", "--fail-fast", "--parallel", "1"))
    assert doc["exit"] == 1 and [c["status"] for c in doc["checks"]] == ["failed", "skipped", "skipped"]
    assert "--fail-fast" in doc["checks"][1]["summary"]


def test_generate_pins_what_works_today(world, tmp_path):
    assert world.ok("exec", "cli", "wget", "-q", "-O", "-", "http://web/") == "web ok\n"
    world.run("exec", "app", "wget", "-q", "-O", "-", "http://db:5432/")  # a 404: the pair still talks
    out = tmp_path / "gen.yaml"
    p = world.run("check", "--generate", "-o", str(out))
    assert p.returncode == 0, p.stderr
    doc = yaml.safe_load(out.read_text())
    got = [c for c in doc["checks"]]
    assert f"({len(got)} checks)" in p.stderr, p.stderr  # what it says it wrote is what it wrote
    assert {"reach": {"from": "cli", "to": "web", "port": 80, "proto": "tcp"}} in got
    assert {"reach": {"from": "app", "to": "db", "port": 5432, "proto": "tcp"}} in got
    assert {"dns": {"from": "cli", "name": "web", "address": "10.81.0.2"}} in got
    assert {"published": {"target": "web", "port": 80, "proto": "tcp", "host_port": 8080}} in got
    assert {"internal": {"network": "back"}} in got
    p = check(world, str(out), "-j", "8")
    assert p.returncode == 0, p.stdout[-2000:]
