"""The probe-backed check kinds, each through the engine that already does its job, so a failed
check carries that engine's diagnosis (cause, hop, evidence, a checked fix):

- reach, mtu: netdiag.diagnose (static path, live probe, the kernel's packet trace); on a snapshot
  the static path alone. `blocked: CAUSE` passes only when the verdict is blocked with that cause.
- http, latency: netdiag.health (a load balancer's probe from the source namespace; a failure is
  diagnosed there); dns: netdiag.health.resolve (the source's own resolver). Skipped on a snapshot.
- lb: HAProxy's stats socket, sampled; a failing server's check is re-run by netdiag.health.explain.
- quiet: a `netdiag watch` session for a window (quiet.py); every failing flow fails it, diagnosed.

Each takes the check's params and the model and returns {"status", "summary", "expected",
"observed", ...} (runner.py adds the rest).
"""
from __future__ import annotations

import time

from ..reason.result import Diagnosis

# -- the trace pipeline: reach, mtu -----------------------------------------------------------------
def _diagnosis_fields(r: Diagnosis) -> dict:
    """A check result's cause, hop, fix and evidence: the diagnosis's own (the check's JSON says
    them at its top level, and embeds the whole diagnosis)."""
    return {"cause": r.cause, "hop": hop_of(r), "fix": r.fix.text or "", "fix_command": r.fix.command,
            "fix_check": r.fix.check, "evidence": [e.to_json() for e in r.evidence], "diagnosis": r}


def hop_of(r: Diagnosis) -> dict | None:
    """The hop where the diagnosis says the packet died (the trace's own hop object, trimmed)."""
    hop = r.blocked_hop
    return hop.brief() if hop else None


def _observed(r: Diagnosis) -> str:
    if r.verdict == "delivered":
        return "reachable"
    if r.verdict == "blocked":
        return f"blocked: {r.cause}" if r.cause else "blocked"
    return "not delivered (cause unknown)"


def _probe_not_run(r: Diagnosis, live: bool) -> str | None:
    lv = r.live or {}
    if live and r.dst_ip and lv.get("outcome") == "skipped":
        return lv.get("detail") or "the live probe did not run"
    return None


def reach(p: dict, model, *, live: bool) -> dict:
    from ..diagnose import diagnose

    r = diagnose(model, p["from"], p["to"], proto=p["proto"], port=p["port"], live=live, timeout=p["timeout"], host_evidence=False)
    want = p["expect"]
    expected = want["state"] if not want["causes"] else f"blocked: {' or '.join(want['causes'])}"
    observed = _observed(r)
    out = {"expected": expected, "observed": observed, **_diagnosis_fields(r)}
    skipped_probe = _probe_not_run(r, live)
    if skipped_probe:
        return {**out, "status": "error", "summary": f"could not probe: {skipped_probe}"}
    lost = (r.live or {}).get("outcome") in ("timeout", "unreachable", "refused", "too_big")
    if want["state"] == "reachable":
        ok = r.verdict == "delivered"
    elif want["causes"]:
        ok = r.verdict == "blocked" and r.cause in want["causes"]
    else:
        ok = r.verdict == "blocked" or (r.verdict == "unknown" and lost)
    if r.verdict == "unknown" and not ok and want["state"] != "reachable":
        return {**out, "status": "error", "summary": r.summary}
    summary = r.summary if ok else _mismatch(expected, observed, r)
    if not ok and r.verdict == "delivered":  # it should have been blocked: where it got through
        out["hop"] = r.hops[-1].brief() if r.hops else None
        out["fix"] = (f"nothing on the path blocks it: drop it with a firewall rule, put {p['to']} on a network {p['from']} "
                      "is not on (or make that network --internal), or stop publishing the port")
    return {**out, "status": "passed" if ok else "failed", "summary": summary}


def _mismatch(expected: str, observed: str, r: Diagnosis) -> str:
    where = r.blocked_hop
    at = f" at hop {where.n} ({where.label} {where.interface})" if where else ""
    return f"expected {expected}, but {observed}{at}: {r.summary}"


