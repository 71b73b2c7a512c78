"""One health check from inside a network namespace, timed like a load balancer's.

The socket is created while this thread is in the source namespace (runtime.kernel.ns.netns): a socket
belongs to the namespace it was created in for its whole life, so the connect, the request and
the reading happen in the source's namespace without a helper process to fork, watch and reap.
All waiting is select() against one deadline (time.monotonic()), which covers the whole check
like a load balancer's check timeout does.

An HTTP check sends `GET PATH HTTP/1.1` with a Host header and `Connection: close`, reads the
status line, the headers and the whole body (up to BODY_LIMIT), so a body that never arrives (an
MTU black hole after the handshake) fails the check as it fails a real client.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

from ..probe.handshakes import ERRORS
from .spec import Spec, expected

BODY_LIMIT = 1 << 20   # enough to see a large response arrive, or not
KEEP = 512             # bytes of the body kept as evidence
IP_MTU = 14


def _ms(t: float | None) -> float | None:
    return None if t is None else round(t, 4)


class LbProbe:
    """`run()` performs the check until the deadline. When the answer was still on its way at the
    deadline (connected, request sent), `finish(until)` keeps reading past it to measure when (or
    whether) the answer comes: the time a slow application needs, or silence."""

    def __init__(self, ns_path: str, address: str, spec: Spec, *, started: float, deadline: float, dns_time: float | None):
        self.ns_path, self.address, self.spec = ns_path, address, spec
        self.t0, self.deadline, self.dns_time = started, deadline, dns_time
        self.sock: socket.socket | None = None
        self.buf = b""
        self.t_connect = self.t_first = self.t_done = None
        self.local: tuple[str, int] | None = None
        self.pending = False  # the request was sent and the answer is incomplete

    # -- the check ----------------------------------------------------------------------------------
    def run(self) -> dict:
        from runtime.kernel.ns import netns

        with netns(self.ns_path):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            return self._connect_and_talk()
        except BaseException:
            self.close()
            raise

    def _connect_and_talk(self) -> dict:
        sock = self.sock
        err = sock.connect_ex((self.address, self.spec.port))
        if err not in (0, errno.EINPROGRESS):
            return self._fail("connect", ERRORS.get(err, "error"), os.strerror(err))
        if err:
            limit = self.spec.connect_timeout or self.spec.timeout
            if not self._wait(write=True, until=min(self.deadline, time.monotonic() + limit)):
                return self._fail("connect", "timeout", f"no answer to the TCP handshake within {limit:g}s")
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self._fail("connect", ERRORS.get(err, "error"), os.strerror(err))
        self.t_connect = time.monotonic()
        self.local = sock.getsockname()
        if self.spec.mode == "tcp":
            self.t_done = self.t_connect
            return self._result(True, "done", None, "TCP handshake completed")
        request = (f"{self.spec.method} {self.spec.path} HTTP/1.1\r\nHost: {self.spec.header_host}\r\nUser-Agent: netdiag-health/1\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n").encode("ascii")
        try:
            while request:
                if not self._wait(write=True):
                    return self._fail("request", "timeout", "the request could not be sent before the timeout")
                request = request[sock.send(request):]
        except OSError as e:
            return self._fail("request", ERRORS.get(e.errno, "error"), os.strerror(e.errno or 0))
        self.pending = True
        return self._read(self.deadline)

    def _read(self, until: float) -> dict:
        sock = self.sock
        while True:
            done = self._complete()
            if done is not None:
                self.pending = False
                self.t_done = time.monotonic()
                return done
            if not self._wait(write=False, until=until):
                got = len(self.buf)
                what = ("no byte of the response" if not got else
                        f"{got} bytes of the response (headers incomplete)" if self._head() is None else
                        f"the headers and {self._body_len()} bytes of the body")
                return self._fail("response", "timeout", f"connected, request sent, {what} within {self.spec.timeout:g}s")
            try:
                chunk = sock.recv(65536)
            except OSError as e:
                self.pending = False
                return self._fail("response", ERRORS.get(e.errno, "error"), os.strerror(e.errno or 0))
            if self.t_first is None and chunk:
                self.t_first = time.monotonic()
            if not chunk:
                self.pending = False
                done = self._complete(eof=True)
                if done is not None:
                    self.t_done = time.monotonic()
                    return done
                return self._fail("response", "closed", "the server closed the connection before a complete HTTP response"
                                  + (f" ({len(self.buf)} bytes)" if self.buf else " (no byte)"))
            self.buf += chunk

    def finish(self, until: float) -> dict | None:
        """Read on past the check's deadline, until `until`: the late answer, or None if still nothing."""
        if not self.pending or self.sock is None:
            return None
        res = self._read(until)
        return res if res["stage"] == "done" or res["error"] != "timeout" else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- HTTP ---------------------------------------------------------------------------------------
    def _head(self):
        end = self.buf.find(b"\r\n\r\n")
        return None if end < 0 else end + 4

    def _body_len(self) -> int:
        head = self._head()
        return len(self.buf) - head if head else 0

    def _complete(self, eof: bool = False) -> dict | None:
        """The result once the response is complete (or cannot be HTTP), else None."""
        if self.buf and not b"HTTP/".startswith(self.buf[:5]) and not self.buf.startswith(b"HTTP/"):
            return self._result(False, "response", "malformed", "the answer is not an HTTP response: " + repr(self.buf[:60]))
        head = self._head()
        if head is None:
            return None
        lines = self.buf[:head].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
            return self._result(False, "response", "malformed", f"invalid HTTP status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = self.buf[head:]
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            complete = len(body) >= int(length)
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            complete = body.endswith(b"0\r\n\r\n")
        else:
            complete = eof  # Connection: close delimits the body
        if not complete and len(body) < BODY_LIMIT:
            return None
        if expected(status, self.spec.expect):
            return self._result(True, "done", None, f"HTTP {status} {parts[2] if len(parts) > 2 else ''}".strip(), status=status)
        return self._result(False, "response", "status", f"HTTP {status} {parts[2] if len(parts) > 2 else ''}".strip(), status=status)

    # -- plumbing -----------------------------------------------------------------------------------
    def _wait(self, *, write: bool, until: float | None = None) -> bool:
        left = (until or self.deadline) - time.monotonic()
        if left <= 0:
            return False
        r, w, _ = select.select([] if write else [self.sock], [self.sock] if write else [], [], left)
        return bool(r or w)

    def _fail(self, stage: str, error: str, detail: str) -> dict:
        return self._result(False, stage, error, detail)

    def _result(self, ok: bool, stage: str, error: str | None, detail: str, status: int | None = None) -> dict:
        head = self._head()
        body = self.buf[head:] if head else b""
        if status is None and head:
            try:
                status = int(self.buf.split(b" ", 2)[1])
            except (IndexError, ValueError):
                status = None
        return {
            "ok": ok, "stage": stage, "error": error, "detail": detail, "status": status, "address": self.address,
            "port": self.spec.port, "local": list(self.local) if self.local else None,
            "timings": {"dns": _ms(self.dns_time),
                        "connect": _ms(self.t_connect - self.t0) if self.t_connect else None,
                        "first_byte": _ms(self.t_first - self.t0) if self.t_first else None,
                        "total": _ms(time.monotonic() - self.t0)},
            "received": len(self.buf), "body": body[:KEEP].decode("utf-8", "replace"),
            "path_mtu": self._path_mtu(),
        }

    def _path_mtu(self) -> int | None:
        if self.sock is None or self.t_connect is None:
            return None
        try:
            return struct.unpack("i", self.sock.getsockopt(socket.IPPROTO_IP, IP_MTU, 4))[0]
        except OSError:
            return None
