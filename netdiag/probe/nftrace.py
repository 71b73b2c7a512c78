"""The kernel's own trace of one probe through netfilter (nftables `meta nftrace`).

For each namespace on the path, netdiag adds two tables of its own, `inet` and `bridge`, both
named `netdiag_trace_<pid>_<token>`, whose chains at priority -350 (before everyone else's) on
prerouting and output set `meta nftrace set 1` for the probe's packets only: protocol + the
probe's mark (its source port, or ICMP echo id) in either direction, and ICMP errors quoting such
a packet. The destination address is deliberately not matched: DNAT rewrites it on the way to a
published port, and the mark alone is what the per-hop captures match too.

The kernel then reports every table/chain/rule those packets pass and each verdict (iptables-nft
rules included) as NFT_MSG_TRACE messages on NETLINK_NETFILTER group NFNLGRP_NFTRACE, the data
`nft monitor trace` prints. A socket subscribed in each namespace (this thread joins it, opens the
socket, comes back) reads them; `select` keeps the events of the probe and its replies.

Packet headers come only with the first event of each base-chain walk; later events of that walk
(rules, jumps, the verdict) carry just the trace id, which is per skb, so they inherit the
headers and interfaces last seen for their (namespace, trace id).

Tables are removed by `Session.close()` (also on exceptions); tables of dead processes by
`prune()`. Other tables are never touched.
"""
from __future__ import annotations

import errno
import io
import os
import re
import secrets
import select as _select
import socket
import struct

from runtime.kernel.traceevents import NFT_MSG_TRACE
from runtime.kernel.wire import attrs

(NFTA_TRACE_TABLE, NFTA_TRACE_CHAIN, NFTA_TRACE_RULE_HANDLE, NFTA_TRACE_TYPE, NFTA_TRACE_VERDICT, NFTA_TRACE_ID,
 NFTA_TRACE_LL_HEADER, NFTA_TRACE_NETWORK_HEADER, NFTA_TRACE_TRANSPORT_HEADER, NFTA_TRACE_IIF, NFTA_TRACE_IIFTYPE,
 NFTA_TRACE_OIF, NFTA_TRACE_OIFTYPE, NFTA_TRACE_MARK, NFTA_TRACE_NFPROTO, NFTA_TRACE_POLICY) = range(1, 17)
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}
PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
ICMP_ERRORS = (3, 11, 12)
PRIORITY = -350
TABLE_PREFIX = "netdiag_trace_"
# netdiag_trace_PID_START_TOKEN: the creator's pid and start time (a reused pid is another process);
# names without START are an older netdiag's
_TABLE = re.compile(r"^netdiag_trace_(\d+)_(?:(\d+)_)?[0-9a-f]+$")
MAX_EVENTS = 1000  # a large TCP payload makes thousands; drop verdicts are always kept


def table_name(pid: int | None = None, token: str | None = None) -> str:
    """The trace table of process `pid` (this one's when None), while that process lives."""
    from runtime.kernel.syscalls import proc_start_time

    pid = pid or os.getpid()
    return f"{TABLE_PREFIX}{pid}_{proc_start_time(pid) or 0}_{token or secrets.token_hex(4)}"


def owner_alive(pid: str, start: str | None) -> bool:
    """Whether the process that named a table or instance (pid, start time as written) still runs."""
    from runtime.kernel.syscalls import pid_alive

    return pid_alive(int(pid), int(start) if start and start != "0" else None)


