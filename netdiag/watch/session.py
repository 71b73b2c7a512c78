"""The watch loop: the kernel's events in, filtered to the watched namespaces, grouped into flows,
each new flow handed to the diagnoser, everything shown by the view. Ends at `duration`, or on
Ctrl-C / SIGTERM (KeyboardInterrupt here): the reader child removes its tracefs instance, a
diagnosis under way finishes (its probe cleans up after itself), then the flows are shown once more.
Beside the tracepoints, the conntrack events of the namespaces that have them (UDP and ICMP flows
without a reply) are read in the loop itself. A filtered scope follows what starts later: an event
with an address it has not looked up yet rescans the host (at most once per RESCAN seconds)."""
from __future__ import annotations

import time

from .diagnoser import Diagnoser
from .events import EventSource
from .flows import RECOVERS, DropCounts, Flows, RateLimit, key_of, wall
from .scope import Scope
from .unreplied import ConntrackEvents

TICK = 0.25  # the loop's pace: the view's refresh and the diagnoses' pick-up
DROP_PERIOD = 1.0  # drops are reported summed over this period
EVENT_LINES = 20  # event lines a second at most (the counts stay exact)
FINAL_GRACE = 15.0  # at --for's end, how long pending diagnoses may still take
RESCAN = 1.0  # seconds between two rescans of the host for a filtered scope (containers started since)
RECHECK = 3.0  # an address a rescan did not find is looked up again after this long (a container still starting)
FULL_SIZE = 1460  # a stalled connection is diagnosed with a full-size packet (a bulk transfer's, DF set)
STALL_MIN = 2  # data retransmits of one connection that make it a stalled flow
MAX_CONNECTIONS = 10000  # connections whose retransmits are remembered
PROBE_PROTO = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "ip": "icmp"}  # a flow's protocol -> its probe's


