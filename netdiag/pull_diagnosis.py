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
from pathlib import Path


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


def presented_certificate(host: str, port: int, timeout: float = 5.0) -> str | None:
    """Who the registry's certificate names and who signed it ("subject=..., issuer=..."), read
    without verifying it (it failed verification: this says which CA it wants)."""
    import shutil
    import ssl
    import subprocess

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    openssl = shutil.which("openssl")
    if not der or not openssl:
        return None
    p = subprocess.run([openssl, "x509", "-inform", "DER", "-noout", "-subject", "-issuer"], input=der, capture_output=True, timeout=10)
    return ", ".join(p.stdout.decode(errors="replace").split("\n")).strip(", ") if p.returncode == 0 else None


def _verifies(ca: Path, host: str, port: int, timeout: float = 5.0) -> bool:
    """Whether the CA in `ca` verifies the chain the registry presents (its name is another question)."""
    import ssl

    try:
        ctx = ssl.create_default_context(cafile=str(ca))  # that file alone, not the system store
        ctx.check_hostname = False
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ValueError):
        return False


def misplaced_ca(certs_d: Path, domain: str, host: str, port: int, limit: int = 8) -> Path | None:
    """A CA kept for this host under another certs.d directory (the address without its port, another
    port) that verifies the registry's certificate: the usual reason a CA "installed" is not used."""
    try:
        dirs = [p for p in sorted(certs_d.iterdir()) if p.is_dir() and p.name != domain
                and (p.name == host or p.name.startswith(f"{host}:"))]
    except OSError:
        return None
    candidates = [crt for d in dirs for crt in sorted(d.glob("*.crt"))][:limit]
    return next((crt for crt in candidates if _verifies(crt, host, port)), None)


def _unknown_authority(result: dict, d: dict) -> None:
    """The fix for an unknown CA, at the narrowest place: CERTS_D/HOST:PORT/ca.crt, this registry alone.
    A CA found in a neighbouring directory that verifies the certificate gives a runnable command."""
    target = Path(d["ca_path"])
    found = misplaced_ca(Path(d["certs_d"]), d["registry"], d["host"], int(d["port"]))
    if found is None:
        result["fix"] = (f"{result['fix']}; no command: only you can say which CA to trust (compare the issuer above with "
                         f"the CA your registry's owner gave you: 'openssl x509 -in CA.crt -noout -subject')")
        return
    result["evidence"].append({"kind": "certs.d", "detail": f"{found} verifies the registry's certificate, but it is kept for "
                                                            f"{found.parent.name}, not for {d['registry']}"})
    import shlex

    result["fix_command"] = f"{shlex.join(['mkdir', '-p', str(target.parent)])} && {shlex.join(['cp', str(found), str(target)])}"
    result["fix"] = (f"the CA that verifies the registry's certificate is in {found.parent}/, the directory of another "
                     f"registry ({found.parent.name}); copy it to {target}, the directory of {d['registry']} (HOST:PORT "
                     f"exactly as the image name writes it): {result['fix_command']}")


def explain(err, *, live: bool = True, timeout: float = 2.0) -> dict:
    """The diagnosis of a RegistryError (runtime.registry.errors) as one JSON-ready object."""
    d = err.detail
    result = {"pulled": False, "cause": err.cause, "summary": err.what, "evidence": _evidence(err), "fix": err.fix or None,
              "fix_command": None, "registry": d.get("registry") or d.get("host"), "trace": None}
    if err.cause in ("TLS_UNKNOWN_AUTHORITY", "TLS_NAME_MISMATCH") and d.get("host") and d.get("port"):
        cert = presented_certificate(d["host"], int(d["port"]))
        if cert:
            result["evidence"].append({"kind": "certificate", "detail": f"the registry presents {cert}"})
        if err.cause == "TLS_UNKNOWN_AUTHORITY" and d.get("ca_path"):
            _unknown_authority(result, d)
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
    result["trace"] = tr.to_json()  # the trace's own JSON, as `trace --json` prints it
    result["evidence"].append({"kind": "trace", "detail": f"trace host -> {ip} tcp/{d['port']}: {tr.verdict}"
                                                           + (f" ({tr.cause})" if tr.cause else "") + f": {tr.summary}"})
    if tr.verdict == "blocked" and tr.cause:
        result.update(cause=tr.cause, summary=f"{err.what}: {tr.summary}", fix=tr.fix.text or err.fix,
                      fix_command=tr.fix.command)
    elif d.get("phase") == "read":
        _stalled(result, err, ip, live and os.geteuid() == 0, timeout)
    return result


def _local_end(ip: str) -> tuple[str, int] | None:
    """This host's address towards `ip` and the route's MTU there (the kernel's choice, no packet sent)."""
    IP_MTU = 14  # linux/in.h; a connected datagram socket reports its route's MTU
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((ip, 9))
            return s.getsockname()[0], s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None


def _stalled(result: dict, err, ip: str, live: bool, timeout: float) -> None:
    """The connection was made and the request sent, then nothing came. As `health` does: a
    full-size packet traced from the registry back here shows an MTU step on the way back (a black
    hole when the ICMP 'fragmentation needed' is lost); where the registry's namespace is out of
    sight (another machine), say what to check instead."""
    from .diagnose import diagnose
    from .observe.snapshot import live_model

    end = _local_end(ip)
    back = None
    if end is not None:
        try:
            back = diagnose(live_model(), ip, end[0], proto="icmp", size=end[1] - 28, live=live, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - a registry on another machine cannot be traced from there
            result["evidence"].append({"kind": "trace", "detail": f"the way back from {ip} cannot be traced here: {e}"})
    if back and back.verdict == "blocked" and back.cause == "MTU_BLACKHOLE":
        result["evidence"].append({"kind": "trace", "detail": f"trace {ip} -> {end[0]} icmp size {end[1] - 28}: {back.summary}"})
        result.update(cause="MTU_BLACKHOLE", trace=back.to_json(), fix=back.fix.text or None, fix_command=back.fix.command,
                      summary=f"The registry accepts the connection and the request, but its answer stalls: full-size "
                              f"packets from {ip} die on the way back. {back.summary}")
        return
    result.update(cause="SLOW_RESPONSE", summary=f"{err.what}: the registry accepted the connection, then sent nothing more",
                  fix="a registry that is slow or overloaded, or a path-MTU black hole on its side: try "
                      f"'ping -M do -s 1472 {ip}' against a smaller size, and a pull with a longer --timeout")


def render(r: dict, say) -> None:
    """The plain-text form, line by line through `say` (stderr in the CLI)."""
    say(f"cause: {r['cause']}")
    say(f"why:   {r['summary']}")
    for e in r["evidence"]:
        say(f"  {e['kind']}: {e['detail']}")
    if r["fix"]:
        say(f"fix:   {r['fix']}")