def mtu(p: dict, model, *, live: bool) -> dict:
    from ..diagnose import diagnose

    r = diagnose(model, p["from"], p["to"], proto="icmp", size=p["size"] - 28, live=live, timeout=p["timeout"], host_evidence=False)
    out = {"expected": f"{p['size']}-byte packets delivered", "observed": _observed(r), **_diagnosis_fields(r)}
    skipped_probe = _probe_not_run(r, live)
    if skipped_probe:
        return {**out, "status": "error", "summary": f"could not probe: {skipped_probe}"}
    ok = r.verdict == "delivered"
    if r.verdict == "unknown":
        return {**out, "status": "failed", "summary": _mismatch(out["expected"], out["observed"], r)}
    return {**out, "status": "passed" if ok else "failed",
            "summary": r.summary if ok else _mismatch(out["expected"], out["observed"], r)}


# -- health: http, latency; its resolver: dns -------------------------------------------------------
def _health_fields(h: dict) -> dict:
    # host-wide drop counts are not the check's (other checks' probes may be in them)
    evidence = [e for e in h.get("evidence") or [] if e.get("kind") not in ("kernel_drop", "nft_counter")]
    return {"cause": h.get("cause"), "hop": h.get("hop"), "fix": h.get("fix") or "", "fix_command": h.get("fix_command"),
            "fix_check": h.get("fix_check"), "evidence": evidence, "diagnosis": h}


def http(p: dict, model, *, live: bool) -> dict:
    from ..health import spec as hspec
    from ..health.pipeline import run_health

    spec = hspec.parse(p["url"], host=p.get("host"), expect=p["status"], timeout=p["within"])
    h = run_health(spec, p["from"], model=model)
    expected = f"HTTP {p['status']}" + (f" with {p['body_contains']!r} in the body" if p["body_contains"] else "") + \
        f" within {p['within']:g}s"
    observed = f"HTTP {h['status']}" if h.get("status") else (h.get("failure") or {}).get("error") or "no answer"
    out = {"expected": expected, "observed": observed, **_health_fields(h)}
    if not h["healthy"]:
        return {**out, "status": "failed", "summary": h["summary"]}
    body = h.get("body") or ""
    if p["body_contains"] and p["body_contains"] not in body:
        return {**out, "status": "failed", "cause": "APP_ERROR",
                "fix": f"the network delivers; the application serves other content at {p['url']}: check what it serves there",
                "summary": f"{p['url']} answered HTTP {h['status']} from {h['from']}, but the first {len(body)} bytes of the "
                           f"body do not contain {p['body_contains']!r}: {body[:120]!r}"}
    return {**out, "status": "passed", "summary": h["summary"]}


def latency(p: dict, model, *, live: bool) -> dict:
    from ..health.pipeline import run_health
    from ..health.spec import Spec
    from ..reason.static_trace import destination_ip

    ip = destination_ip(model, model.resolve(p["from"]), p["to"])
    if ip is None:
        return {"status": "failed", "cause": "NETWORK_NONE", "summary": f"{p['to']} has no address to connect to",
                "expected": f"handshake below {p['below'] * 1000:g} ms", "observed": "no address"}
    spec = Spec(host=ip, port=p["port"], mode="tcp", timeout=max(2.0, p["below"] * 2), count=p["count"],
                interval=0.05 if p["count"] > 1 else 1.0)
    h = run_health(spec, p["from"], model=model)
    series = h.get("series")
    p95 = series["p95"] if series else h["timings"].get("connect")
    expected = f"p95 handshake below {p['below'] * 1000:g} ms ({p['count']} handshakes)"
    observed = f"p95 {p95 * 1000:.2f} ms" if p95 is not None else "no handshake completed"
    out = {"expected": expected, "observed": observed, **_health_fields(h)}
    if not h["healthy"]:
        return {**out, "status": "failed", "summary": h["summary"]}
    ok = p95 is not None and p95 < p["below"]
    summary = (f"{p['count']} handshakes from {h['from']} to {ip}:{p['port']}: p95 {p95 * 1000:.2f} ms"
               + (f" (p50 {series['p50'] * 1000:.2f} ms)" if series and series.get("p50") is not None else ""))
    if not ok:
        return {**out, "status": "failed", "cause": "SLOW_RESPONSE", "summary": summary + f", not below {p['below'] * 1000:g} ms",
                "fix": f"the handshake itself is slow: look for a loaded host, a shaping qdisc or a user-space relay between "
                       f"{h['from']} and {ip}, or raise below: if {p95 * 1000:.2f} ms is acceptable"}
    return {**out, "status": "passed", "summary": summary}


