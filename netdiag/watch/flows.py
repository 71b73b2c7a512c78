"""Failing flows (pure): the kernel's events grouped into one line per (kind, source, destination,
port), with counts and first/last seen; drops summed by reason; and the rate limit on printed
event lines. The counts are exact whatever the rate limit prints."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

KINDS = {"unanswered": "SYN not answered (for 0.5 s, or retransmitted)", "reset": "refused or reset (RST received)",
         "synack_unanswered": "SYN-ACK not answered (the server retransmitted it)",
         "reset_sent": "refused (a RST sent: no socket for it)",
         "stalled": "data not acknowledged (retransmitted on an established connection)",
         "unreplied": "no reply (conntrack saw no answer)",
         "unreachable": "ICMP destination unreachable sent about it",
         "frag_needed": "ICMP fragmentation needed sent about it (larger than the next link's MTU)"}
# what ends a failing flow: a TCP connect that completes, or a reply conntrack sees
RECOVERS = {"established": ("unanswered", "reset", "synack_unanswered", "reset_sent", "stalled"),
            "replied": ("unreplied", "unreachable")}


def key_of(ev: dict, kind: str | None = None) -> tuple:
    """A flow's identity: kind, protocol, source address, destination address and port."""
    return (kind or ev["kind"], ev.get("proto", "tcp"), ev["src"], ev["dst"], ev["dport"])


def wall(ts_monotonic: float) -> float:
    """Epoch seconds of a CLOCK_MONOTONIC time stamp (the trace instance's clock)."""
    return time.time() - (time.monotonic() - ts_monotonic)


@dataclass
class Flow:
    id: int
    kind: str
    src: dict  # {"ip", "label", "target"}
    dst: dict
    dport: int
    first: float  # epoch seconds
    last: float
    count: int = 0
    proto: str = "tcp"
    sports: dict[int, int] = field(default_factory=dict)  # events per source port
    diagnosis: dict | None = None
    diagnosing: bool = False
    held: list[dict] = field(default_factory=list)  # events that may be our probe's, until its diagnosis says
    recovered: float | None = None  # when a connect of this flow completed after its last failure

    def to_json(self, final: bool = False) -> dict:
        return {"type": "flow", "id": self.id, "kind": self.kind, "proto": self.proto, "count": self.count,
                "src": {"ip": self.src["ip"], "label": self.src["label"]},
                "dst": {"ip": self.dst["ip"], "port": self.dport, "label": self.dst["label"]},
                "first_seen": round(self.first, 3), "last_seen": round(self.last, 3),
                "recovered": round(self.recovered, 3) if self.recovered else None, "final": final}

    def text(self) -> str:
        return f"{self.src['label']} -> {self.dst['label']}" + (f" ({self.dst['ip']})" if self.dst["label"] != self.dst["ip"] else "") \
            + (f" {self.proto}/{self.dport}" if self.proto in ("tcp", "udp") else f" {self.proto}")


class Flows:
    def __init__(self):
        self.by_key: dict[tuple, Flow] = {}
        self.ignored: set[tuple] = set()  # (src ip, source port): watch's own probes

    def get(self, ev: dict) -> Flow | None:
        return self.by_key.get(key_of(ev))

    def add(self, ev: dict, src: dict, dst: dict) -> tuple[Flow, bool] | None:
        """Count an aggregated event ({kind, src, sport, dst, dport, count, ts, last_ts}) in its flow;
        (flow, new). None for an event of one of our own probes."""
        if (ev["src"], ev["sport"]) in self.ignored:
            return None
        key = key_of(ev)
        flow = self.by_key.get(key)
        new = flow is None
        if new:
            flow = self.by_key[key] = Flow(len(self.by_key) + 1, ev["kind"], src, dst, ev["dport"], wall(ev["ts"]),
                                           wall(ev["ts"]), proto=ev.get("proto", "tcp"))
        flow.count += ev["count"]
        flow.last = max(flow.last, wall(ev["last_ts"]))
        if flow.recovered and flow.recovered < flow.last:
            flow.recovered = None  # failing again
        flow.sports[ev["sport"]] = flow.sports.get(ev["sport"], 0) + ev["count"]
        return flow, new

    def ignore_probe(self, src_ip: str, sport: int) -> None:
        """A diagnosis's own probe: its events so far leave the counts, later ones are not counted."""
        self.ignored.add((src_ip, sport))
        for flow in self.by_key.values():
            if flow.src["ip"] == src_ip and sport in flow.sports:
                flow.count -= flow.sports.pop(sport)

    def recovered(self, ev: dict) -> list[Flow]:
        """The failing flows an "established" event (a connect that completed) or a "replied" one (a
        UDP or ICMP answer) marks recovered."""
        when = wall(ev["last_ts"])
        out = []
        for kind in RECOVERS[ev["kind"]]:
            flow = self.by_key.get(key_of(ev, kind))
            if flow is not None and flow.count > 0 and not flow.recovered and when > flow.last:
                flow.recovered = when
                out.append(flow)
        return out

    def by_impact(self) -> list[Flow]:
        """Failing before recovered, then most events first, then the most recent."""
        return sorted((f for f in self.by_key.values() if f.count > 0), key=lambda f: (bool(f.recovered), -f.count, -f.last))

    def __len__(self) -> int:
        return sum(1 for f in self.by_key.values() if f.count > 0)


class DropCounts:
    """kfree_skb drops by reason, location and place (endpoint and device: the in-kernel counter's;
    host-wide where the drop names none, or drops are read from tracefs), reported once a period."""

    def __init__(self):
        self.pending: dict[tuple, dict] = {}
        self.total: dict[str, int] = {}

    def add(self, ev: dict, place: dict | None = None) -> None:
        place = place or {}
        where = {k: place[k] for k in ("endpoint", "device", "device_of") if place.get(k)}
        key = (ev["reason"], ev["location"], ev["protocol"], *where.values())
        agg = self.pending.setdefault(key, {"reason": ev["reason"], "location": ev["location"], "protocol": ev["protocol"],
                                            "count": 0, "first": wall(ev["ts"]), **(where or {"scope": "host"})})
        agg["count"] += ev["count"]
        self.total[ev["reason"]] = self.total.get(ev["reason"], 0) + ev["count"]

    def drain(self) -> list[dict]:
        out = [{"type": "drops", "time": round(d.pop("first"), 3), **d} for d in self.pending.values()]
        self.pending = {}
        return sorted(out, key=lambda d: -d["count"])


class RateLimit:
    """At most `per_second` lines a second (a token bucket of one second); the rest counted."""

    def __init__(self, per_second: int):
        self.per_second, self.tokens, self.at = per_second, float(per_second), time.monotonic()
        self.suppressed = 0

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.per_second, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.suppressed += 1
        return False
