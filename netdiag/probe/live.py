"""Live evidence for a predicted path: send one real probe and watch where it goes.

`probe(src_ns_path, dst, ...)`:

1. A forked child joins the source network namespace, opens the probe socket (TCP/UDP bound to a
   random high port, or a raw ICMP socket with a random echo id) and reports that number, the
   *mark* that identifies our packets, then waits for "go".
2. The parent opens one AF_PACKET capture per hop inside the hop's namespace (this thread joins
   the namespace, creates the socket, comes back), with a classic BPF filter that keeps only IPv4
   frames carrying the mark (and VXLAN, decoded here, and ICMP errors, which quote our packet).
3. Optionally a second forked child watches skb:kfree_skb in a private tracefs *instance*
   (never the top-level one), in a private mount namespace so that a tracefs mount it may need
   vanishes with it.
4. Optionally (`trace_ns`) a third forked child has the kernel trace the probe through netfilter
   in those namespaces (nftrace.py: a table of its own per namespace, NFNLGRP_NFTRACE events);
   it subscribes before anything is sent, adds its tables once it knows the mark, removes them
   before it reports (also on SIGTERM, which a dying parent sends it).
5. "go": the child probes within `timeout` and reports through a pipe (JSON); the parent kills
   it at timeout + 1 s at the latest. Then the captures are read (with kernel timestamps: the
   frames are kept, bounded, for a pcap), the drop events and trace events collected.

probe() does not raise for what can go wrong on a live system (a capture that cannot open, a
namespace that vanished, a child that dies or hangs, a tracer that fails): each becomes a note or
an error field, and the outcome is "error" with a detail when nothing better is known. Only
KeyboardInterrupt goes through, after the clean-up.

Nothing is left behind, also on KeyboardInterrupt: captures are closed, children reaped, the
tracefs instance removed (the tracer removes it itself on "stop", on EOF of its control pipe -
which is also what it sees when the parent dies - and on SIGTERM; a parent that dies sends it
SIGTERM through PR_SET_PDEATHSIG). Probes only go to `dst` from the namespace given.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

from . import nftrace
from .capture import MAX_FRAMES, MIN_HOP_FRAMES, PROTOS, Capture
from .children import Child
from .sender import probe_main, result
from .tracers import DROPS_SCOPE, INSTANCE_PREFIX, DropTracer, NfTracer, list_instances, remove_instance

SETTLE = 0.03  # veth delivers through the receiving CPU's backlog: let in-flight frames land
# marks of this process's probes in flight: concurrent probes (parallel CI checks) never share one,
# so no capture, trace or answer of one probe is taken for another's
_marks: set[int] = set()
_marks_lock = threading.Lock()


@dataclass
class Hop:
    ns_path: str
    ifname: str
    label: str = ""


@dataclass
class LiveResult:
    outcome: str  # connected | refused | replied | timeout | unreachable | too_big | error
    detail: str
    sport: int  # the mark: our source port (TCP/UDP) or ICMP echo id
    seen: list[dict]  # per hop, in order; "count" 0 = not seen, None = could not capture ("error")
    drops: list[dict]  # kfree_skb events during the window: {"reason","location","protocol","count","scope"}
    elapsed: float
    drops_scope: str = DROPS_SCOPE
    notes: list[str] = field(default_factory=list)
    # captured frames of the probe and its answers, by time: {"hop" (index into seen), "ts" (epoch,
    # kernel timestamp), "dir" in|out, "kind" probe|reply, "len" (on the wire), "data" (hex, <= SNAPLEN)}
    frames: list[dict] = field(default_factory=list)
    nftrace: list[dict] = field(default_factory=list)  # nftrace.select() events, in arrival order
    nftrace_ns: list[str] = field(default_factory=list)  # namespaces actually traced (no event there = no chain saw it)
    nftrace_drop: dict | None = None  # nftrace.first_drop(nftrace): the rule or policy that dropped the probe itself
    nftrace_error: str | None = None  # tracing requested but impossible (per-namespace trouble is in notes)

    def to_dict(self) -> dict:
        return asdict(self)


def probe(src_ns_path: str, dst: str, *, proto: str = "tcp", dport: int = 0, size: int = 0,
          hops: list[Hop] | tuple = (), timeout: float = 2.0, trace_drops: bool = True,
          trace_ns: list[str] | tuple = ()) -> LiveResult:
    """Send one probe from the namespace at `src_ns_path` to `dst` and gather the evidence: the
    outcome as the sender saw it, where along `hops` the probe (and answers) were seen (and the
    frames), the kernel's annotated drops during the window (host-wide), and with `trace_ns` the
    probe's own walk through netfilter in those namespaces. Never raises but for ^C."""
    t0 = time.monotonic()
    hops = list(hops)
    notes: list[str] = []
    got: dict = {"sport": 0, "seen": None, "drops": [], "frames": [], "nftrace": [], "nftrace_ns": [], "nftrace_error": None}

    def done(outcome: str, detail: str) -> LiveResult:
        seen = got["seen"]
        if seen is None:
            seen = [{"label": h.label or h.ifname, "ifname": h.ifname, "ns_path": h.ns_path, "count": None,
                     "first": None, "replies": None, "first_reply": None, "error": "not captured"} for h in hops]
        if trace_ns and not got["nftrace_ns"] and got["nftrace_error"] is None:
            got["nftrace_error"] = "not traced: the probe ended before tracing was set up"
        return LiveResult(outcome, detail, got["sport"], seen, got["drops"], round(time.monotonic() - t0, 4), notes=notes,
                          frames=got["frames"], nftrace=got["nftrace"], nftrace_ns=got["nftrace_ns"],
                          nftrace_drop=nftrace.first_drop(got["nftrace"]), nftrace_error=got["nftrace_error"])

    proto = proto.lower() if isinstance(proto, str) else proto
    if proto not in PROTOS:
        return done("error", f"unknown protocol {proto!r} (tcp, udp, icmp)")
    try:
        if ipaddress.ip_address(dst).version != 4:
            raise ValueError
    except ValueError:
        return done("error", f"{dst!r} is not an IPv4 address")
    if proto != "icmp" and not 0 < dport < 65536:
        return done("error", f"{proto} needs a destination port (1-65535)")
    if size < 0:
        return done("error", "size must be >= 0")

    child = tracer = nft_tracer = None
    reported = False
    claimed = None
    caps: list[Capture] = []

    def sender() -> Child:
        return Child(lambda ctl, rep: probe_main(ctl, rep, src_ns_path, dst, proto, dport, size, timeout), signal.SIGKILL)

    try:
        child = sender()
        child.start()
        if trace_drops:  # sets itself up while we wait for the probe socket and open the captures
            tracer = DropTracer(max_life=timeout + 30)
            tracer.start()
        if trace_ns:  # subscribes while we wait; adds its tables once it has the mark
            nft_tracer = NfTracer(list(trace_ns), proto, max_life=timeout + 30)
            try:
                nft_tracer.start()
            except Exception as e:  # noqa: BLE001 - no libnftables, no fork: the probe goes on untraced
                got["nftrace_error"] = f"cannot start: {e}"
                notes += nft_tracer.close()
                nft_tracer = None
        hello = child.recv(time.monotonic() + 5)
        for _ in range(8):
            if not hello or "sport" not in hello or _claim(hello["sport"]):
                break
            child.close(grace=0)  # another probe of ours has that mark: a new sender picks another
            child = sender()
            child.start()
            hello = child.recv(time.monotonic() + 5)
        else:
            return done("error", "no mark free of this process's other probes")
        if not hello or "sport" not in hello:
            return done("error", f"probe child failed: {_child_failure(child, hello)}")
        claimed = hello["sport"]
        mark = got["sport"] = hello["sport"]
        if nft_tracer is not None:
            nft_tracer.child.send({"mark": mark})
        caps = [Capture(h, mark) for h in hops]
        notes += [c.error for c in caps if c.error]
        if tracer is not None:
            ready = tracer.child.recv(time.monotonic() + 5)
            if not ready or not ready.get("ready"):
                notes.append(f"drops: not traced ({(ready or {}).get('error', 'tracer did not start')})")
                tracer.close()
                tracer = None
            else:
                notes += ready.get("notes", [])
        if nft_tracer is not None:
            ready = nft_tracer.child.recv(time.monotonic() + 5)
            notes += (ready or {}).get("notes", [])
            if not ready or not ready.get("ready"):
                got["nftrace_error"] = (ready or {}).get("error") or ("no namespace could be traced (see notes)" if ready
                                                                       else "the tracer did not start")
                notes += nft_tracer.close()
                nft_tracer = None
            else:
                got["nftrace_ns"] = ready["traced"]
        child.send("go")
        res = child.recv(time.monotonic() + timeout + 1.0)
        reported = res is not None
        if res is None:
            res = result("error", f"probe child gave no answer within {timeout + 1:g}s ({_child_failure(child, None)})")
        elif "error" in res and "outcome" not in res:
            res = result("error", res["error"])
        if caps:
            time.sleep(SETTLE)
        if tracer is not None:
            tracer.child.send("stop")
            out = tracer.child.recv(time.monotonic() + 3)
            if out and "drops" in out:
                got["drops"] = [dict(d, scope="host") for d in out["drops"]]
                notes += out.get("notes", [])
            else:
                notes.append(f"drops: unreadable ({(out or {}).get('error', 'no answer from tracer')})")
        if nft_tracer is not None:
            nft_tracer.child.send("stop")
            out = nft_tracer.child.recv(time.monotonic() + 5)
            if out and "events" in out:
                nft_tracer.reported = True
                got["nftrace"] = out["events"]
                notes += out.get("notes", [])
            else:
                got["nftrace_error"] = f"no trace events: {(out or {}).get('error', 'no answer from the tracer')}"
        keep = max(MIN_HOP_FRAMES, MAX_FRAMES // max(len(caps), 1))
        got["seen"] = [c.read(mark, proto, keep) for c in caps]
        got["frames"] = sorted((dict(f, hop=i) for i, c in enumerate(caps) for f in c.frames), key=lambda f: f["ts"])
        left_out = sum(c.frames_left_out for c in caps)
        if left_out:
            notes.append(f"frames: {left_out} captured frame(s) not kept (at most {keep} per hop)")
        _link_drops(got, notes)
        detail = res["detail"]
        if trace_drops and tracer is None:
            detail += "; kernel drops not traced (see notes)"
        return done(res["outcome"], detail)
    except Exception as e:  # noqa: BLE001 - a live system can fail in ways we did not foresee: evidence, not a crash
        notes.append(f"live probe failed: {type(e).__name__}: {e}")
        return done("error", f"the live probe failed: {type(e).__name__}: {e}")
    finally:
        if claimed is not None:
            with _marks_lock:
                _marks.discard(claimed)
        for c in caps:
            c.close()
        if child is not None:  # after its report it only waits for our EOF; otherwise it is killed at once
            child.close(grace=0.5 if reported else 0)
        if tracer is not None:
            tracer.close()
        if nft_tracer is not None:
            notes += nft_tracer.close()


def _claim(mark: int) -> bool:
    with _marks_lock:
        if mark in _marks:
            return False
        _marks.add(mark)
        return True


def _child_failure(child: Child, hello: dict | None) -> str:
    """Why a child said nothing: its own error, or how it ended (reaped here if it did)."""
    if hello and hello.get("error"):
        return hello["error"]
    if not child.eof:
        return "no answer (hung?); killed"
    child.close(grace=0.2)
    status = child.status
    if status is None:
        return "it ended without a word"
    if os.WIFSIGNALED(status):
        return f"it died from signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"it exited with status {os.WEXITSTATUS(status)} without a word"


def _link_drops(got: dict, notes: list[str]) -> None:
    """Tie the host-wide kfree_skb drops to what nftrace saw netfilter drop: the probe itself, or
    a packet it caused (its answer, an ICMP error quoting it), which is not the probe's drop."""
    ev = nftrace.first_drop(got["nftrace"])
    related = nftrace.related_drops(got["nftrace"])
    if ev is not None:
        where = f"{nftrace.describe(ev)} in {ev['ns_path']}"
        notes.append(f"nftrace: the probe was dropped by netfilter: {where}")
    for r in related[:1]:
        notes.append(f"nftrace: a packet the probe caused (not the probe) was dropped by netfilter: {nftrace.describe(r)} in {r['ns_path']}")
    for d in got["drops"]:
        if d.get("reason") == "NETFILTER_DROP":
            if ev is not None:
                d["probe_dropped_by"] = f"{nftrace.describe(ev)} in {ev['ns_path']}"
            if related:
                d["related_dropped_by"] = f"{nftrace.describe(related[0])} in {related[0]['ns_path']}"


__all__ = ["Hop", "LiveResult", "probe", "list_instances", "remove_instance", "DROPS_SCOPE", "INSTANCE_PREFIX", "MAX_FRAMES"]