def dns(p: dict, model, *, live: bool) -> dict:
    from ..health import resolve as resolver
    from ..health.pipeline import Source, dns_hint

    src = Source(model, p["from"])
    r = resolver.resolve(src.path, p["name"], src.files, time.monotonic() + p["within"])
    got = r["address"]
    expected = ("resolves" + (f" to {' or '.join(p['address'])}" if p["address"] else "")) if p["resolves"] else "does not resolve"
    observed = f"resolves to {got}" if got else f"does not resolve ({r.get('error')})"
    evidence = [{"kind": "resolver", "detail": f"{r['where']}: nameservers {', '.join(r['nameservers']) or 'none'}"
                 + (f", search {' '.join(r['search'])}" if r.get("search") else "")}]
    evidence += [{"kind": "dns", "detail": a["answer"], "server": a["server"], "name": a["name"]} for a in r["attempts"]]
    if got and r.get("source") == "hosts":
        evidence.append({"kind": "hosts", "detail": r["answer"]})
    out = {"expected": expected, "observed": observed, "evidence": evidence, "diagnosis": r}
    if p["resolves"] and got is None:
        hint = dns_hint(model, src, p["name"])
        if hint.get("detail"):
            evidence.append({"kind": "hint", "detail": hint["detail"]})
        return {**out, "status": "failed", "cause": "DNS_FAILURE", "fix": hint.get("fix", ""), "fix_command": hint.get("fix_command"),
                "summary": f"{p['name']} does not resolve from {src.label}: {r['answer'] or r.get('error')}"}
    if p["resolves"] and p["address"] and got not in p["address"]:
        return {**out, "status": "failed", "fix": f"check the record the answering resolver holds ({r.get('server') or r['source']})",
                "summary": f"{p['name']} resolves from {src.label} to {got}, not {' or '.join(p['address'])} "
                                                        f"({r['answer']})"}
    if not p["resolves"] and got is not None:
        return {**out, "status": "failed", "fix": f"remove the name where it is answered ({r.get('server') or r['source']})",
                "summary": f"{p['name']} resolves from {src.label} to {got} ({r['answer']}), "
                                                        "but it must not"}
    summary = (f"{p['name']} resolves from {src.label} to {got} ({r['answer']})" if got
               else f"{p['name']} does not resolve from {src.label}, as expected ({r['answer'] or r.get('error')})")
    return {**out, "status": "passed", "summary": summary}


LB_SAMPLE = 0.25


