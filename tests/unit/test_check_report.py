"""`netdiag check` over a snapshot, offline: each kind passes or fails as the fixture world says,
probe-only checks are skipped (never passed), and the reports are what CI tools read: JUnit XML
valid against Jenkins' XSD (and parsed back), TAP 13, one JSON object per check; exit codes 0/1/2.
Pure: the snapshot fixture, no root, no probes."""
import json
from pathlib import Path

import pytest
import xmlschema
import yaml

from netdiag.check import report, spec
from netdiag.check.runner import run_checks
from netdiag.snapshot_model import Model

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "tests" / "fixtures" / "lab_snapshot.json"
CHECKS = ROOT / "tests" / "fixtures" / "checks" / "snapshot.yaml"
XSD = ROOT / "tests" / "fixtures" / "junit" / "junit-10.xsd"


@pytest.fixture(scope="module")
def results():
    suite = spec.load([str(CHECKS)], environ={})
    model = Model.load(str(SNAPSHOT))
    return suite, run_checks(suite.checks, lambda: model, snapshot=True, parallel=4)


def test_every_check_passes_fails_or_is_skipped_as_the_world_says(results):
    suite, res = results
    assert [r["name"] for r in res] == [c.name for c in suite.checks]  # the file's order, whatever ran first
    for r in res:
        if r["kind"] in ("http", "dns", "latency"):
            assert r["status"] == "skipped" and "needs a live probe" in r["summary"], r
        elif r["name"] == "kept for later":
            assert r["status"] == "skipped" and r["summary"] == "kept for later"
        else:
            assert r["status"] == ("failed" if r["name"].startswith("FAILS") else "passed"), (r["name"], r["summary"])
            assert r["mode"] == ("static" if r["kind"] in ("reach", "mtu") else "model")
    by = {r["name"]: r for r in res}
    r = by["FAILS web -> api:9000 is blocked by a firewall (it is network isolation)"]
    assert r["cause"] == "NETWORK_ISOLATION" and "expected blocked: FIREWALL_DROP, but blocked: NETWORK_ISOLATION" in r["summary"]
    assert r["hop"]["n"] and r["fix"]
    r = by["FAILS jumbo frames"]
    assert r["cause"] == "MTU_BLACKHOLE" and r["hop"]["interface"] and "mtu" in r["fix"]
    r = by["FAILS api's admin port on every address"]
    assert r["cause"] == "LISTENER_LOOPBACK_ONLY" and "127.0.0.1" in r["fix"] and r["hop"]["label"].startswith("api")
    r = by["FAILS the database is published"]
    assert r["cause"] == "PORT_NOT_PUBLISHED" and r["fix_command"].startswith("netdiag rm -f db && netdiag run -d --name db")
    assert "-p 5432:5432/tcp" in r["fix_command"]
    r = by["FAILS web routes the lab's outside through back's gateway"]
    assert r["observed"] == "default via 172.17.0.1 dev eth0" and "ip route replace 203.0.113.1 via 10.50.0.1" in r["fix"]
    r = by["FAILS no container listens on 0.0.0.0:5432"]
    assert r["hop"]["label"] == "db" and "db: tcp :::5432" in r["observed"]
    assert by["the database is not reachable from outside"]["observed"] == "blocked: PORT_NOT_PUBLISHED"
    assert report.exit_code(res) == 1


def test_junit_is_valid_for_jenkins_and_parses_back(results, tmp_path):
    from junitparser import Failure, JUnitXml, Skipped

    suite, res = results
    xml = report.junit(res, report.summary(res, 1.0), suite.files)
    xmlschema.XMLSchema(str(XSD)).validate(xml)
    path = tmp_path / "r.xml"
    path.write_text(xml)
    parsed = JUnitXml.fromfile(str(path))
    (ts,) = list(parsed)
    cases = list(ts)
    assert ts.name == str(CHECKS) and ts.tests == len(res) == len(cases)
    assert ts.failures == sum(r["status"] == "failed" for r in res) and ts.skipped == sum(r["status"] == "skipped" for r in res)
    jumbo = next(c for c in cases if c.name == "FAILS jumbo frames")
    (fail,) = jumbo.result
    assert isinstance(fail, Failure) and fail.type == "MTU_BLACKHOLE" and fail.message.startswith("MTU_BLACKHOLE: ")
    assert "fix " in fail.text and "hop " in fail.text and f"{CHECKS}:" in fail.text
    assert isinstance(next(c for c in cases if c.name == "kept for later").result[0], Skipped)
    error = dict(res[0], status="error", summary="could not run: needs root", name="e")
    xmlschema.XMLSchema(str(XSD)).validate(report.junit([error], report.summary([error], 0.1), [error["file"]]))