def script(name: str, proto: str, mark: int) -> str:
    """The nft script adding netdiag's trace tables (inet and bridge) for one probe."""
    if proto not in PROTOS or not 0 < mark < 65536 or not _TABLE.match(name):
        raise ValueError(f"bad trace parameters {name!r} {proto!r} {mark!r}")
    n, errors = PROTOS[proto], "icmp type { destination-unreachable, time-exceeded, parameter-problem } @th,64,8 0x45"
    if proto == "icmp":
        rules = [f"icmp type {{ echo-request, echo-reply }} icmp id {mark}",
                 f"{errors} @th,136,8 1 @th,256,16 {mark}"]  # the quoted echo's id
    else:
        rules = [f"meta l4proto {proto} th sport {mark}", f"meta l4proto {proto} th dport {mark}",
                 f"{errors} @th,136,8 {n} @th,224,16 {mark}",  # the quoted header's source port...
                 f"{errors} @th,136,8 {n} @th,240,16 {mark}"]  # ...or destination port (an error about a reply)
    body = "".join(f"\t\t{r} meta nftrace set 1\n" for r in rules)
    chains = "".join(f"\tchain {chain} {{\n\t\ttype filter hook {hook} priority {PRIORITY}; policy accept;\n{body}\t}}\n"
                     for chain, hook in (("pre", "prerouting"), ("out", "output")))
    return "".join(f"table {family} {name} {{\n{chains}}}\n" for family in ("inet", "bridge"))


def _removal(name: str, families=("inet", "bridge")) -> str:
    # add-then-delete in one transaction: removes the table whether or not it exists, never fails on it
    return "".join(f"add table {f} {name}\ndelete table {f} {name}\n" for f in families)


# -- parsing ----------------------------------------------------------------------------------------

def _be32(raw: bytes | None) -> int | None:
    return struct.unpack("!I", raw[:4])[0] if raw and len(raw) >= 4 else None


def _cstr(raw: bytes | None) -> str | None:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw is not None else None


def _verdict(raw: bytes) -> str:
    a = attrs(raw, 0, len(raw))
    code = struct.unpack("!i", a[NFTA_VERDICT_CODE][:4])[0] if NFTA_VERDICT_CODE in a else None
    if code is None:
        return "unknown"
    name = VERDICTS.get(code if code < 0 else code & 0xFF, f"verdict {code}")  # NF_QUEUE carries its queue number above
    if name in ("jump", "goto") and NFTA_VERDICT_CHAIN in a:
        return f"{name} {_cstr(a[NFTA_VERDICT_CHAIN])}"
    return name


def parse_message(data: bytes, off: int = 0, end: int | None = None) -> dict | None:
    """One NFT_MSG_TRACE message (netlink header at `off`) as a raw event, or None for other messages."""
    length, mtype = struct.unpack_from("=IH", data, off)
    end = off + length if end is None else end
    if mtype != NFT_MSG_TRACE or length < 20:
        return None
    family = data[off + 16]
    a = attrs(data, off + 20, end)
    ttype = TRACE_TYPES.get(_be32(a.get(NFTA_TRACE_TYPE)), "unknown")
    if ttype == "policy":
        verdict = {0: "drop", 1: "accept"}.get(_be32(a.get(NFTA_TRACE_POLICY)), "unknown")
    elif NFTA_TRACE_VERDICT in a:
        verdict = _verdict(a[NFTA_TRACE_VERDICT])
    else:
        verdict = None
    if ttype == "return":  # the end of a regular chain (implicit return: the kernel says "continue")
        verdict = "return"
    handle = a.get(NFTA_TRACE_RULE_HANDLE)
    return {"family": FAMILIES.get(family, str(family)), "table": _cstr(a.get(NFTA_TRACE_TABLE)),
            "chain": _cstr(a.get(NFTA_TRACE_CHAIN)), "handle": struct.unpack("!Q", handle[:8])[0] if handle else None,
            "type": ttype, "verdict": verdict, "trace_id": f"{_be32(a.get(NFTA_TRACE_ID)) or 0:08x}",
            "nfproto": FAMILIES.get(_be32(a.get(NFTA_TRACE_NFPROTO))),
            "iif": _be32(a.get(NFTA_TRACE_IIF)), "oif": _be32(a.get(NFTA_TRACE_OIF)),
            "mark": _be32(a.get(NFTA_TRACE_MARK)),
            "network": a.get(NFTA_TRACE_NETWORK_HEADER), "transport": a.get(NFTA_TRACE_TRANSPORT_HEADER)}


