"""The kernel's events for `watch`, read by a forked child from a private tracefs instance (in a
private mount namespace, as `trace`'s drop tracer does; never the top-level instance):

  tcp:tcp_retransmit_skb  in SYN_SENT: a connect whose SYN was not answered ("unanswered"); in
                          ESTABLISHED: data not acknowledged, a connection that stalls ("stalled":
                          an MTU black hole's sign)
  tcp:tcp_retransmit_synack  a server's SYN-ACK not acknowledged ("synack_unanswered")
  tcp:tcp_receive_reset   a socket got a RST: a refused connect, or a reset connection ("reset")
  tcp:tcp_send_reset      this kernel refused a connect (a RST for no socket, "reset_sent")
  icmp:icmp_send          an ICMP "destination unreachable" sent about a packet: "frag_needed"
                          (code 4, the packet is larger than the next link's MTU, any protocol) or
                          "unreachable" (about a UDP packet: a port, a host or a network unreachable)
  skb:kfree_skb           a packet the kernel dropped, with its reason and location ("drop"):
                          counted in the kernel by runtime.kernel.dropwatch's eBPF program, with
                          the namespace and device it was dropped in (read every DROP_READ s); where
                          that cannot run (no BTF, bpf() refused), read here from tracefs as
                          host-wide counts (the event names no address or namespace)
  sock:inet_sock_set_state  a TCP connect that completed, SYN_SENT -> ESTABLISHED ("established"):
                          what marks a failing flow recovered (no source port: they sum per flow);
                          and each connect's start (-> SYN_SENT) and end, for "pending" below

A SYN is known lost only at its first retransmit, after the initial RTO of 1 s. The child keeps the
connects under way (Pending): one still waiting PENDING s after its SYN is sent as "pending"
(the parent turns it into the flow's first "unanswered" event), so a dropped SYN's line comes
before its retransmit; a connect that is answered later than that marks its flow recovered.

Every failing event names its flow the same way: src (and sport) the side that connects or sends,
dst and dport the side it wants, whichever side the kernel reported from (a SYN-ACK's, a RST's and
an ICMP error's addresses are turned round to that).

The child aggregates what it reads for FLUSH seconds and sends one JSON line per key and window:
a burst of thousands of events costs the parent a few lines (the rate limit; at most MAX_KEYS keys
a window, the rest counted as `lost`). It removes the instance when its control pipe closes (the
parent is done or dead) and on SIGTERM (a dying parent sends it); what a SIGKILL leaves, `netdiag
system prune` removes (the instance is named after the parent like the drop tracer's)."""
from __future__ import annotations

import errno
import os
import re
import select
import signal
import time

from runtime.kernel.syscalls import open_owned

from ..probe.children import send_line
# the drop tracer's tracefs helpers: one way to make, fill and remove a private instance
from ..probe.tracers import (InstanceChild, _cleaning_up, _in_private_tracefs, _private_mount_ns, _raise_stop, _read,
                             _rmdir_instance, _Stop, _tracefs_root, _write, drop_filter)

FLUSH = 0.1  # seconds a window lasts: most of an event's delay to its line
PENDING = 0.5  # seconds a SYN may wait for its answer before its connect counts as unanswered
MAX_PENDING = 20000  # connects under way the child keeps track of (the oldest are forgotten beyond)
MAX_KEYS = 500  # distinct keys a window keeps; events beyond are counted as lost
DROP_READ = 0.5  # seconds between two reads of the in-kernel drop counts
TCP_ESTABLISHED, TCP_SYN_SENT = 1, 2
AF_INET, AF_INET6, IPPROTO_TCP = 2, 10, 6
ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED = 3, 4
# the port range Linux picks connect()'s source ports from (ip_local_port_range's default): of a
# stalled connection's two ports, the one outside it is the service's
EPHEMERAL = range(32768, 61000)
EVENTS = {"unanswered": "tcp/tcp_retransmit_skb", "reset": "tcp/tcp_receive_reset", "drop": "skb/kfree_skb",
          "established": "sock/inet_sock_set_state", "synack_unanswered": "tcp/tcp_retransmit_synack",
          "reset_sent": "tcp/tcp_send_reset", "icmp": "icmp/icmp_send"}

