"""Why a pull (or push, or login) failed, in trace's terms. The registry client's error already
says which layer failed: the name (DNS_FAILURE), TCP (CONNECT_FAILED), TLS (unknown authority,
name mismatch), HTTP (401 with the realm and scope, 403, 404, 429). A TCP failure is followed
further: `trace` from this host to the registry's address and port, whose cause (a firewall's
rule, a missing route...) and fix become the pull's, with the trace itself as evidence.

    {"pulled": false, "cause": CODE, "summary": "...", "evidence": [{"kind", "detail"}],
     "fix": "...", "fix_command": str|null, "registry": "host:port", "trace": trace result|null}
"""
from __future__ import annotations

import ipaddress
import os
import socket


def _address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError):
        return None


def _evidence(err) -> list[dict]:
    d = err.detail
    out = [{"kind": "registry", "detail": err.why}] if err.why else []
    if d.get("status"):
        out.append({"kind": "http", "detail": f"{d['status']} from {d.get('url', '')}"})
    if d.get("realm") or d.get("scheme"):
        out.append({"kind": "challenge", "detail": f"{d.get('scheme', '')} realm={d.get('realm', '')!r} "
                                                    f"scope={' '.join(d.get('scopes') or []) or '-'}"})
    if d.get("retry_after"):
        out.append({"kind": "rate-limit", "detail": f"Retry-After: {d['retry_after']}"})
    return out


def explain(err, *, live: bool = True, timeout: float = 2.0) -> dict:
    """The diagnosis of a RegistryError (runtime.registry.errors) as one JSON-ready object."""
    d = err.detail
    result = {"pulled": False, "cause": err.cause, "summary": err.what, "evidence": _evidence(err), "fix": err.fix or None,
              "fix_command": None, "registry": d.get("registry") or d.get("host"), "trace": None}
    if err.cause != "CONNECT_FAILED" or not d.get("host") or not d.get("port"):
        return result
    ip = _address(d["host"])
    if ip is None:
        return result
    from .diagnose import diagnose
    from .observe.snapshot import live_model

    try:
        tr = diagnose(live_model(), "host", ip, proto="tcp", port=int(d["port"]), live=live and os.geteuid() == 0, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - the pull's own error stays the answer; say why it went no further
        result["evidence"].append({"kind": "trace", "detail": f"trace to {ip}:{d['port']} could not run: {e}"})
        return result
    result["trace"] = tr
    result["evidence"].append({"kind": "trace", "detail": f"trace host -> {ip} tcp/{d['port']}: {tr['verdict']}"
                                                           + (f" ({tr['cause']})" if tr.get("cause") else "") + f": {tr['summary']}"})
    if tr["verdict"] == "blocked" and tr.get("cause"):
        result.update(cause=tr["cause"], summary=f"{err.what}: {tr['summary']}", fix=tr.get("fix") or err.fix,
                      fix_command=tr.get("fix_command"))
    return result


def render(r: dict, say) -> None:
    """The plain-text form, line by line through `say` (stderr in the CLI)."""
    say(f"cause: {r['cause']}")
    say(f"why:   {r['summary']}")
    for e in r["evidence"]:
        say(f"  {e['kind']}: {e['detail']}")
    if r["fix"]:
        say(f"fix:   {r['fix']}")
