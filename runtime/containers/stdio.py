"""Container output: Docker-style json-file logs, tee to an attached CLI, and pty proxying."""
from __future__ import annotations

import errno
import json
import os
import select
from datetime import datetime, timezone
from pathlib import Path


def _ts() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class LogWriter:
    """Writes one JSON object per line of output: {"log": "...\\n", "stream": "stdout", "time": ...}."""

    def __init__(self, path: Path):
        self.f = open(path, "ab", buffering=0)
        self.partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial.get(stream, b"") + data
        *lines, rest = buf.split(b"\n")
        self.partial[stream] = rest
        if lines:
            self.f.write(b"".join(self._record(stream, line + b"\n") for line in lines))

    def _record(self, stream: str, line: bytes) -> bytes:
        return json.dumps({"log": line.decode("utf-8", "replace"), "stream": stream, "time": _ts()}).encode() + b"\n"

    def close(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self.f.write(self._record(stream, rest))
        self.partial.clear()
        self.f.close()


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
    source is closed. `stop_fd` (a pidfd) becoming readable means the writer exited: then drain
    what is left for at most a second, since nothing in the dead container can write any more."""
    import time

    open_fds = dict(sources)
    deadline = None
    while open_fds:
        watch = list(open_fds) + ([stop_fd] if stop_fd is not None and deadline is None else [])
        timeout = tick if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ready, _, _ = select.select(watch, [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            if deadline is not None:
                break
            if on_tick:
                on_tick()
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