_TIME = r"\s(\d+\.\d+):\s"
# an IPv6 socket (a server on [::]) carries IPv4 connections too: its events name them in the v4
# fields and as ::ffff:a.b.c.d in the v6 ones; an event whose v6 addresses are not so mapped is an
# IPv6 flow (not read yet)
_V6 = r"(?: saddrv6=(\S+) daddrv6=(\S+))?"
_TCP = re.compile(_TIME + r"(tcp_retransmit_skb|tcp_receive_reset|tcp_retransmit_synack):.*?\bsport=(\d+) dport=(\d+) "
                  r"saddr=(\S+) daddr=(\S+)" + _V6 + r"(?:.*?\bstate=(\w+))?")
_IP_PORT = r"(\d+\.\d+\.\d+\.\d+):(\d+)"
_SENT_RESET = re.compile(_TIME + r"tcp_send_reset:.*?\bsrc=" + _IP_PORT + r" dest=" + _IP_PORT)
_ICMP = re.compile(_TIME + r"icmp_send:.*?\btype=(\d+), code=(\d+)\. From " + _IP_PORT + r" to " + _IP_PORT + r" ulen=(\d+)")
_STATE = re.compile(_TIME + r"inet_sock_set_state:.*?\bdport=(\d+) saddr=(\S+) daddr=(\S+)" + _V6 + r".*? "
                    r"oldstate=(\w+) newstate=(\w+)")
_DROP = re.compile(_TIME + r"kfree_skb:.*?protocol=(\d+)\s+location=(\S+)\s+reason[:=]\s*(\S+)")
_LOST = re.compile(r"\[LOST (\d+) EVENTS\]")


def parse_line(line: str) -> dict | None:
    """One line of an instance's trace_pipe as an event: {kind, ts (CLOCK_MONOTONIC seconds), ...};
    {"kind": "lost", "count"} for the kernel's own overrun note; None for anything else. The most
    frequent event (every connect's state changes) is tried first, each regex only on its event."""
    m = _STATE.search(line) if "inet_sock_set_state:" in line else None
    if m and _ipv4(m.group(5), m.group(6)):  # a connect's start ("connecting": its source port is not chosen yet), success, or end
        ts, dport, src, dst, _, _, old, new = m.groups()
        kind = "connecting" if new == "TCP_SYN_SENT" else "established" if new == "TCP_ESTABLISHED" else "connect_ended"
        return {"kind": kind, "ts": float(ts), "dport": int(dport), "src": src, "dst": dst}
    m = _TCP.search(line) if " tcp_re" in line else None
    if m and _ipv4(m.group(7), m.group(8)):
        ts, event, sport, dport, saddr, daddr, _, _, state = m.groups()
        ev = {"ts": float(ts), "sport": int(sport), "dport": int(dport), "src": saddr, "dst": daddr}
        if event == "tcp_receive_reset":
            return {"kind": "reset", **ev}
        if event == "tcp_retransmit_synack":  # reported by the server: its peer is the one connecting
            return {"kind": "synack_unanswered", **_turned(ev)}
        if state == "TCP_ESTABLISHED":
            return {"kind": "stalled", **(_turned(ev) if ev["sport"] not in EPHEMERAL and ev["dport"] in EPHEMERAL else ev)}
        return {"kind": "unanswered", **ev}
    m = _SENT_RESET.search(line) if "tcp_send_reset:" in line else None
    if m:  # the RST's source is the refusing side
        return {"kind": "reset_sent", "ts": float(m.group(1)), "src": m.group(4), "sport": int(m.group(5)),
                "dst": m.group(2), "dport": int(m.group(3))}
    m = _ICMP.search(line) if "icmp_send:" in line else None
    if m:  # the addresses and (UDP's) ports are the offending packet's own
        ts, typ, code, src, sport, dst, dport, ulen = m.groups()
        return {"kind": "frag_needed" if int(code) == ICMP_FRAG_NEEDED else "unreachable", "ts": float(ts),
                "proto": "udp" if int(ulen) else "ip", "src": src, "sport": int(sport), "dst": dst, "dport": int(dport)}
    m = _DROP.search(line) if "kfree_skb:" in line else None
    if m:
        return {"kind": "drop", "ts": float(m.group(1)), "protocol": int(m.group(2)), "location": m.group(3),
                "reason": m.group(4)}
    m = _LOST.search(line)
    return {"kind": "lost", "count": int(m.group(1))} if m else None


