"""A check run written for people and for CI: text lines, one JSON document (one object per check),
JUnit XML (as Jenkins', GitLab's and GitHub's reporters read it; validated against Jenkins'
junit-10.xsd in the tests) and TAP 13. Pure: results in, text out.

Every failed check's text carries what was expected, what was seen, the cause code, the hop and
the fix - in JUnit as the failure's message and body, in TAP in the YAML block.
"""
from __future__ import annotations

import json

from ..reason.result import as_json
import os

REPORT_SCHEMA = "netdiag.check-report/1"
MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "error": "ERROR"}


def summary(results: list[dict], elapsed: float) -> dict:
    counts = {s: sum(r["status"] == s for r in results) for s in ("passed", "failed", "skipped", "error")}
    return {"total": len(results), **counts, "duration": round(elapsed, 3)}


def exit_code(results: list[dict]) -> int:
    """0 every check passed (or was skipped), 1 some failed, 3 some could not run (and none failed)."""
    if any(r["status"] == "failed" for r in results):
        return 1
    return 3 if any(r["status"] == "error" for r in results) else 0


def summary_line(s: dict) -> str:
    parts = [f"{s['passed']} passed", f"{s['failed']} failed"] + ([f"{s['skipped']} skipped"] if s["skipped"] else []) + \
        ([f"{s['error']} could not run"] if s["error"] else [])
    return f"{s['total']} check{'s' if s['total'] != 1 else ''}: {', '.join(parts)} in {s['duration']:.1f}s"


def shown_evidence(r: dict) -> list[dict]:
    """The evidence a report shows: the first six items, and every failing flow a quiet check lists
    (each is a finding with its own diagnosis, not a supporting detail)."""
    evidence = r.get("evidence") or []
    return [e for e in evidence if e.get("kind") == "flow"] + [e for e in evidence if e.get("kind") != "flow"][:6]


# -- text ----------------------------------------------------------------------------------------------
def details(r: dict) -> list[str]:
    """What a failed (or unrun) check says beyond its name: the lines under it."""
    out = []
    if r["status"] in ("failed", "error"):
        out.append(f"why    {r['summary']}")
        if r.get("expected") is not None:
            out.append(f"expect {r['expected']}; seen {r['observed']}")
        if r.get("cause"):
            out.append(f"cause  {r['cause']}")
        hop = r.get("hop")
        if hop:
            out.append("hop    " + " ".join(str(x) for x in (f"#{hop['n']}" if hop.get("n") else None, hop.get("label"),
                                                               hop.get("interface"), hop.get("kind"), hop.get("direction")) if x)
                       + (f": {hop['detail']}" if hop.get("detail") else ""))
        for e in shown_evidence(r):
            out.append(f"  {e.get('kind')}: {e.get('detail')}")
        if r.get("fix"):
            out.append(f"fix    {r['fix']}")
        check = r.get("fix_check")
        if check:
            out.append(f"       {'checked ✓' if check.get('delivers') else 'checked ✗' if check.get('delivers') is False else 'unchecked'}: "
                       f"{check.get('detail')}")
        verified = r.get("fix_verified")
        if verified:
            mark = {True: "✓", False: "✗"}.get(verified.get("replica"), "?")
            out.append(f"       verified on a replica {mark}: {verified.get('detail')}")
        if r.get("fix_proof"):
            out.append(f"       proof: {r['fix_proof']}")
    elif r["status"] == "skipped":
        out.append(f"skip   {r['summary']}")
    return out


def line(r: dict) -> str:
    """The one line a check gets when it ends."""
    extra = f"  [{r['file']}:{r['line']}]" if r["status"] != "passed" else f"  ({r['duration']:.2f}s)"
    cause = f"  {r['cause']}" if r["status"] == "failed" and r.get("cause") else ""
    return f"{MARK[r['status']]:<5} {r['name']}{cause}{extra}"


def text(results: list[dict], s: dict) -> str:
    out = []
    for r in results:
        out.append(line(r))
        out += ["      " + d for d in details(r)]
    out.append(summary_line(s))
    return "\n".join(out) + "\n"


