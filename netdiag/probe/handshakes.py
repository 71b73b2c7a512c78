"""TCP handshakes from inside a network namespace, many at once: the share that gets through
(health's measure of packet loss, and the replica's proof of a loss fix). The sockets are made
while this thread is in the namespace (runtime.kernel.ns.netns) and belong to it for their life;
all waiting is one select() against one deadline."""
from __future__ import annotations

import errno
import select
import socket
import time

# connect errors by the word a load balancer's check log uses
ERRORS = {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable", errno.ENETUNREACH: "netunreach",
          errno.ETIMEDOUT: "timeout", errno.ECONNRESET: "reset", errno.EACCES: "denied", errno.EPERM: "denied"}


def burst(ns_path: str, address: str, port: int, n: int = 20, timeout: float = 0.8) -> dict:
    """n TCP handshakes at once from the namespace, each allowed `timeout` (below the 1 s SYN
    retransmission, so one lost SYN or SYN-ACK fails it): the share that gets through."""
    from runtime.kernel.ns import netns

    socks = []
    try:
        with netns(ns_path):
            for _ in range(n):
                socks.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC))
        waiting, errors, ok = {}, {}, 0
        for s in socks:
            err = s.connect_ex((address, port))
            if err == 0:
                ok += 1
            elif err == errno.EINPROGRESS:
                waiting[s.fileno()] = s
            else:
                errors[ERRORS.get(err, "error")] = errors.get(ERRORS.get(err, "error"), 0) + 1
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _, w, _ = select.select([], list(waiting.values()), [], left)
            for s in w:
                del waiting[s.fileno()]
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    errors[ERRORS.get(err, "error")] = errors.get(ERRORS.get(err, "error"), 0) + 1
                else:
                    ok += 1
        if waiting:
            errors["timeout"] = errors.get("timeout", 0) + len(waiting)
        return {"attempts": n, "ok": ok, "rate": round(ok / n, 3), "errors": errors, "timeout": timeout}
    finally:
        for s in socks:
            s.close()
