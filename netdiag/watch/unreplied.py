"""UDP and ICMP echo flows without a reply, from the conntrack events of the namespaces that have
conntrack (runtime.kernel.conntrack; a socket each, read without blocking in watch's loop).

A new entry that sees no reply within DEADLINE becomes an "unreplied" event (proto udp or icmp);
one destroyed before that unreplied becomes one then; a reply seen after its event ("replied") marks
the flow recovered, as a completed connect does a TCP one. An entry is keyed by its original tuple
alone: the same packet tracked in two namespaces (a container's and the host's) is one flow. A
connection dropped before conntrack confirms it (a drop in the forward hook of the namespace
tracking it) makes no event there: only a namespace it passed before counts it."""
from __future__ import annotations

import os
import time

DEADLINE = 2.0  # seconds a UDP query or a ping may wait for its answer (DNS's first retry comes at 1-5 s)
MAX_PENDING = 20000  # entries waiting for their deadline; beyond, new ones are counted as lost
GONE_CHECK = 5.0  # seconds between two looks for watched namespaces that are gone (a container stopped)
IPPROTO_ICMP, IPPROTO_UDP = 1, 17
ICMP_ECHO = 8
IPS_SEEN_REPLY = 1 << 1


def flow_key(entry: dict) -> tuple | None:
    """(proto, src, sport, dst, dport) of a UDP or ICMP echo entry (an echo's id is its sport, its
    port 0); None for any other."""
    if entry["proto"] == IPPROTO_UDP and entry.get("dport") is not None:
        return ("udp", entry["src"], entry["sport"], entry["dst"], entry["dport"])
    if entry["proto"] == IPPROTO_ICMP and entry.get("icmp_type") == ICMP_ECHO:
        return ("icmp", entry["src"], entry["icmp_id"], entry["dst"], 0)
    return None


def _event(kind: str, key: tuple, ts: float) -> dict:
    proto, src, sport, dst, dport = key
    return {"kind": kind, "proto": proto, "src": src, "sport": sport, "dst": dst, "dport": dport,
            "ts": ts, "last_ts": ts, "count": 1}


class Unreplied:
    """Conntrack events in, "unreplied" and "replied" events out (pure: times are passed in)."""

    def __init__(self, deadline: float = DEADLINE):
        self.deadline = deadline
        self.pending: dict[tuple, float] = {}  # key -> when it was new (CLOCK_MONOTONIC)
        self.reported: dict[tuple, float] = {}  # unreplied keys, until they are destroyed or replied
        self.lost = 0

    def add(self, entry: dict, now: float) -> list[dict]:
        key = flow_key(entry)
        if key is None:
            return []
        replied = bool((entry.get("status") or 0) & IPS_SEEN_REPLY)
        if entry["event"] == "new" and not replied:
            if key not in self.pending and key not in self.reported:
                if len(self.pending) >= MAX_PENDING:
                    self.lost += 1
                else:
                    self.pending[key] = now
            return []
        if replied:
            self.pending.pop(key, None)
            return [_event("replied", key, now)] if self.reported.pop(key, None) is not None else []
        if entry["event"] == "destroy":
            self.reported.pop(key, None)
            if key in self.pending:  # gone before its deadline, never answered (a flush, a short timeout)
                return [_event("unreplied", key, self.pending.pop(key))]
        return []

    def due(self, now: float) -> list[dict]:
        """The entries whose deadline passed without a reply, as events dated when they were new."""
        out = []
        for key, since in list(self.pending.items()):
            if now - since >= self.deadline:
                del self.pending[key]
                self.reported[key] = since
                out.append(_event("unreplied", key, since))
        if len(self.reported) > MAX_PENDING:  # entries whose destroy this watch never saw (another namespace's)
            for key in list(self.reported)[:len(self.reported) - MAX_PENDING]:
                del self.reported[key]
        return out


class ConntrackEvents:
    """The conntrack event sockets of some namespaces (paths; None is watch's own), read together."""

    def __init__(self, deadline: float = DEADLINE):
        self.sockets: dict[str | None, object] = {}
        self.tracker = Unreplied(deadline)
        self.notes: list[str] = []
        self.checked = time.monotonic()

    def watch(self, paths) -> None:
        """Subscribe to the namespaces at `paths` not subscribed yet (one gone already is skipped), and
        let go of those no longer in them (a socket keeps its namespace alive)."""
        from runtime.kernel import conntrack

        for path in set(self.sockets) - set(paths):
            self.sockets.pop(path).close()
        for path in paths:
            if path in self.sockets:
                continue
            try:
                self.sockets[path] = conntrack.subscribe(path)
            except OSError as e:
                if path is None:  # watch's own namespace: say so once (the others come and go)
                    self.notes.append(f"no conntrack events here ({e.strerror}): UDP and ICMP flows without a reply are not seen")

    def poll(self, now: float | None = None) -> list[dict]:
        from runtime.kernel import conntrack

        now = time.monotonic() if now is None else now
        if now - self.checked >= GONE_CHECK:  # a socket keeps its namespace alive: let go of those gone
            self.checked = now
            self.watch([p for p in self.sockets if p is None or os.path.exists(p)])
        out = []
        for path, sock in list(self.sockets.items()):
            try:
                entries, overruns = conntrack.read_events(sock)
            except OSError:  # the namespace is gone
                sock.close()
                del self.sockets[path]
                continue
            self.tracker.lost += overruns
            for entry in entries:
                out += self.tracker.add(entry, now)
        return out + self.tracker.due(now)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}