def test_tap13_plan_lines_directives_and_yaml_blocks(results):
    _, res = results
    out = report.tap(res, report.summary(res, 1.0)).splitlines()
    assert out[:2] == ["TAP version 13", f"1..{len(res)}"]
    points = [ln for ln in out if ln.startswith(("ok ", "not ok "))]
    assert len(points) == len(res)
    for n, (ln, r) in enumerate(zip(points, res), 1):
        want = "not ok" if r["status"] in ("failed", "error") else "ok"
        assert ln.startswith(f"{want} {n} - "), ln
        assert ("# SKIP " in ln) == (r["status"] == "skipped")
    i = out.index(next(ln for ln in out if ln.endswith("- FAILS jumbo frames")))
    assert out[i + 1] == "  ---"
    end = out.index("  ...", i)
    block = yaml.safe_load("\n".join(ln[2:] for ln in out[i + 2:end]))
    assert block["cause"] == "MTU_BLACKHOLE" and block["severity"] == "fail" and block["at"].startswith(str(CHECKS))
    assert block["hop"]["interface"] and block["fix"]


def test_json_has_one_object_per_check(results):
    suite, res = results
    doc = json.loads(report.to_json(res, report.summary(res, 1.0), suite.files))
    assert doc["schema"] == "netdiag.check-report/1" and doc["exit"] == 1 and len(doc["checks"]) == len(suite.checks)
    assert doc["summary"]["failed"] == sum(c.name.startswith("FAILS") for c in suite.checks)
    for c in doc["checks"]:
        assert {"name", "kind", "file", "line", "status", "summary", "cause", "hop", "fix", "mode", "params"} <= set(c)
        if c["status"] == "failed":
            assert c["summary"] and (c["fix"] or c["cause"]), c


def test_exit_codes():
    r = {"status": "passed"}
    assert report.exit_code([r, {"status": "skipped"}]) == 0
    assert report.exit_code([r, {"status": "error"}]) == 3
    assert report.exit_code([{"status": "error"}, {"status": "failed"}]) == 1


def test_the_cli_on_a_snapshot(tmp_path):
    from typer.testing import CliRunner

    import netdiag.cli.check  # noqa: F401 - registers the command
    from netdiag.cli.app import app

    cli = CliRunner()
    out = tmp_path / "r.xml"
    res = cli.invoke(app, ["check", "--snapshot", str(SNAPSHOT), str(CHECKS), "-f", "junit", "-o", str(out)])
    assert res.exit_code == 1, res.output
    xmlschema.XMLSchema(str(XSD)).validate(str(out))
    assert "FAIL  FAILS jumbo frames  MTU_BLACKHOLE" in res.output and "checks: 12 passed, 9 failed, 4 skipped" in res.output
    good = tmp_path / "good.yaml"
    good.write_text("checks:\n  - listening: {target: db, port: 5432}\n  - dns: {from: api, name: db}\n")
    res = cli.invoke(app, ["check", "--snapshot", str(SNAPSHOT), str(good), "-f", "json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and [c["status"] for c in doc["checks"]] == ["passed", "skipped"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  - listening: {target: db, port: 0}\n")
    res = cli.invoke(app, ["check", "--snapshot", str(SNAPSHOT), str(bad)])
    assert res.exception.exit_code == 2 and f"{bad}:2: checks[0].listening.port: 0 is less than the minimum of 1" in str(res.exception)
    gen = tmp_path / "gen.yaml"
    res = cli.invoke(app, ["check", "--generate", "--snapshot", str(SNAPSHOT), "-o", str(gen)])
    assert res.exit_code == 0
    generated = spec.load([str(gen)], environ={})
    assert {(c.kind, c.params.get("target")) for c in generated.checks} >= {("published", "web"), ("listening", "web")}
    res = cli.invoke(app, ["check", "--snapshot", str(SNAPSHOT), str(gen)])
    assert res.exit_code == 0, res.output  # what the snapshot shows passes against it