def parse(data: bytes) -> list[dict]:
    """Every NFT_MSG_TRACE message in one netlink read, in order."""
    out, off = [], 0
    while off + 16 <= len(data):
        length = struct.unpack_from("=I", data, off)[0]
        if length < 16 or off + length > len(data):
            break
        ev = parse_message(data, off, off + length)
        if ev is not None:
            out.append(ev)
        off += (length + 3) & ~3
    return out


def packet(network: bytes | None, transport: bytes | None) -> dict | None:
    """Addresses, protocol, ports (or ICMP type/code/id) from the headers the kernel copied."""
    if not network or len(network) < 20 or network[0] >> 4 != 4:
        return None
    proto = network[9]
    length, ip_id = struct.unpack_from("!HH", network, 2)
    pkt = {"src": socket.inet_ntoa(network[12:16]), "dst": socket.inet_ntoa(network[16:20]), "proto": proto,
           "sport": None, "dport": None, "ip_len": length, "ip_id": ip_id}
    t = transport or b""
    if proto in (6, 17) and len(t) >= 4:
        pkt["sport"], pkt["dport"] = struct.unpack_from("!HH", t)
        if proto == 6 and len(t) >= 14:
            pkt["tcp_flags"] = "".join(c for bit, c in zip((1, 2, 4, 8, 16), "FSRPA") if t[13] & bit)
    elif proto == 1 and len(t) >= 8:
        pkt["icmp_type"], pkt["icmp_code"] = t[0], t[1]
        if t[0] in (0, 8):
            pkt["icmp_id"] = struct.unpack_from("!H", t, 4)[0]
        elif t[0] in ICMP_ERRORS and len(t) >= 18:
            pkt["quoted_proto"] = t[17]  # the quoted IP header's protocol (its ports are past the 20 bytes copied)
    return pkt


def direction(pkt: dict | None, proto: str, mark: int) -> str | None:
    """"probe" or "reply" if these headers are the probe's or an answer to it; None otherwise. ICMP
    errors give "error?": the quoted ports are beyond what the kernel copies."""
    if pkt is None:
        return None
    number = PROTOS[proto]
    if proto != "icmp" and pkt["proto"] == number:
        return "probe" if pkt["sport"] == mark else "reply" if pkt["dport"] == mark else None
    if pkt["proto"] == 1:
        if proto == "icmp" and pkt.get("icmp_id") == mark:
            return "probe" if pkt["icmp_type"] == 8 else "reply"
        if pkt.get("icmp_type") in ICMP_ERRORS and pkt.get("quoted_proto") == number:
            return "error?"
    return None