def _ipv4(saddr_v6: str | None, daddr_v6: str | None) -> bool:
    """Whether an event is about IPv4: no v6 fields, or v4-mapped ones (an IPv6 socket's IPv4 peer)."""
    return all(a is None or a.startswith("::ffff:") for a in (saddr_v6, daddr_v6))


def _turned(ev: dict) -> dict:
    """An event reported by the side that was connected to, as its connecting side sees it."""
    return {**ev, "src": ev["dst"], "sport": ev["dport"], "dst": ev["src"], "dport": ev["sport"]}


def _symbols(format_text: str) -> dict[str, str]:
    """An event format's enum names -> their numbers (they move between kernels)."""
    return {name: num for num, name in re.findall(r'\{\s*(\d+),\s*"(\w+)"\s*\}', format_text)}


def reason_filter(format_text: str, reasons: list[str]) -> str | None:
    """The kfree_skb filter for the drop reasons asked (numbers from the event's own format: the enum
    moves between kernels); without any, the one that leaves out unannotated drops. Raises
    ValueError naming a reason this kernel does not know."""
    if not reasons:
        return drop_filter(format_text)
    known = _symbols(format_text)
    unknown = [r for r in reasons if r.upper() not in known]
    if unknown:
        raise ValueError(f"this kernel has no drop reason {', '.join(unknown)}")
    return " || ".join(f"reason == {known[r.upper()]}" for r in reasons)


def check_reasons(reasons: list[str]) -> None:
    """Raise ValueError for a drop reason this kernel does not know (before anything starts)."""
    fmt = _in_private_tracefs(lambda root: _read(f"{root}/events/skb/kfree_skb/format"))
    reason_filter(fmt, reasons)


class Window:
    """Events of one FLUSH window, aggregated by key (pure): what the child sends."""

    def __init__(self):
        self.keys: dict[tuple, dict] = {}
        self.lost = 0

    def add(self, ev: dict) -> None:
        if ev["kind"] == "lost":
            self.lost += ev["count"]
            return
        key = tuple(v for k, v in sorted(ev.items()) if k != "ts")
        agg = self.keys.get(key)
        if agg is not None:
            agg["count"] += 1
            agg["last_ts"] = ev["ts"]
        elif len(self.keys) < MAX_KEYS:
            self.keys[key] = {**ev, "count": 1, "last_ts": ev["ts"]}
        else:
            self.lost += 1

    def drain(self) -> list[dict]:
        out = list(self.keys.values())
        if self.lost:
            out.append({"kind": "lost", "count": self.lost})
        self.keys, self.lost = {}, 0
        return out


class Pending:
    """The connects under way, by (source, destination, port) (pure): the oldest of a key ends
    first. due() gives, once each, those still waiting PENDING s after their SYN, and those that
    ended unanswered after waiting that long (read late: the reader may lag behind the kernel)."""

    def __init__(self):
        self.waiting: dict[tuple, list] = {}  # key -> [[ts, reported], ...] oldest first
        self.size = 0
        self.ended_late: list[dict] = []

    def add(self, ev: dict) -> None:
        """A connect's start ("connecting"), or its success or end (anything else)."""
        key = (ev["src"], ev["dst"], ev["dport"])
        if ev["kind"] != "connecting":
            starts = self.waiting.get(key)
            if starts:
                ts, reported = starts.pop(0)
                self.size -= 1
                if not starts:
                    del self.waiting[key]
                if ev["kind"] == "connect_ended" and not reported and ev["ts"] - ts >= PENDING:
                    self.ended_late.append({"kind": "pending", "ts": ts, "src": key[0], "dst": key[1], "dport": key[2],
                                            "count": 1, "last_ts": ts, "ended": True})
            return
        if self.size >= MAX_PENDING:  # forget the oldest key's connects (a host opening thousands at once)
            self.size -= len(self.waiting.pop(next(iter(self.waiting))))
        self.waiting.setdefault(key, []).append([ev["ts"], False])
        self.size += 1

    def due(self, now: float) -> list[dict]:
        out, self.ended_late = self.ended_late, []
        for (src, dst, dport), starts in self.waiting.items():
            late = [s for s in starts if not s[1] and s[0] <= now - PENDING]
            for s in late:
                s[1] = True
            if late:
                out.append({"kind": "pending", "ts": late[0][0], "src": src, "dst": dst, "dport": dport,
                            "count": len(late), "last_ts": late[-1][0]})
        return out