# -- JSON ----------------------------------------------------------------------------------------------
def to_json(results: list[dict], s: dict, files: list[str]) -> str:
    return json.dumps({"schema": REPORT_SCHEMA, "files": files, "summary": s, "exit": exit_code(results), "checks": results},
                      indent=2, default=lambda o: as_json(o) if hasattr(o, "to_json") else str(o)) + "\n"


# -- JUnit XML -----------------------------------------------------------------------------------------
def junit(results: list[dict], s: dict, files: list[str]) -> str:
    """One <testsuite> per check file, one <testcase> per check; a failed check is a <failure> whose
    message is the cause and the one-line why, its body the details; a check that could not run is
    an <error>, a skipped one <skipped>. Only attributes Jenkins' junit-10.xsd allows."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

    xml = JUnitXml("netdiag check")
    for f in files or sorted({r["file"] for r in results}):
        mine = [r for r in results if r["file"] == f]
        if not mine:
            continue
        suite = TestSuite(f)
        stem = os.path.splitext(os.path.basename(f))[0]
        for r in mine:
            case = TestCase(r["name"], classname=f"netdiag.check.{stem}", time=round(r["duration"], 3))
            body = "\n".join([f"{r['file']}:{r['line']} ({r['kind']})", *details(r)])
            if r["status"] == "failed":
                res = Failure(message=(f"{r['cause']}: " if r.get("cause") else "") + r["summary"], type_=r.get("cause") or "FAILED")
                res.text = body
                case.result = [res]
            elif r["status"] == "error":
                res = Error(message=r["summary"], type_="COULD_NOT_RUN")
                res.text = body
                case.result = [res]
            elif r["status"] == "skipped":
                case.result = [Skipped(message=r["summary"])]
            else:
                case.system_out = f"{r['file']}:{r['line']} ({r['kind']}, {r.get('mode')}): {r['summary']}"
            suite.add_testcase(case)
        suite.update_statistics()
        suite.time = round(sum(r["duration"] for r in mine), 3)
        xml.add_testsuite(suite)
    xml.update_statistics()
    xml.time = round(s["duration"], 3)
    _only_allowed(xml)
    out = xml.tostring()
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + (out.decode("utf-8") if isinstance(out, bytes) else out) + "\n"


def _only_allowed(xml) -> None:
    """junitparser counts skipped on <testsuites>, which Jenkins' schema does not allow there."""
    if "skipped" in xml._elem.attrib:
        del xml._elem.attrib["skipped"]


# -- TAP 13 --------------------------------------------------------------------------------------------
def tap(results: list[dict], s: dict) -> str:
    """TAP version 13: a plan, `ok`/`not ok` per check (skipped: `# SKIP reason`), and for a failed
    check a YAML block with what, where, cause, hop and fix."""
    import yaml

    out = ["TAP version 13", f"1..{len(results)}"]
    for n, r in enumerate(results, 1):
        desc = r["name"].replace("#", "\\#")
        if r["status"] == "skipped":
            out.append(f"ok {n} - {desc} # SKIP {r['summary']}")
            continue
        out.append(f"{'ok' if r['status'] == 'passed' else 'not ok'} {n} - {desc}")
        if r["status"] in ("failed", "error"):
            block = {"message": r["summary"], "severity": "fail" if r["status"] == "failed" else "error",
                     "at": f"{r['file']}:{r['line']}", "kind": r["kind"], "expected": r.get("expected"), "seen": r.get("observed"),
                     "cause": r.get("cause"), "hop": r.get("hop"), "fix": r.get("fix") or None, "fix_command": r.get("fix_command"),
                     "evidence": [e.get("detail") for e in shown_evidence(r)] or None}
            text = yaml.safe_dump({k: v for k, v in block.items() if v is not None}, sort_keys=False, allow_unicode=True, width=1000)
            out += ["  ---", *("  " + ln for ln in text.rstrip("\n").split("\n")), "  ..."]
    out.append(f"# {summary_line(s)}")
    return "\n".join(out) + "\n"


def render(fmt: str, results: list[dict], s: dict, files: list[str]) -> str:
    if fmt == "json":
        return to_json(results, s, files)
    if fmt == "junit":
        return junit(results, s, files)
    if fmt == "tap":
        return tap(results, s)
    return text(results, s)
