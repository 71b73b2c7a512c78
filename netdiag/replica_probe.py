"""The live side of `--verify-fix` on a replica: entering one of its namespaces safely, and the
probes of the flow there (one connection, or a burst of handshakes for a loss)."""
from __future__ import annotations

import socket
import subprocess
import time


def _guard(path: str):
    """preexec_fn: a private mount namespace whose /run/netns is empty (no name reaches a real
    namespace), then the replica's network namespace."""
    from runtime.kernel.ns import Namespace

    return Namespace(path).preexec(hide_names=True)


def probe(path: str, dst: str, proto: str, port: int, size: int, timeout: float) -> dict:
    """One real flow from the namespace at `path`: a TCP connection that sends a line and gets an
    answer, a UDP datagram and its answer, or an echo and its reply (both directions each)."""
    from runtime.kernel.ns import netns

    t0 = time.monotonic()
    out = {"ok": False, "outcome": "timeout", "detail": ""}
    if proto == "icmp":
        argv = ["ping", "-n", "-c", "1", "-W", str(max(1, int(timeout + 0.5))), dst]
        if size:
            argv[1:1] = ["-s", str(size), "-M", "do"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5, stdin=subprocess.DEVNULL,
                           preexec_fn=_guard(path))
        out.update(ok=p.returncode == 0, outcome="answered" if p.returncode == 0 else "no reply",
                   detail=(p.stdout.strip().splitlines() or [""])[-1][:200] or p.stderr.strip()[:200])
    else:
        payload = (b"x" * max(0, size - 1) + b"\n") if size else b"GET / HTTP/1.0\r\n\r\n"
        try:
            with netns(path):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
            with s:
                s.settimeout(timeout)
                s.connect((dst, port))
                s.sendall(payload)
                answer = s.recv(4096)
            first = answer.decode("utf-8", "replace").splitlines()[0][:80] if answer.strip() else repr(answer[:40])
            out.update(ok=bool(answer), outcome="answered" if answer else "closed",
                       detail=f"answered {first!r}" if answer else "the connection closed without an answer")
        except socket.timeout:
            out.update(outcome="timeout", detail=f"no answer within {timeout:g} s")
        except ConnectionRefusedError:
            out.update(outcome="refused", detail="refused (RST or ICMP port unreachable)")
        except ConnectionResetError:
            out.update(outcome="reset", detail="reset by the peer")
        except OSError as e:
            out.update(outcome="unreachable" if e.errno in (101, 113) else "error", detail=e.strerror or str(e))
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


def probe_many(path: str, dst: str, port: int, count: int) -> dict:
    """`count` TCP handshakes at once (health's burst): for a loss, one probe proves nothing either
    way; ok only when every one got through."""
    from .health.check import burst

    t0 = time.monotonic()
    b = burst(path, dst, port, n=count)
    lost = count - b["ok"]
    return {"ok": lost == 0, "outcome": "answered" if lost == 0 else f"{lost}/{count} lost",
            "detail": f"{b['ok']}/{count} handshakes got through" + (f" ({b['errors']})" if b.get("errors") else ""),
            "rate": b["rate"], "seconds": round(time.monotonic() - t0, 3)}