def _setup(inst: str, reasons: list[str], skip: tuple = ()) -> list[str]:
    """Enable the events in the instance (its clock CLOCK_MONOTONIC, so the parent can date them),
    but those of the kinds in `skip` (drops the eBPF counter counts)."""
    notes = []
    for path, value in (("buffer_size_kb", "1024"), ("trace_clock", "mono")):
        try:
            _write(f"{inst}/{path}", value)
        except OSError as e:
            notes.append(f"{path} not set ({e.strerror})")
    inet = f"(family == {AF_INET} || family == {AF_INET6})"  # IPv6 sockets carry IPv4 peers too (parse_line)
    filters = {"unanswered": f"(state == {TCP_SYN_SENT} || state == {TCP_ESTABLISHED}) && {inet}",
               "reset": inet, "synack_unanswered": inet,
               "drop": reason_filter(_read(f"{inst}/events/skb/kfree_skb/format"), reasons),
               "established": f"protocol == {IPPROTO_TCP} && {inet} && "
                              f"(oldstate == {TCP_SYN_SENT} || newstate == {TCP_SYN_SENT})",
               # about a UDP packet (ports known), or a "fragmentation needed" about any: an unreachable
               # about a TCP packet is left to TCP's own events, which are checked against the sockets
               # of the namespace (another namespace may have the same address)
               "icmp": f"type == {ICMP_DEST_UNREACH} && (code == {ICMP_FRAG_NEEDED} || ulen != 0)"}
    for kind, event in EVENTS.items():
        if kind in skip:
            continue
        if not os.path.isdir(f"{inst}/events/{event}"):  # an older kernel (icmp_send is recent)
            notes.append(f"this kernel has no {event.replace('/', ':')} event: its {kind} flows are not seen")
            continue
        if kind == "reset_sent":  # a refused connect only (no socket), not an aborted connection
            filters[kind] = sent_reset_filter(_read(f"{inst}/events/{event}/format"))
        if filters.get(kind):
            _write(f"{inst}/events/{event}/filter", filters[kind])
        _write(f"{inst}/events/{event}/enable", "1")
    return notes


def sent_reset_filter(format_text: str) -> str | None:
    """tcp_send_reset's filter for RSTs that refuse a connect (reason NO_SOCKET); None (every RST)
    on a kernel whose event has no reason."""
    number = _symbols(format_text).get("NO_SOCKET")
    return f"reason == {number}" if number and "sk_rst_reason reason" in format_text else None


def _pipe_lines(pipe, rest: bytes) -> tuple[list[str], bytes]:
    """What trace_pipe has now (non-blocking), as whole lines, and the unfinished tail."""
    chunks = [rest]
    while True:
        chunk = pipe.read(65536)  # None: nothing more now
        if not chunk:
            break
        chunks.append(chunk)
    *lines, tail = b"".join(chunks).split(b"\n")
    return [x.decode(errors="replace") for x in lines], tail


