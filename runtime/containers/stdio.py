"""Container output: Docker-style json-file logs, tee to an attached CLI, and pty proxying."""
from __future__ import annotations

import errno
import json
import os
import select
from pathlib import Path


def _ts() -> str:
    from ..state import now_iso

    return now_iso()


LOG_NOTICE = "netdiag: "  # how the lines netdiag itself puts in a log begin (`logs` looks for them)
DROPPED = "line(s) of output were dropped"


class LogWriter:
    """Writes one JSON object per line of output: {"log": "...\\n", "stream": "stdout", "time": ...}.

    It never fails its monitor: when the log cannot be written (a full disk, mostly), whole lines
    are dropped (a short write is cut back, so no half record stays) and counted; the next write
    that fits is preceded by a notice line saying how many were lost, and `on_notice(total)` is
    called so the monitor can put the count in the container's record. A line longer than
    MAX_LINE is split, like Docker's 16 KiB log messages, so output without newlines cannot grow
    the monitor's memory."""

    MAX_LINE = 16 * 1024

    def __init__(self, path: Path, on_notice=None):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.partial: dict[str, bytes] = {}
        self.dropped = 0  # lines lost since the last notice
        self.dropped_total = 0
        self.why = ""  # the last write error: "No space left on device", mostly
        self.on_notice = on_notice

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial.get(stream, b"") + data
        *lines, rest = buf.split(b"\n")
        lines = [line + b"\n" for line in lines]
        while len(rest) > self.MAX_LINE:
            lines.append(rest[:self.MAX_LINE])
            rest = rest[self.MAX_LINE:]
        self.partial[stream] = rest
        if lines:
            self._append(b"".join(self._record(stream, line) for line in lines), len(lines))

    def _record(self, stream: str, line: bytes) -> bytes:
        return json.dumps({"log": line.decode("utf-8", "replace"), "stream": stream, "time": _ts()}).encode() + b"\n"

    def _append(self, data: bytes, lines: int) -> None:
        notice = b""
        if self.dropped:
            notice = self._record("stderr", f"{LOG_NOTICE}{self.dropped} {DROPPED}: the log could not be "
                                            f"written ({self.why})\n".encode())
        try:
            view = memoryview(notice + data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            self.why = e.strerror or str(e)
            try:
                os.ftruncate(self.fd, self.size)  # no half record: the log stays a list of whole lines
            except OSError:
                pass
            self.dropped += lines
            self.dropped_total += lines
            return
        self.size += len(notice) + len(data)
        if notice:
            self.dropped = 0
            if self.on_notice:
                self.on_notice(self.dropped_total)

    def close(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._append(self._record(stream, rest), 1)
        self.partial.clear()
        if self.dropped:  # space came back after the last line: still say what was lost
            self._append(b"", 0)
        os.close(self.fd)

def read_log(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete records from `offset`; returns them and the offset after the last one."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out, offset + end


def pump(sources: dict[int, str], sinks: dict[str, int | None], log: LogWriter | None, stop_fd: int | None,
         on_tick=None, tick: float | None = None) -> None:
    """Copy from `sources` (fd -> stream name) to the log and to `sinks` (stream -> fd) until every
    source is closed and, with `stop_fd` (a pidfd), the writer has exited: a container that closed
    its output keeps its health checks. `stop_fd` becoming readable means the writer exited: then
    drain what is left for at most a second, since nothing in the dead container can write any more."""
    import time

    open_fds = dict(sources)
    deadline = None
    next_tick = time.monotonic() + tick if on_tick and tick else None
    while open_fds or (stop_fd is not None and deadline is None):
        watch = list(open_fds) + ([stop_fd] if stop_fd is not None and deadline is None else [])
        now = time.monotonic()
        if deadline is not None:
            timeout = max(0.0, deadline - now)
        elif next_tick is not None:
            if now >= next_tick:  # on time even while output flows: a chatty container is checked too
                on_tick()
                next_tick = time.monotonic() + tick
                continue
            timeout = next_tick - now
        else:
            timeout = None
        try:
            ready, _, _ = select.select(watch, [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            if deadline is not None:
                break
            continue
        for fd in ready:
            if fd == stop_fd:
                deadline = time.monotonic() + 1.0
                continue
            try:
                data = os.read(fd, 65536)
            except OSError as e:
                if e.errno == errno.EIO:  # a pty whose other side closed
                    data = b""
                else:
                    raise
            if not data:
                del open_fds[fd]
                continue
            stream = open_fds[fd]
            if log:
                log.write(stream, data)
            sink = sinks.get(stream)
            if sink is not None:
                try:
                    os.write(sink, data)
                except OSError:
                    sinks[stream] = None  # the attached CLI went away; keep logging