def lb(p: dict, model, *, live: bool) -> dict:
    """Every selected server UP (or none, with up: false) in HAProxy's own stats, for p["for"] s."""
    from ..health import explain
    from ..observe import haproxy

    proc, path, src, _ = explain.locate(model, p["socket"], p["target"])
    seen: dict[tuple, dict] = {}
    deadline = time.monotonic() + p["for"]
    while True:
        for r in haproxy.servers(path):
            if (p["backend"] and r["backend"] != p["backend"]) or (p["servers"] and r["server"] not in p["servers"]):
                continue
            s = seen.setdefault((r["backend"], r["server"]), {"samples": 0, "wrong": 0, "row": r, "wrong_row": None})
            s["samples"] += 1
            s["row"] = r
            if r["status"].startswith("UP") != p["up"]:
                s["wrong"] += 1
                s["wrong_row"] = r
        if time.monotonic() + LB_SAMPLE > deadline:
            break
        time.sleep(LB_SAMPLE)
    want = "UP" if p["up"] else "not UP"
    window = f" for {p['for']:g}s" if p["for"] else ""
    expected = f"{', '.join(p['servers']) if p['servers'] else 'every server'} {want}{window}"
    if not seen:
        return {"status": "failed", "expected": expected, "observed": "no such server",
                "summary": f"HAProxy ({path}) has no server" + (f" {', '.join(p['servers'])}" if p["servers"] else "")
                           + (f" in backend {p['backend']}" if p["backend"] else "")}
    def text(k, s):
        r = s["wrong_row"] or s["row"]
        return (f"{k[0]}/{k[1]} {r['status']} ({r['check_status'] or 'no check'}"
                + (f", {r['check_duration']} ms" if r.get("check_duration") is not None else "") + ")"
                + (f" in {s['wrong']} of {s['samples']} samples" if s["samples"] > 1 else ""))
    bad = {k: s for k, s in seen.items() if s["wrong"]}
    observed = "; ".join(text(k, s) for k, s in seen.items())
    if not bad:
        return {"status": "passed", "expected": expected, "observed": observed, "summary": f"HAProxy ({path}): {observed}"}
    summary = f"HAProxy ({path}): {'; '.join(text(k, s) for k, s in bad.items())}, expected {want}{window}"
    if not p["up"]:
        return {"status": "failed", "expected": expected, "observed": observed, "summary": summary}
    (_, server), s = next(iter(bad.items()))
    h = explain.recheck(model, proc, src, s["wrong_row"])
    out = {"status": "failed", "expected": expected, "observed": observed, "summary": summary}
    if h is None:
        return out
    if h["healthy"]:  # it passes now: it flaps (or HAProxy is about to see it UP)
        return {**out, "summary": summary + f"; {server}'s check passes right now ({h['summary']}): it flaps",
                "evidence": [{"kind": "check", "detail": h["summary"]}], "diagnosis": h}
    return {**out, **_health_fields(h), "summary": summary + f"; {server}: {h['summary']}"}


# -- command: what no probe says (a pull that works) ------------------------------------------------
def command(p: dict, model, *, live: bool) -> dict:
    """The program's exit status; its output's last lines are the evidence (a netdiag command's
    own diagnosis, when it is one that fails)."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "netdiag", *p["run"][1:]] if p["run"][0] == "netdiag" else p["run"]
    shown = " ".join(p["run"])
    out = {"expected": f"exit {p['exit']}"}
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=p["within"], stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {**out, "status": "failed", "observed": "still running", "summary": f"`{shown}` did not finish within {p['within']:g}s"}
    except OSError as e:
        return {**out, "status": "failed", "observed": "not run", "summary": f"`{shown}` could not run: {e.strerror}"}
    lines = (r.stderr or r.stdout).strip().splitlines()
    ok = r.returncode == p["exit"]
    if ok:
        return {**out, "status": "passed", "observed": f"exit {r.returncode}", "summary": f"`{shown}` exited {r.returncode}"}
    # a netdiag command's failure says "...: error: WHAT" and, diagnosed, "cause: CODE": the check's own
    said = next((line.split("error:", 1)[1].strip() for line in lines if "error:" in line), lines[-1] if lines else "")
    cause = next((line.split(None, 1)[1] for line in lines if line.startswith("cause: ") and len(line.split()) == 2), None)
    return {**out, "status": "failed", "observed": f"exit {r.returncode}", "cause": cause,
            "summary": f"`{shown}` exited {r.returncode} (expected {p['exit']})" + (f": {said}" if said else ""),
            "evidence": [{"kind": "output", "detail": line} for line in lines[-8:]]}


from .quiet import quiet  # noqa: E402  (the watch-backed kind has a module of its own)

LIVE = {"command": command, "quiet": quiet, "reach": reach, "mtu": mtu, "http": http, "latency": latency, "dns": dns, "lb": lb}