class Session:
    def __init__(self, scope: Scope, view, *, reasons=(), diagnose: bool = True, probe_timeout: float | None = None, metrics=None):
        self.scope, self.view, self.metrics = scope, view, metrics
        self.source = EventSource(list(reasons))
        self.diagnoser = (Diagnoser(probe_timeout) if probe_timeout else Diagnoser()) if diagnose else None
        self.flows, self.drops, self.limit = Flows(), DropCounts(), RateLimit(EVENT_LINES)
        self.events = self.lost = self.undiagnosed = self.elsewhere = 0
        self.causes: dict[str, int] = {}
        self.conntrack = ConntrackEvents()
        self.retransmits: dict[tuple, dict] = {}  # connection -> its data retransmits so far (-1: stalled)
        self.looked_up: set[str] = set()  # addresses rescans have looked for (forgotten every RECHECK s)
        self.next_rescan = self.forget_at = 0.0

    def run(self, duration: float | None = None) -> dict:
        started = time.monotonic()
        end = started + duration if duration else float("inf")
        interrupted = False
        try:
            self.source.start()  # forked before the diagnoser's thread exists
            self.conntrack.watch(self.scope.conntrack_paths())
            self.view.started({"watching": sorted(set(self.scope.watched.values())), "for": duration,
                               "notes": self.source.notes + self.conntrack.notes, "instance": self.source.name})
            if self.diagnoser:
                self.diagnoser.start()
            next_drops = time.monotonic() + DROP_PERIOD
            while time.monotonic() < end:
                for ev in self.source.lines(min(end, time.monotonic() + TICK)) + self.conntrack.poll():
                    self._event(ev)
                if self.source.ended:
                    raise OSError("the event reader ended early")
                self._diagnosed()
                if time.monotonic() >= next_drops:
                    next_drops = time.monotonic() + DROP_PERIOD
                    for d in self.drops.drain():
                        self.view.drops(d)
                self.view.tick(self.flows)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.source.close()
            self.conntrack.close()
            if self.diagnoser:
                if not interrupted:  # --for ended: the flows seen last get their diagnosis too
                    self._wait_diagnoses(time.monotonic() + FINAL_GRACE)
                self.diagnoser.stop()
                self._diagnosed()
            self.view.tick(self.flows)
            self.view.close()
        for d in self.drops.drain():
            self.view.drops(d)
        for flow in self.flows.by_impact():
            self.view.flow(flow, final=True)
        summary = {"type": "end", "seconds": round(time.monotonic() - started, 2), "interrupted": interrupted,
                   "flows": len(self.flows), "events": sum(f.count for f in self.flows.by_key.values()),
                   "event_lines_suppressed": self.limit.suppressed, "lost": self.lost + self.conntrack.tracker.lost,
                   "drops": dict(self.drops.total), "diagnoses": dict(self.causes), "undiagnosed": self.undiagnosed,
                   "elsewhere": self.elsewhere}
        self.view.end(summary)
        return summary

    def _wait_diagnoses(self, deadline: float) -> None:
        while self.diagnoser.busy() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _event(self, ev: dict) -> None:
        kind = ev["kind"]
        if kind == "lost":
            self.lost += ev["count"]
            return
        if kind == "drop":
            self._drop(ev)
            return
        kept = self.scope.keeps(ev["src"], ev["dst"])
        if (not kept or not self._attributed(ev)) and self._rescanned(ev):
            kept = self.scope.keeps(ev["src"], ev["dst"])
        if not kept:
            return
        if kind in RECOVERS:
            if self._held_recovery(ev):
                return
            for flow in self.flows.recovered(ev):
                self.view.flow(flow)
            return
        if kind == "stalled":
            ev = self._stalled(ev)
            if ev is None:
                return
        confirmed = kind == "pending"  # _pending asked the namespace for the waiting socket already
        if kind == "pending":
            ev = self._pending(ev)
            if ev is None:
                return
            kind = ev["kind"]
        known = self.flows.get(ev)
        if known is None and not confirmed and not self.scope.confirms(ev):
            self.elsewhere += ev["count"]  # a namespace not watched that has the same address
            return
        if known is not None and self.diagnoser and known.id in self.diagnoser.probing and ev["sport"] not in known.sports:
            known.held.append(ev)  # a new source port while our probe runs: maybe the probe's own
            return
        src, dst = self.scope.endpoint(ev["src"]), self.scope.endpoint(ev["dst"])
        added = self.flows.add(ev, src, dst)
        if added is None:
            return  # our own probe's
        flow, new = added
        if self.metrics:
            self.metrics.failed(kind, flow.proto, src["label"], dst["label"], ev["dport"], ev["count"])
        if new:
            self.view.flow(flow)
        if self.limit.allow():
            self.view.event({"type": "event", "time": round(wall(ev["ts"]), 3), "kind": kind, "proto": flow.proto,
                             "count": ev["count"], "flow": flow.id,
                             "src": {"ip": ev["src"], "port": ev["sport"], "label": src["label"]},
                             "dst": {"ip": ev["dst"], "port": ev["dport"], "label": dst["label"]}})
        # a "fragmentation needed" sent is path MTU discovery at work, no failure by itself: when
        # the connection then stalls (the ICMP lost), the stalled flow is diagnosed
        if new and self.diagnoser and src["target"] and kind != "frag_needed":
            size = FULL_SIZE if kind == "stalled" else 0
            flow.diagnosing = self.diagnoser.submit(flow.id, src["target"], ev["dst"], PROBE_PROTO[flow.proto], ev["dport"], size)
            self.undiagnosed += not flow.diagnosing

    def _drop(self, ev: dict) -> None:
        """A drop count: placed when the in-kernel counter says where (its namespace and device),
        left out when that is outside a filtered scope; host-wide when read from tracefs."""
        place = None
        if "netns" in ev:
            place = self.scope.drop_place(ev["netns"], ev["ifindex"])
            if place is None:
                return
        self.drops.add(ev, place)
        if self.metrics:
            self.metrics.drop(ev["reason"], (place or {}).get("endpoint") or "", ev["count"])

    def _held_recovery(self, ev: dict) -> bool:
        """A connect completing while its flow is diagnosed may be the diagnosis's own (reach's probe,
        the HTTP request; a connect event names no source port): held until it says how many it made."""
        if ev["kind"] != "established" or not self.diagnoser:
            return False
        flows = [f for f in (self.flows.by_key.get(key_of(ev, k)) for k in RECOVERS["established"])
                 if f is not None and f.id in self.diagnoser.probing]
        for flow in flows[:1]:  # replayed once, for every flow of the key
            flow.held.append(ev)
        return bool(flows)

    def _stalled(self, ev: dict) -> dict | None:
        """A connection's data retransmits, once there are STALL_MIN of them (with what came before);
        None before: one retransmit is a lost packet any busy link has, repeated ones a stall."""
        conn = (ev["src"], ev["sport"], ev["dst"], ev["dport"])
        seen = self.retransmits.pop(conn, None)
        if seen is not None and seen["count"] < 0:  # this connection already counts as stalled
            return ev
        total = (seen["count"] if seen else 0) + ev["count"]
        if total < STALL_MIN:
            if len(self.retransmits) >= MAX_CONNECTIONS:
                self.retransmits.pop(next(iter(self.retransmits)))  # the oldest: a busy host's stray losses
            self.retransmits[conn] = {"count": total, "ts": seen["ts"] if seen else ev["ts"]}
            return None
        self.retransmits[conn] = {"count": -1}
        return {**ev, "count": total, "ts": seen["ts"] if seen else ev["ts"]}

    def _pending(self, ev: dict) -> dict | None:
        """A connect still waiting for its SYN's answer (events.PENDING s): the first "unanswered"
        event of its flow, a second before the retransmit says so. Its source port, not chosen yet
        when the connect began, is the waiting socket's (0 where no namespace of the scope was
        asked, or the connect has ended: taken by its address, as a reset is); None when the flow
        is failing already (its retransmits count) or the watched namespace has no such socket
        (the same address elsewhere)."""
        ended = ev.get("ended", False)
        ev = {**{k: v for k, v in ev.items() if k != "ended"}, "kind": "unanswered", "sport": 0}
        known = self.flows.get(ev)
        if known is not None and not known.recovered:
            return None
        port = 0 if ended else self.scope.connecting_port(ev)
        if port is None:
            self.elsewhere += ev["count"]
            return None
        return {**ev, "sport": port}

    def _attributed(self, ev: dict) -> bool:
        """Whether both addresses are named. A namespace known only by a process (pid:N) may be a
        container the host had not listed yet when it was looked up: worth another look too."""
        names = (self.scope.endpoint(ev["src"])["target"], self.scope.endpoint(ev["dst"])["target"])
        return all(n and not n.startswith("pid:") for n in names)

    def _rescanned(self, ev: dict) -> bool:
        """For an event of a filtered scope that no watched namespace has an address of, or whose
        address nobody has: whether the host was rescanned for namespaces started since (when one of
        its addresses was not looked for yet, at most every RESCAN s). A rescan also subscribes to
        the new namespaces' conntrack events."""
        now = time.monotonic()
        if not self.scope.filtered or now < self.next_rescan:
            return False
        if now >= self.forget_at:
            self.looked_up, self.forget_at = set(), now + RECHECK
        if {ev["src"], ev["dst"]} <= self.looked_up:
            return False
        from ..observe.snapshot import live_model

        self.looked_up |= {ev["src"], ev["dst"]}
        added = self.scope.rescan(live_model())
        self.next_rescan = time.monotonic() + RESCAN
        self.conntrack.watch(self.scope.conntrack_paths())
        # flows named before the host listed their container (by address, or as pid:N while it
        # started): named as the rescan finds them; a name whose namespace is gone is kept
        for flow in self.flows.by_key.values():
            src, dst = self.scope.endpoint(flow.src["ip"]), self.scope.endpoint(flow.dst["ip"])
            flow.src, flow.dst = src if src["target"] else flow.src, dst if dst["target"] else flow.dst
        if added:
            self.view.scope({"type": "scope", "time": round(time.time(), 3), "watching": sorted(set(self.scope.watched.values())),
                             "added": added})
        return True

    def _diagnosed(self) -> None:
        if not self.diagnoser:
            return
        by_id = {f.id: f for f in self.flows.by_key.values()}
        for flow_id, brief, sport in self.diagnoser.done():
            flow = by_id[flow_id]
            flow.diagnosis, flow.diagnosing = brief, False
            self.diagnoser.probing.discard(flow_id)
            for port in {sport, *brief.get("probe_sports", ())} - {None, 0}:  # the reach probe's, HTTP's connections
                self.flows.ignore_probe(flow.src["ip"], port)
            held, flow.held = flow.held, []
            own = brief.pop("probe_connects", 0)  # the connects the diagnosis completed
            for ev in held:  # counted now, but for the probe's
                if ev["kind"] == "established" and own:  # not a recovery: the diagnosis's own connect
                    taken = min(own, ev["count"])
                    own -= taken
                    if taken == ev["count"]:
                        continue
                    ev = {**ev, "count": ev["count"] - taken}
                self._event(ev)
            key = brief["cause"] or brief["verdict"]
            self.causes[key] = self.causes.get(key, 0) + 1
            if self.metrics:
                self.metrics.diagnosis(key)
            self.view.diagnosis({"type": "diagnosis", "flow": flow_id, **brief, "probe_sport": sport})