def select(raw: list[tuple[str, dict]], proto: str, mark: int, own_table: str,
           ifnames: dict[str, dict[int, str]] | None = None) -> list[dict]:
    """The probe's events from (ns_path, raw event) pairs in arrival order. A walk (the events of
    one packet through one namespace's hooks: same trace id) is the probe's if its headers carry
    the mark, or if one of our own marking rules matched it (the kernel checked the mark, in ICMP
    errors the quoted ports too, which the 20 transport bytes copied here do not reach). An ICMP
    error can change trace id between hooks; it is recognised by its IP id, length and type.
    Our own table's events are left out. Each event inherits the headers and interfaces of its walk."""
    ifnames = ifnames or {}
    walk: dict[tuple[str, str], dict] = {}  # (ns, trace id) -> {"packet", "dir", "iif", "oif", "ours", "end"}
    marked: set[tuple] = set()  # (ns, identity of a packet our rules marked)
    out: list[dict | None] = []
    for ns, ev in raw:
        key = (ns, ev["trace_id"])
        w = walk.setdefault(key, {"packet": None, "dir": None, "iif": None, "oif": None, "ours": False, "end": None})
        if w["end"] is not None:
            # the kernel marks the end of every chain with a handle-less "rule ... continue": before a base
            # chain's policy event it says nothing; otherwise it is the implicit return of a regular chain
            i, w["end"] = w["end"], None
            end = out[i]
            if ev["type"] == "policy" and (ev["table"], ev["chain"]) == (end["table"], end["chain"]):
                out[i] = None
            else:
                end.update(type="return", verdict="return")
        if ev.get("network"):
            pkt = packet(ev["network"], ev.get("transport"))
            w.update(packet=pkt, iif=ev["iif"], oif=ev["oif"], dir=direction(pkt, proto, mark))
            w["ours"] = w["ours"] or (pkt is not None and (ns, _identity(pkt)) in marked)
        if ev["table"] == own_table:
            # only a marking rule that matched says "ours": our chains' other events come for any traced packet
            if ev["type"] == "rule" and ev["handle"] is not None:
                w["ours"] = True
                if w["packet"] is not None:
                    marked.add((ns, _identity(w["packet"])))
            continue
        if not w["ours"] and w["dir"] not in ("probe", "reply"):
            continue
        names = ifnames.get(ns, {})
        p = w["packet"] or {}
        if ev["type"] == "rule" and ev["handle"] is None and ev["verdict"] == "continue":
            w["end"] = len(out)
        out.append({"ns_path": ns, "family": ev["family"], "table": ev["table"], "chain": ev["chain"],
                    "handle": ev["handle"], "type": ev["type"], "verdict": ev["verdict"],
                    "iif": _ifname(names, w["iif"]), "oif": _ifname(names, w["oif"]),
                    "trace_id": ev["trace_id"], "direction": "reply" if w["dir"] == "error?" else w["dir"],
                    "packet": {k: p.get(k) for k in ("src", "dst", "proto", "sport", "dport")}
                    | ({"icmp_type": p["icmp_type"], "icmp_code": p["icmp_code"]} if "icmp_type" in p else {})})
    for w in walk.values():  # a walk that ended on the marker (nothing followed): a return
        if w["end"] is not None:
            out[w["end"]].update(type="return", verdict="return")
    return [e for e in out if e is not None]


def _identity(pkt: dict | None) -> tuple | None:
    if pkt is None:
        return None
    return (pkt["proto"], pkt["ip_id"], pkt["ip_len"], pkt.get("icmp_type"), pkt.get("icmp_code"))


def _ifname(names: dict[int, str], index: int | None) -> str | None:
    if not index:
        return None
    return names.get(index, f"if{index}")


def related(ev: dict) -> bool:
    """A packet the probe caused, not the probe itself: its answer, or an ICMP error quoting it
    (whichever way it travels). Its fate is evidence about the path, never the probe's own."""
    p = ev.get("packet") or {}
    return ev.get("direction") == "reply" or (p.get("proto") in (1, "icmp") and p.get("icmp_type") in ICMP_ERRORS)


def _drops(events: list[dict]) -> list[dict]:
    return [ev for ev in events if ev["type"] in ("rule", "policy") and ev["verdict"] == "drop"]


def first_drop(events: list[dict]) -> dict | None:
    """The event whose verdict ended the probe itself: a rule or base-chain policy that dropped one
    of the probe's own packets (a rejecting rule, iptables REJECT included, reports "drop" too),
    earliest first; or None. A related packet dropped (see `related`) is not the probe's drop."""
    return next((ev for ev in _drops(events) if not related(ev)), None)


def related_drops(events: list[dict]) -> list[dict]:
    """Drops of related packets (the answer, an ICMP error quoting the probe), in order."""
    return [ev for ev in _drops(events) if related(ev)]


def describe(ev: dict) -> str:
    """One line for a report: `ip filter FORWARD handle 12: drop (probe, in br0 out br0)`."""
    where = f"{ev['family']} {ev['table']} {ev['chain']}" + (f" handle {ev['handle']}" if ev["handle"] is not None else "")
    what = "policy " + ev["verdict"] if ev["type"] == "policy" else ev["verdict"]
    dev = " ".join(f"{k} {ev[k]}" for k in ("iif", "oif") if ev.get(k))
    return f"{where}: {what} ({ev['direction']}" + (f", {dev})" if dev else ")")


# -- a tracing session --------------------------------------------------------------------------------

class _Ns:
    def __init__(self, path: str, file: io.FileIO, sock: socket.socket, names: dict[int, str]):
        self.path, self.file, self.sock, self.names = path, file, sock, names
        self.armed = False