def _reader_main(ctl: int, rep: int, name: str, reasons: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C; we stop on EOF of ctl
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    _private_mount_ns()
    inst = f"{_tracefs_root()}/instances/{name}"
    os.mkdir(inst, 0o700)
    pipe: list = []  # the open trace_pipe, closed once
    counter = None
    try:
        counter, why = _drop_counter(reasons)
        notes = _setup(inst, reasons, skip=("drop",) if counter else ())
        if why:
            notes.append(f"drops are host-wide counts by reason (tracefs): {why}")
        # an object from the moment it exists (kernel.syscalls.open_owned): a stop signal landing right
        # after the open cannot lose the descriptor, which would keep the instance busy (rmdir: EBUSY)
        pipe.append(open_owned(f"{inst}/trace_pipe"))
        os.set_blocking(pipe[0].fileno(), False)
        send_line(rep, {"ready": True, "notes": notes})
        poller = select.poll()
        poller.register(ctl, select.POLLIN)
        window, pending, tail, flushed = Window(), Pending(), b"", time.monotonic()
        drops_read = flushed
        while True:
            if poller.poll(FLUSH * 1000 / 4):
                break  # EOF (or a line): the parent is done, or gone
            lines, tail = _pipe_lines(pipe[0], tail)
            for line in lines:
                ev = parse_line(line)
                if ev and ev["kind"] in ("connecting", "established", "connect_ended"):
                    pending.add(ev)
                if ev and ev["kind"] not in ("connecting", "connect_ended"):
                    window.add(ev)
            if time.monotonic() - flushed >= FLUSH:
                flushed = time.monotonic()
                for agg in pending.due(flushed) + window.drain():  # a connect's first sign before its retransmits
                    send_line(rep, agg)
            if counter and time.monotonic() - drops_read >= DROP_READ:
                drops_read = time.monotonic()
                for d in counter.read():
                    send_line(rep, {"kind": "drop", "ts": drops_read, "last_ts": drops_read, **d})
    except (_Stop, BrokenPipeError):
        pass
    finally:
        # the instance first: closing the counter's fds (they would close with this process too,
        # whatever kills it) waits for the kernel's RCU grace periods, seconds on a busy machine
        _to_the_end(lambda: (_remove(inst, pipe), counter and counter.close()))


def _drop_counter(reasons: list[str]):
    """(the in-kernel drop counter, "") or (None, why watch reads drops from tracefs instead)."""
    if os.environ.get("NETDIAG_WATCH_DROPS") == "tracefs":  # the fallback, on purpose (its tests)
        return None, "NETDIAG_WATCH_DROPS=tracefs"
    from runtime.kernel import dropwatch

    return dropwatch.start(reasons)


def _remove(inst: str, pipe: list[int]) -> None:
    """Close the trace pipe, disable the events, remove the instance: each step may run again."""
    while pipe:
        pipe.pop().close()
    for event in EVENTS.values():
        try:
            _write(f"{inst}/events/{event}/enable", "0")
        except OSError:
            pass
    _rmdir_instance(inst)


def _to_the_end(cleanup) -> None:
    """Run the clean-up to its end. A dying parent brings EOF and SIGTERM together: the loop may end
    on the EOF and the signal's handler then raise _Stop anywhere in here, before _cleaning_up()
    ignores it; the steps are idempotent, so they run again."""
    while True:
        try:
            _cleaning_up()
            cleanup()
            return
        except _Stop:
            continue


class EventSource(InstanceChild):
    """The reader child, seen from the parent: start(), then lines() as they come, close() (which
    also removes the instance if the child could not)."""

    def __init__(self, reasons: list[str] | None = None):
        reasons = list(reasons or [])
        super().__init__(lambda ctl, rep, name: _reader_main(ctl, rep, name, reasons))
        self.notes: list[str] = []

    def start(self, timeout: float = 5.0) -> "EventSource":
        """Fork the reader and wait until its events are enabled; OSError when it could not."""
        self.child.start()
        first = self.child.recv(time.monotonic() + timeout)
        if not first or not first.get("ready"):
            why = (first or {}).get("error", "the event reader did not start")
            raise OSError(errno.EIO, f"cannot read the kernel's events through tracefs: {why}")
        self.notes = first.get("notes", [])
        return self

    def lines(self, deadline: float) -> list[dict]:
        """Every aggregated event the child has sent by `deadline` (at least one unless it passed)."""
        out = []
        ev = self.child.recv(deadline)
        while ev is not None:
            if "error" in ev:
                raise OSError(errno.EIO, f"the event reader failed: {ev['error']}")
            out.append(ev)
            ev = self.child.recv(time.monotonic())  # only what is already here
        return out

    @property
    def ended(self) -> bool:
        return self.child.eof
