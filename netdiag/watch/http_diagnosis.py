"""A failing TCP flow whose path works now, diagnosed with `health`'s pipeline when its port speaks
HTTP.

Reach (`diagnose`) follows one packet: when its probe is delivered the flow failed after the
handshake (a transfer that stalled, a connection reset mid-way, an answer that never came), which a
handshake cannot show. An HTTP request can: a large answer dying at an MTU step on the way back
(MTU_BLACKHOLE), a backend slower than the client's patience (SLOW_RESPONSE), a reset or a 5xx
(APP_ERROR). Whether the port speaks HTTP is decided by such a request, never by the port number:
health's own probe (health.pipeline.measure) asks `GET /` from the flow's source namespace, and an
answer that starts with an HTTP status line (complete or not) decides it. Then health's conclusion
(health.pipeline.conclude: its traces, its classification, its checked fix) is the flow's diagnosis;
otherwise reach's stands, saying what the request got. The request's own connections are named
(their source ports) so the session keeps their kernel events out of the flow's counts."""
from __future__ import annotations

import time

from runtime.errors import NetdiagError

HTTP_TIMEOUT = 2.0  # the request's patience (health's default): an answer later than this is SLOW_RESPONSE
# the request is ours (`/`, not the flow's own path): a status the server chose to send, a 404
# included, says it works; a 5xx says it does not
EXPECT = "100-499"
HOP_KEYS = ("n", "label", "interface", "direction")


def line(verdict: str, cause, summary: str, hop: dict | None, fix, fix_command, fix_check: dict | None,
         seconds: float, by: str) -> dict:
    """A diagnosis as watch shows it (schemas/watch.schema.json, `diagnosis`), from either pipeline."""
    check = fix_check or {}
    return {"verdict": verdict, "cause": cause, "summary": summary,
            "hop": {k: hop[k] for k in HOP_KEYS} if hop else None, "fix": fix or None, "fix_command": fix_command,
            "fix_checked": check.get("delivers") if check.get("checked") else None, "seconds": round(seconds, 2), "by": by}


def speaks_http(check: dict) -> bool:
    """The answer began with an HTTP status line (health's probe parsed a status from it)."""
    return check.get("status") is not None


def asks_http(reach: dict, proto: str) -> bool:
    """Whether an HTTP request is made: for a TCP flow whose reach probe was delivered (the failure
    is past the handshake, where reach cannot see)."""
    return proto == "tcp" and reach["verdict"] == "delivered"


def choose(reach: dict, proto: str, check: dict | None) -> str:
    """Which pipeline diagnoses the flow: "health" when an HTTP request was made (asks_http) and
    the port answered it as HTTP, else "reach"."""
    return "health" if asks_http(reach, proto) and check is not None and speaks_http(check) else "reach"


def health_line(result: dict, seconds: float) -> dict:
    """health's result (health.pipeline.conclude) as a watch diagnosis: healthy is delivered, a
    named cause blocked (the request fails), no cause unknown (health could not say why)."""
    verdict = "delivered" if result["healthy"] else "blocked" if result["cause"] else "unknown"
    return line(verdict, result["cause"], result["summary"], result.get("hop"), result.get("fix"),
                result.get("fix_command"), result.get("fix_check"), seconds, "health")


def not_http(check: dict) -> str:
    """What the request got, for reach's summary, when it did not decide that the port speaks HTTP."""
    if check.get("stage") == "connect":
        return f"an HTTP request could not connect ({check.get('detail')}): whether the port speaks HTTP is not known"
    if check.get("error") == "malformed":
        return "the port does not answer HTTP: " + str(check.get("detail"))
    return f"an HTTP request got no HTTP answer ({check.get('detail')}): whether the port speaks HTTP is not known"


def diagnose_http(model, src: str, dst: str, port: int, reach: dict, *, probe_timeout: float,
                  started: float) -> tuple[dict, list[int]]:
    """health's diagnosis of the flow when the port speaks HTTP, else `reach` (its summary saying
    what the request got); and the source ports of the request's connections."""
    from ..health.pipeline import Source, conclude, measure
    from ..health.spec import parse

    spec = parse(f"http://{dst}:{port}/", expect=EXPECT, timeout=HTTP_TIMEOUT)
    try:
        source = Source(model, src)
        measured = measure(spec, source)
    except (NetdiagError, OSError) as e:
        return {**reach, "summary": f"{reach['summary']}; no HTTP request could be made: {e}"}, []
    ports = [c["local"][1] for c in measured.checks if c.get("local")]
    check = measured.checks[-1]
    if choose(reach, "tcp", check) == "reach":
        measured.close()
        return {**reach, "summary": f"{reach['summary']}; {not_http(check)}"}, ports
    try:
        result = conclude(model, spec, source, measured, probe_timeout=probe_timeout)
    except (NetdiagError, OSError) as e:
        return {**reach, "summary": f"{reach['summary']}; the port speaks HTTP, but health could not conclude: {e}"}, ports
    return health_line(result, time.monotonic() - started), ports