class Session:
    """nftrace for one probe in several namespaces, in this process: `Session(paths, proto)`
    subscribes (before anything is sent), `arm(mark)` adds the tables, `read()` collects what
    arrived, `close()` removes the tables and closes the sockets (idempotent; call it in a
    finally). A namespace that cannot be entered or armed becomes a note."""

    def __init__(self, ns_paths, proto: str, *, name: str | None = None, keep_raw: bool = False):
        from runtime.kernel import link, traceevents
        from runtime.kernel.ns import netns
        from runtime.kernel.syscalls import open_owned

        if proto not in PROTOS:
            raise ValueError(f"unknown protocol {proto!r}")
        self.proto, self.name, self.keep_raw = proto, name or table_name(), keep_raw
        self.mark: int | None = None
        self.notes: list[str] = []
        self.ns: list[_Ns] = []
        self.raw: list[tuple[str, dict]] = []
        self.messages: list[tuple[str, bytes]] = []  # the undecoded reads, when keep_raw (fixtures)
        self.lost = 0
        seen_inodes = set()
        for path in ns_paths:
            nsfile = sock = None
            try:
                nsfile = open_owned(path)
                st = os.fstat(nsfile.fileno())
                if (st.st_dev, st.st_ino) in seen_inodes:  # /run/netns/X and /proc/PID/ns/net of one namespace
                    nsfile.close()
                    continue
                with netns(f"/proc/self/fd/{nsfile.fileno()}"):
                    sock = traceevents.subscribe()
                    names = {x["index"]: x["name"] for x in link.dump()}
                seen_inodes.add((st.st_dev, st.st_ino))
                self.ns.append(_Ns(path, nsfile, sock, names))
            except BaseException as e:  # a Ctrl-C here too (closing twice is harmless: both are objects)
                if sock is not None:
                    sock.close()
                if nsfile is not None:
                    nsfile.close()
                if not isinstance(e, OSError):
                    raise
                self.notes.append(f"nftrace: cannot subscribe in {path}: {e.strerror or e}")

    def arm(self, mark: int) -> int:
        """Add the trace tables in every subscribed namespace; how many were armed."""
        from runtime.kernel import nft
        from runtime.kernel.ns import netns

        self.mark = mark
        text = script(self.name, self.proto, mark)
        for ns in self.ns:
            try:
                with netns(f"/proc/self/fd/{ns.file.fileno()}"):
                    ns.armed = True  # set first: a transaction interrupted half-way is still cleaned up
                    nft.run(text)
            except Exception as e:  # noqa: BLE001 - KernelError, OSError: this namespace is a note
                self.notes.append(f"nftrace: cannot add the trace table in {ns.path}: {_text(e)}")
        return sum(ns.armed for ns in self.ns)

    def fds(self) -> list[int]:
        return [ns.sock.fileno() for ns in self.ns]

    def read(self, wait: float = 0.0) -> int:
        """Read what arrived (waiting up to `wait` seconds for the first message); how many events."""
        if wait > 0 and self.ns:
            poller = _select.poll()
            for fd in self.fds():
                poller.register(fd, _select.POLLIN)
            poller.poll(wait * 1000)
        count = 0
        for ns in self.ns:  # in path order: ties between namespaces resolve along the probe's way
            while True:
                try:
                    data = ns.sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if e.errno == errno.ENOBUFS:  # the kernel dropped events: say so, keep reading
                        self.lost += 1
                        continue
                    self.notes.append(f"nftrace: reading in {ns.path}: {e.strerror}")
                    break
                if self.keep_raw:
                    self.messages.append((ns.path, data))
                for ev in parse(data):
                    self.raw.append((ns.path, ev))
                    count += 1
        return count

    def events(self) -> list[dict]:
        """The probe's events so far (see `select`), bounded to MAX_EVENTS plus every drop."""
        if self.mark is None:
            return []
        evs = select(self.raw, self.proto, self.mark, self.name, {ns.path: ns.names for ns in self.ns})
        if len(evs) > MAX_EVENTS:
            kept = evs[:MAX_EVENTS] + [e for e in evs[MAX_EVENTS:] if e["verdict"] == "drop"]
            self.notes.append(f"nftrace: {len(evs) - len(kept)} of {len(evs)} events left out (only the first "
                              f"{MAX_EVENTS} and every drop kept)")
            evs = kept
        return evs

    def disarm(self) -> None:
        """Remove the trace tables wherever they were added. Each removal waits ~15 ms for the kernel
        (an RCU grace period per transaction): one thread per namespace lets the waits overlap."""
        import threading

        from runtime.kernel import nft
        from runtime.kernel.ns import netns

        def remove(ns: _Ns) -> None:
            try:
                with netns(f"/proc/self/fd/{ns.file.fileno()}"):
                    nft.run(_removal(self.name))
                ns.armed = False
            except Exception as e:  # noqa: BLE001 - reported; `prune` finds it later
                self.notes.append(f"nftrace: could not remove table {self.name} in {ns.path}: {_text(e)}")

        armed = [ns for ns in self.ns if ns.armed]
        threads = [threading.Thread(target=remove, args=(ns,)) for ns in armed[1:]]
        for t in threads:
            t.start()
        if armed:
            remove(armed[0])
        for t in threads:
            t.join()

    def close(self) -> None:
        try:
            self.disarm()
        finally:
            for ns in self.ns:
                ns.sock.close()
                ns.file.close()
            self.ns = []
        if self.lost:
            self.notes.append(f"nftrace: the kernel dropped trace events {self.lost} time(s) (socket buffer full)")
            self.lost = 0

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text(e: BaseException) -> str:
    if getattr(e, "why", None):  # a NetdiagError: what failed and the kernel's words, not the generic fix
        return f"{e.what}: {e.why}"
    return getattr(e, "strerror", None) or str(e)


