"""`netdiag check FILE --serve ADDR:PORT`: a check file as a health endpoint (goss's `serve`), so a
load balancer or a monitoring system can use it directly.

GET (or HEAD) /healthz runs the file's checks and answers 200 when all pass (or were skipped), 503
otherwise, with the report in the format the Accept header asks for (goss's convention too:
application/vnd.netdiag-FORMAT, or the format's usual media type) and JSON when it asks for none
we serve. A result younger than the cache duration is served again (the Age header says how old);
requests that come while a run is under way wait for that run and get its result, never starting
another. Other paths are 404. The server binds where netdiag runs (its network namespace).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from runtime.errors import InvalidArgument

from . import report

PATH = "/healthz"
MEDIA = {"application/json": "json", "application/vnd.netdiag-json": "json",
         "application/xml": "junit", "text/xml": "junit", "application/vnd.netdiag-junit": "junit",
         "text/x-tap": "tap", "application/vnd.netdiag-tap": "tap",
         "text/plain": "text", "application/vnd.netdiag-text": "text"}
CONTENT_TYPE = {"json": "application/json", "junit": "application/xml; charset=utf-8", "tap": "text/x-tap; charset=utf-8",
                "text": "text/plain; charset=utf-8"}
STOP_GRACE = 30.0  # how long a stopping server waits for the run under way (probes clean up after themselves)
CLIENT_TIMEOUT = 10.0  # seconds a connection may take to send its request


def parse_address(text: str) -> tuple[str, int]:
    """ADDR:PORT (IPv4, or [IPv6]:PORT) -> (addr, port); InvalidArgument (exit 2) otherwise. The
    same syntax as watch --metrics (its parser), named after --serve."""
    from ..watch.metrics import parse_address as parse

    try:
        return parse(text)
    except InvalidArgument:
        raise InvalidArgument(f"Invalid --serve address {text!r}", "it is ADDR:PORT, an IP address of this host and a port",
                              "e.g. --serve 127.0.0.1:8080, or 0.0.0.0:8080 for every address") from None


def negotiate(accept: str | None, default: str = "json") -> str:
    """The report format an Accept header asks for: the served media type with the highest q
    (the earlier on a tie); `default` for none, a wildcard, or only types we do not serve."""
    best, best_q = default, 0.0
    for item in (accept or "").split(","):
        kind, *params = [x.strip() for x in item.split(";")]
        q = 1.0
        for prm in params:
            name, _, value = prm.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        fmt = MEDIA.get(kind.lower())
        if fmt and q > best_q:
            best, best_q = fmt, q
    return best


@dataclass(frozen=True)
class Run:
    number: int
    results: list[dict] | None
    summary: dict | None
    finished: float  # monotonic
    error: str | None = None


class Results:
    """The checks' latest run, run again on demand when older than `cache` seconds; one run at a
    time: a caller that comes while one is under way waits for it and shares its result."""

    def __init__(self, run: Callable[[], tuple[list[dict], dict]], cache: float, clock: Callable[[], float] = time.monotonic):
        self._run, self.cache, self.clock = run, cache, clock
        self.cond = threading.Condition()
        self.latest: Run | None = None
        self.started = 0  # runs begun; the one under way has this number
        self.running = False

    def get(self) -> tuple[Run, bool]:
        """(the run to answer with, whether it was served from the cache)."""
        with self.cond:
            if self.running:
                number = self.started
                self.cond.wait_for(lambda: self.latest is not None and self.latest.number >= number)
                return self.latest, False
            if self.latest is not None and self.clock() - self.latest.finished < self.cache:
                return self.latest, True
            self.running, self.started = True, self.started + 1
            number = self.started
        try:
            results, summary = self._run()
            run = Run(number, results, summary, self.clock())
        except Exception as e:  # the host could not be read: every waiter gets the error, the next request tries again
            run = Run(number, None, None, float("-inf"), f"{type(e).__name__}: {e}" if not str(e) else str(e))
        with self.cond:
            self.latest, self.running = run, False
            self.cond.notify_all()
        return run, False

    def idle(self, timeout: float) -> bool:
        """Wait until no run is under way (a stopping server), at most `timeout` seconds."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.running, timeout)


def response(run: Run, fmt: str, files: list[str]) -> tuple[int, str, bytes]:
    """(status, content type, body) of a run in a format."""
    if run.error is not None:
        return 503, "text/plain; charset=utf-8", f"could not run the checks: {run.error}\n".encode()
    status = 200 if report.exit_code(run.results) == 0 else 503
    return status, CONTENT_TYPE[fmt], report.render(fmt, run.results, run.summary, files).encode()


def serve(results: Results, files: list[str], addr: str, port: int, *, cancel: threading.Event, default: str = "json",
          log: Callable[[str], None] = lambda line: None, ready: Callable[[], None] = lambda: None) -> None:
    """Answer on ADDR:PORT until KeyboardInterrupt (Ctrl-C; the caller makes SIGTERM one too); then
    the run under way is cancelled (its quiet windows end, the checks not started are skipped) and
    waited for, so no probe is left behind."""
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        server_version = "netdiag-check"
        timeout = CLIENT_TIMEOUT  # a client that connects and says nothing holds its thread no longer

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, body: bool) -> None:
            if self.path.split("?", 1)[0] != PATH:
                self._send(404, "text/plain; charset=utf-8", f"not found: the checks are at {PATH}\n".encode(), body)
                return
            fmt = negotiate(self.headers.get("Accept"), default)
            run, cached = results.get()
            status, ctype, data = response(run, fmt, files)
            age = max(0, int(results.clock() - run.finished)) if run.error is None else 0
            self._send(status, ctype, data, body, {"Age": str(age), "X-Netdiag-Run": str(run.number), "Vary": "Accept",
                                                    "Cache-Control": "no-store"})
            log(f"{self.command} {self.path} {status} {fmt} (run {run.number}{', cached' if cached else ''})")

        def _send(self, status: int, ctype: str, data: bytes, body: bool, headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in {"Content-Type": ctype, "Content-Length": str(len(data)), **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
            pass  # one line per answer is logged above, without the client's address

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        daemon_threads = False  # server_close() waits for them: a request answered as it stops gets its whole answer

    try:
        httpd = Server((addr, port), Handler)
    except OSError as e:
        raise InvalidArgument(f"Cannot serve on {addr}:{port}", e.strerror or str(e),
                              "choose a free port and an address of this host") from None
    try:
        ready()
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        cancel.set()
        results.idle(STOP_GRACE)
        httpd.server_close()
