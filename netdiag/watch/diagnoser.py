"""Each new failing flow diagnosed once, in a background thread, with the one pipeline
(`netdiag.diagnose`) on a fresh live model: the static path, then a probe of its own with the
kernel's nftables trace; host evidence off (drop reasons and counters are host-wide, and watch
reads those itself). A TCP flow whose probe is delivered failed past the handshake: when its port
speaks HTTP, health's pipeline diagnoses it instead (http_diagnosis). Results go to a queue the
session's loop drains: nothing prints from here."""
from __future__ import annotations

import queue
import threading
import time

from runtime.errors import NetdiagError

from .http_diagnosis import asks_http, diagnose_http, line

# The flow already failed: the probe only has to show where. A dropped probe is named by the
# kernel's packet trace at once and a refused one answers at once, so waiting trace's 2 s for an
# answer that will not come only delays the line (the bench: 3.4 s from a dropped SYN to its
# diagnosis with 2 s).
PROBE_TIMEOUT = 1.0
MAX_WAITING = 20  # flows waiting for a diagnosis; beyond, new flows are shown undiagnosed (a scan, a storm)


def brief(d, seconds: float) -> dict:
    """What watch shows of a Diagnosis: cause, the hop, the checked fix."""
    data = d.to_json()
    hop = next((h for h in data["hops"] if h["n"] == data.get("blocked_at")), None)
    return line(data["verdict"], data["cause"], data["summary"], hop, data["fix"], data.get("fix_command"),
                data.get("fix_check"), seconds, "reach")


class Diagnoser:
    """submit(flow_id, src_target, dst_ip, proto, port, size); done() yields (flow_id, brief, probe_sport):
    the brief's `probe_sports` are the ports of every connection it made (HTTP's too), its
    `probe_connects` how many of them completed a connect."""

    def __init__(self, timeout: float = PROBE_TIMEOUT):
        self.timeout = timeout
        self.todo: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        # flows whose probe has started and whose result the session has not taken yet: their new
        # events may be the probe's (the session discards an id once it took the result)
        self.probing: set[int] = set()
        self.thread = threading.Thread(target=self._run, name="watch-diagnoser", daemon=True)

    def start(self) -> "Diagnoser":
        self.thread.start()
        return self

    def submit(self, flow_id: int, src: str, dst: str, proto: str, port: int, size: int = 0) -> bool:
        """Queue a diagnosis (`size`: the probe's payload, 0 the smallest); False (nothing queued)
        when MAX_WAITING flows already wait."""
        if self.todo.qsize() >= MAX_WAITING:
            return False
        self.todo.put((flow_id, src, dst, proto, port, size))
        return True

    def done(self) -> list[tuple[int, dict, int | None]]:
        out = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def busy(self) -> bool:
        return self.todo.unfinished_tasks > 0

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.todo.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if not self.stopping.is_set():
                    self.probing.add(job[0])
                    self.results.put(self._one(*job))
            finally:
                self.todo.task_done()

    def _one(self, flow_id: int, src: str, dst: str, proto: str, port: int, size: int) -> tuple[int, dict, int | None]:
        from ..diagnose import diagnose
        from ..observe.snapshot import live_model

        started = time.monotonic()
        record: list = []
        try:
            model = live_model()
            d = diagnose(model, src, dst, proto=proto, port=port, size=size, timeout=self.timeout,
                         host_evidence=False, record=record)
        except (NetdiagError, OSError) as e:
            return flow_id, line("unknown", None, f"could not diagnose: {e}", None, None, None, None,
                                 time.monotonic() - started, "reach"), None
        live = record[0]["live"] if record else {}
        sport = live.get("sport")
        out, ports = brief(d, time.monotonic() - started), []
        if asks_http(out, proto) and not self.stopping.is_set():  # Ctrl-C: reach's answer, no request more
            out, ports = diagnose_http(model, src, dst, port, out, probe_timeout=self.timeout, started=started)
        # the source ports of every connection the diagnosis made: their events are not the flow's
        out["probe_sports"] = [p for p in [sport] if p] + ports
        # and the connects it completed (the session takes them from the flow's recoveries, then
        # drops the key): the HTTP request's, and the reach probe's when it connected
        out["probe_connects"] = len(ports) + (proto == "tcp" and live.get("outcome") == "connected")
        return flow_id, out, sport

    def stop(self, grace: float = 10.0) -> None:
        """Let a diagnosis under way finish (its probe's children and tables are removed by it),
        drop the rest."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(grace)