# -- leftovers ----------------------------------------------------------------------------------------

def tables(ns_path: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of every netdiag trace table in a namespace (this thread's when None)."""
    import contextlib
    import json

    from runtime.kernel import nft
    from runtime.kernel.ns import netns

    with netns(ns_path) if ns_path else contextlib.nullcontext():
        out = nft.run("list tables", json_out=True)
    items = json.loads(out).get("nftables", []) if out.strip() else []
    return [(t["table"]["family"], t["table"]["name"]) for t in items
            if "table" in t and _TABLE.match(t["table"]["name"])]


def remove(ns_paths, name: str) -> list[str]:
    """Remove the trace tables called `name` (e.g. a killed tracer's) from these namespaces; notes
    for the namespaces where that failed (a vanished namespace took its tables along: no note)."""
    from runtime.kernel import nft
    from runtime.kernel.ns import netns

    if not _TABLE.match(name):
        raise ValueError(f"not a netdiag trace table: {name!r}")
    notes = []
    for path in ns_paths:
        try:
            with netns(path):
                nft.run(_removal(name))
        except FileNotFoundError:
            continue
        except Exception as e:  # noqa: BLE001 - reported; prune() finds it later
            notes.append(f"nftrace: could not remove table {name} in {path}: {_text(e)}")
    return notes


def prune(ns_paths=(None,)) -> list[str]:
    """Remove trace tables whose creating process is gone (killed before it could clean up), in
    each namespace given (None: this thread's). What was removed, as `NS: family name`."""
    import contextlib

    from runtime.kernel import nft
    from runtime.kernel.ns import netns

    removed = []
    for path in ns_paths:
        try:
            stale = [(f, n) for f, n in tables(path) if not owner_alive(*_TABLE.match(n).groups())]
            for family, name in stale:
                with netns(path) if path else contextlib.nullcontext():
                    nft.run(_removal(name, (family,)))
                removed.append(f"{path or 'host'}: {family} {name}")
        except Exception:  # noqa: BLE001 - a namespace that vanished or has no nftables holds nothing
            continue
    return removed


__all__ = ["Session", "select", "parse", "parse_message", "packet", "direction", "first_drop", "related", "related_drops",
           "describe", "script", "table_name", "owner_alive", "tables", "remove", "prune", "TABLE_PREFIX", "PRIORITY"]
