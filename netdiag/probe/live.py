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

import ctypes
import errno
import fcntl
import gc
import ipaddress
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from netdiag.observe.collect import inside
from netdiag.probe import nftrace
from runtime import syscalls

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
VXLAN_PORTS = (4789, 8472)
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
SIOCOUTQ = 0x5411
PR_SET_PDEATHSIG = 1
SOL_PACKET, PACKET_AUXDATA, SO_TIMESTAMPNS = 263, 8, 35
SNAPLEN = 256  # enough for outer Ethernet/IP/UDP/VXLAN + inner Ethernet/IP/L4, or an ICMP error's quote
CAPTURE_RCVBUF = 4 << 20
MAX_FRAMES = 300  # frames kept for a pcap, shared among the hops (each hop gets at least MIN_HOP_FRAMES)
MIN_HOP_FRAMES = 16
_ANCILLARY = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(20)  # a timespec, a tpacket_auxdata
SETTLE = 0.03  # veth delivers through the receiving CPU's backlog: let in-flight frames land
DROPS_SCOPE = "all packets on the host during the probe window"
INSTANCE_PREFIX = "netdiag-"
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}
ICMP_UNREACH = {0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
                4: "fragmentation needed", 5: "source route failed", 6: "destination net unknown",
                7: "destination host unknown", 9: "net administratively prohibited",
                10: "host administratively prohibited", 11: "net unreachable for TOS", 12: "host unreachable for TOS",
                13: "communication administratively prohibited"}
ICMP_TYPES = {0: "echo reply", 3: "destination unreachable", 8: "echo request", 11: "time exceeded", 12: "parameter problem"}

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_parent_fds: set[int] = set()  # parent ends of live children's pipes (owned by the parent)
_parent_fds_lock = threading.Lock()


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
    nftrace_drop: dict | None = None  # nftrace.first_drop(nftrace): the rule or policy that dropped the probe
    nftrace_error: str | None = None  # tracing requested but impossible (per-namespace trouble is in notes)

    def to_dict(self) -> dict:
        return asdict(self)


# -- forked children ------------------------------------------------------------------------------

class _Child:
    """A forked child with a control pipe (parent -> child) and a report pipe (child -> parent),
    both carrying JSON lines. `main(ctl_fd, rep_fd)` runs in the child, which then _exits.
    Construct, keep the reference, then start(): whatever interrupts start(), close() cleans up."""

    def __init__(self, main: Callable[[int, int], None], deathsig: int):
        self.main, self.deathsig = main, deathsig
        self.pid: int | None = None
        self.ctl = self.rep = None
        self._buf = b""
        self.eof = False
        self.status: int | None = None  # its wait status, once reaped

    def start(self) -> "_Child":
        main, deathsig = self.main, self.deathsig
        parent = os.getpid()
        # ^C between fork() and the bookkeeping would orphan the child: hold SIGINT/SIGTERM back. The
        # mask covers this thread; a ^C another thread receives would raise at any bytecode here (in
        # os.fork()'s own after-fork hooks it is even lost), so SIGINT is only noted meanwhile and
        # raised again once the child is on the books
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        noted: list[int] = []
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
        try:
            with _parent_fds_lock:
                ctl_r, ctl_w = os.pipe()
                try:
                    rep_r, rep_w = os.pipe()
                except BaseException:  # EMFILE: nothing may leak
                    os.close(ctl_r)
                    os.close(ctl_w)
                    raise
                self.ctl, self.rep = ctl_w, rep_r
                _parent_fds.update((ctl_w, rep_r))
                try:
                    pid = os.fork()
                except BaseException:
                    os.close(ctl_r)
                    os.close(rep_w)
                    raise
                if pid == 0:  # pragma: no cover - runs in the child
                    code = 1
                    try:
                        # keep only our pipes: a pipe another thread of the caller has open (a subprocess's
                        # stdout, a sibling child's) must not stay open here until we exit, we never exec.
                        # No cyclic GC from now on: a parent's garbage socket collected here would close
                        # an fd number we may have reused
                        gc.disable()
                        low, high = sorted((ctl_r, rep_w))
                        os.closerange(3, low)
                        os.closerange(low + 1, high)
                        os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
                        if previous is not None:  # not our note-taker: the caller's own handling
                            signal.signal(signal.SIGINT, previous)
                        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                        _libc.prctl(PR_SET_PDEATHSIG, deathsig, 0, 0, 0)
                        if os.getppid() != parent:  # the parent died before prctl took effect
                            os._exit(1)
                        main(ctl_r, rep_w)
                        code = 0
                    except BaseException as e:  # noqa: BLE001 - report anything, never unwind into the parent's code
                        try:
                            _send(rep_w, {"error": f"{type(e).__name__}: {e}"})
                        except BaseException:  # noqa: BLE001
                            pass
                    finally:
                        os._exit(code)
                self.pid = pid
                os.close(ctl_r)
                os.close(rep_w)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if noted:
                signal.raise_signal(signal.SIGINT)  # now the caller's handler raises it, with us on the books
        return self

    def send(self, obj) -> None:
        try:
            _send(self.ctl, obj)
        except OSError:
            pass  # a dead child is noticed when reading

    def recv(self, deadline: float) -> dict | None:
        """The next JSON line, or None at the deadline or at EOF (the child is gone)."""
        while b"\n" not in self._buf:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if _readable(self.rep, left):
                chunk = os.read(self.rep, 65536)
                if not chunk:
                    self.eof = True
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"error": f"unreadable report: {line[:200]!r}"}

    def close(self, grace: float) -> bool:
        """Close the pipes (EOF tells the child to finish), wait up to `grace`, then SIGKILL; always
        reaps. True if the child ended by itself."""
        with _parent_fds_lock:
            for fd in (self.ctl, self.rep):
                if fd is not None and fd in _parent_fds:
                    _parent_fds.discard(fd)
                    _close_quietly(fd)
        if self.pid is None:
            return True
        pid, self.pid = self.pid, None
        deadline = time.monotonic() + grace
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return True
            if done:
                self.status = status
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                self.status = os.waitpid(pid, 0)[1]
                return False
            except ChildProcessError:
                return False
            except InterruptedError:
                continue


def _send(fd: int, obj) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _readable(fd: int, seconds: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(seconds, 0) * 1000))


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _wait_line(fd: int, deadline: float) -> str | None:
    """In a child: the next control line ("go", "stop"), or None at EOF or the deadline."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if _readable(fd, left):
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


# -- the probe child --------------------------------------------------------------------------------

def _probe_main(ctl: int, rep: int, src_ns_path: str, dst: str, proto: str, dport: int, size: int, timeout: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and kills us
    fd = os.open(src_ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    finally:
        os.close(fd)
    sock, mark = _prepare(proto)
    _send(rep, {"sport": mark})
    if _wait_line(ctl, time.monotonic() + 15) != "go":  # EOF: the parent gave up
        return
    result = _run(sock, proto, dst, dport, size, timeout, mark)
    _send(rep, result)
    _wait_line(ctl, time.monotonic() + 5)  # keep the socket (no FIN/RST) until the parent has read the captures
    sock.close()


def _prepare(proto: str) -> tuple[socket.socket, int]:
    if proto == "icmp":
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), random.randint(1024, 65535)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    for _ in range(64):
        port = random.randint(20000, 60999)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("0.0.0.0", port))
            return s, port
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free source port found")


def _errno_outcome(err: int) -> tuple[str, str]:
    name = errno.errorcode.get(err, str(err))
    text = f"{name}: {os.strerror(err)}"
    if err in (errno.ECONNREFUSED, errno.ECONNRESET):
        return "refused", text
    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EADDRNOTAVAIL):
        return "unreachable", text
    if err == errno.EMSGSIZE:
        return "too_big", text
    if err == errno.ETIMEDOUT:
        return "timeout", text
    if err == errno.EPERM:
        return "error", text + " (a local firewall rule rejected the packet?)"
    return "error", text


def _result(outcome: str, detail: str, **extra) -> dict:
    return {"outcome": outcome, "detail": detail, **extra}


def _run(sock: socket.socket, proto: str, dst: str, dport: int, size: int, timeout: float, mark: int) -> dict:
    deadline = time.monotonic() + timeout
    try:
        if proto == "tcp":
            return _run_tcp(sock, dst, dport, size, timeout, deadline)
        if proto == "udp":
            return _run_udp(sock, dst, dport, size, timeout, deadline)
        return _run_icmp(sock, dst, size, timeout, deadline, mark)
    except OSError as e:
        if e.errno is None:
            return _result("error", str(e))
        return _result(*_errno_outcome(e.errno))


def _wait(sock: socket.socket, events: int, deadline: float) -> int:
    poller = select.poll()
    poller.register(sock, events)
    left = deadline - time.monotonic()
    if left <= 0:
        return 0
    ready = poller.poll(left * 1000)
    return ready[0][1] if ready else 0


def _run_tcp(sock, dst, dport, size, timeout, deadline) -> dict:
    sock.setblocking(False)
    try:
        sock.connect((dst, dport))
    except BlockingIOError:
        pass
    if not _wait(sock, select.POLLOUT, deadline):
        return _result("timeout", f"no answer to SYN within {timeout:g}s")
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        outcome, text = _errno_outcome(err)
        return _result(outcome, "connection refused (RST or ICMP port unreachable)" if outcome == "refused" else text)
    if size <= 0:
        return _result("connected", "TCP handshake completed")
    # a payload with DF: does data of that size get through (PMTU black holes pass the handshake)?
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    data = b"\0" * size
    while data:
        if not _wait(sock, select.POLLOUT, deadline):
            return _result("timeout", f"handshake done, but {size} bytes could not be sent within {timeout:g}s")
        try:
            data = data[sock.send(data):]
        except BlockingIOError:
            continue
    while True:
        unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4))[0]
        try:
            pmtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
        except OSError:
            pmtu = None
        if unacked == 0:
            return _result("connected", f"TCP handshake completed, {size} bytes acknowledged (path MTU {pmtu})", pmtu=pmtu)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return _result(*_errno_outcome(err), pmtu=pmtu)
        if time.monotonic() >= deadline:
            return _result("timeout", f"handshake done, but {unacked} of {size} bytes not acknowledged within {timeout:g}s "
                                      f"(path MTU {pmtu}; a PMTU black hole?)", pmtu=pmtu)
        time.sleep(0.01)


def _run_udp(sock, dst, dport, size, timeout, deadline) -> dict:
    sock.connect((dst, dport))
    if size:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    sock.setblocking(False)
    sock.send(b"\0" * max(size, 1))
    while True:
        if not _wait(sock, select.POLLIN | select.POLLERR, deadline):
            return _result("timeout", f"no UDP answer and no ICMP error within {timeout:g}s")
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            outcome, text = _errno_outcome(e.errno)
            return _result(outcome, "ICMP port unreachable" if outcome == "refused" else text)
        return _result("replied", f"UDP answer of {len(data)} bytes")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _run_icmp(sock, dst, size, timeout, deadline, ident) -> dict:
    if size:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    payload = bytes(i & 0xFF for i in range(size or 56))
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    sock.setblocking(False)
    sock.sendto(packet, (dst, 0))
    while True:
        if not _wait(sock, select.POLLIN, deadline):
            return _result("timeout", f"no ICMP answer within {timeout:g}s")
        try:
            data, (src, _) = sock.recvfrom(65536)
        except BlockingIOError:
            continue
        ip = _ipv4(data, 0)
        if ip is None or ip["proto"] != socket.IPPROTO_ICMP or len(data) < ip["l4"] + 8:
            continue
        itype, code, _, rid, _ = struct.unpack_from("!BBHHH", data, ip["l4"])
        if itype == 0 and rid == ident and src == dst:
            return _result("replied", f"ICMP echo reply from {src} (ttl {ip['ttl']})")
        if itype in (3, 11, 12):
            quoted = _ipv4(data, ip["l4"] + 8)
            if not quoted or quoted["proto"] != socket.IPPROTO_ICMP or len(data) < quoted["l4"] + 8:
                continue
            qtype, _, _, qid, _ = struct.unpack_from("!BBHHH", data, quoted["l4"])
            if qtype != 8 or qid != ident:
                continue
            if itype == 3 and code == 4:
                mtu = struct.unpack_from("!H", data, ip["l4"] + 6)[0]
                return _result("too_big", f"ICMP fragmentation needed from {src} (next-hop MTU {mtu})", mtu=mtu)
            what = ICMP_UNREACH.get(code, f"code {code}") if itype == 3 else f"{ICMP_TYPES[itype]} code {code}"
            return _result("unreachable", f"ICMP {what} from {src}")


def _ipv4(data: bytes, off: int) -> dict | None:
    if len(data) < off + 20 or data[off] >> 4 != 4:
        return None
    ihl = (data[off] & 0xF) * 4
    total, frag, ttl, proto = struct.unpack_from("!H2xH B B", data, off + 2)
    return {"ihl": ihl, "len": total, "frag": frag & 0x1FFF, "ttl": ttl, "proto": proto,
            "src": socket.inet_ntoa(data[off + 12:off + 16]), "dst": socket.inet_ntoa(data[off + 16:off + 20]),
            "l4": off + ihl}


# -- captures ---------------------------------------------------------------------------------------

def _bpf_program(mark: int) -> list[tuple[int, int, int, int]]:
    """Keep IPv4 frames (first fragments) that are TCP/UDP with port `mark` either way, ICMP with id
    `mark`, ICMP errors (checked in userspace: do they quote our packet?), and VXLAN (decoded in
    userspace). Truncated to SNAPLEN bytes."""
    LDH, LDB, LDXB_MSH, LDH_IND, LDB_IND, JEQ, JSET, RET = 0x28, 0x30, 0xB1, 0x48, 0x50, 0x15, 0x45, 0x06
    prog = [
        ("", LDH, "", "", 12),
        ("", JEQ, "", "drop", ETH_P_IP),
        ("", LDH, "", "", 20),
        ("", JSET, "drop", "", 0x1FFF),
        ("", LDXB_MSH, "", "", 14),
        ("", LDB, "", "", 23),
        ("", JEQ, "icmp", "", 1),
        ("", JEQ, "ports", "", 6),
        ("", JEQ, "", "drop", 17),
        ("", LDH_IND, "", "", 16),
        ("", JEQ, "accept", "", VXLAN_PORTS[0]),
        ("", JEQ, "accept", "", VXLAN_PORTS[1]),
        ("ports", LDH_IND, "", "", 14),
        ("", JEQ, "accept", "", mark),
        ("", LDH_IND, "", "", 16),
        ("", JEQ, "accept", "drop", mark),
        ("icmp", LDH_IND, "", "", 18),
        ("", JEQ, "accept", "", mark),
        ("", LDB_IND, "", "", 14),
        ("", JEQ, "accept", "", 3),
        ("", JEQ, "accept", "", 11),
        ("", JEQ, "accept", "drop", 12),
        ("accept", RET, "", "", SNAPLEN),
        ("drop", RET, "", "", 0),
    ]
    labels = {ins[0]: i for i, ins in enumerate(prog) if ins[0]}
    out = []
    for i, (_, code, jt, jf, k) in enumerate(prog):
        rel = lambda target: labels[target] - i - 1 if target else 0  # noqa: E731
        out.append((code, rel(jt), rel(jf), k))
    return out


def _attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


class _Capture:
    def __init__(self, hop: Hop, mark: int):
        self.hop = hop
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self.frames: list[dict] = []
        self.frames_left_out = 0
        nsfd = None
        try:
            # opened here first: collect.inside() leaks an fd when the path cannot be opened
            nsfd = os.open(hop.ns_path, os.O_RDONLY | os.O_CLOEXEC)
            with inside(f"/proc/self/fd/{nsfd}"):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
                try:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_RCVBUF)
                    except OSError:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_RCVBUF)
                    _attach_filter(s, _bpf_program(mark))
                    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # the kernel's receive time, for the pcap
                    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)  # the frame's length before SNAPLEN
                    s.bind((hop.ifname, ETH_P_ALL))  # resolved in the socket's (the hop's) namespace
                    s.setblocking(False)
                except BaseException:
                    s.close()
                    raise
            self.sock = s
        except OSError as e:
            self.error = f"cannot capture on {hop.ifname} in {hop.ns_path}: {e.strerror or e}"
        finally:
            if nsfd is not None:
                os.close(nsfd)

    def read(self, mark: int, proto: str, keep: int = 0) -> dict:
        """What passed this hop; the first `keep` matching frames go to self.frames."""
        hop = self.hop
        entry = {"label": hop.label or hop.ifname, "ifname": hop.ifname, "ns_path": hop.ns_path,
                 "count": 0, "first": None, "replies": 0, "first_reply": None}
        if self.sock is None:
            entry.update(count=None, replies=None, error=self.error)
            return entry
        while True:
            try:
                frame, anc, _, addr = self.sock.recvmsg(SNAPLEN, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ENETDOWN: the interface went down, nothing passed it
                entry["error"] = e.strerror
                break
            if hop.ifname == "lo" and addr[2] == PACKET_OUTGOING:
                continue  # loopback shows every frame twice: outgoing and incoming
            m = match_frame(frame, mark, proto)
            if m is None:
                continue
            kind, info = m
            info["dir"] = "out" if addr[2] == PACKET_OUTGOING else "in"
            if kind == "probe":
                entry["count"] += 1
                entry["first"] = entry["first"] or info
            else:
                entry["replies"] += 1
                entry["first_reply"] = entry["first_reply"] or info
            if len(self.frames) < keep:
                ts, wire = _ancillary(anc)
                self.frames.append({"ts": ts, "dir": info["dir"], "kind": kind, "len": wire or len(frame),
                                    "data": frame.hex()})
            else:
                self.frames_left_out += 1
        return entry

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _ancillary(anc: list) -> tuple[float, int | None]:
    """The kernel timestamp (SO_TIMESTAMPNS; now if missing) and the frame's original length (PACKET_AUXDATA)."""
    ts, wire = None, None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("qq", data)
            ts = sec + nsec / 1e9
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 8:
            wire = struct.unpack_from("I", data, 4)[0]  # tp_len
    return (ts if ts is not None else time.time()), wire


def match_frame(frame: bytes, mark: int, proto: str, _depth: int = 0) -> tuple[str, dict] | None:
    """("probe" | "reply", addresses) if this Ethernet frame carries our probe or an answer to it
    (directly, or inside VXLAN), else None. Answers: TCP/UDP to port `mark`, ICMP echo replies with
    id `mark`, ICMP errors quoting our probe."""
    if len(frame) < 14 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = _ipv4(frame, 14)
    if ip is None or ip["frag"]:
        return None
    l4, number = ip["l4"], PROTOS[proto]
    info = {"src": ip["src"], "dst": ip["dst"], "sport": None, "dport": None, "len": ip["len"], "vxlan_vni": None}
    if ip["proto"] in (socket.IPPROTO_TCP, socket.IPPROTO_UDP) and len(frame) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        if ip["proto"] == socket.IPPROTO_UDP and dport in VXLAN_PORTS and _depth == 0 and len(frame) >= l4 + 16:
            flags, vni = frame[l4 + 8], int.from_bytes(frame[l4 + 12:l4 + 15], "big")
            inner = match_frame(frame[l4 + 16:], mark, proto, 1) if flags & 0x08 else None
            if inner is not None:
                kind, inner_info = inner
                inner_info.update(vxlan_vni=vni, outer_src=ip["src"], outer_dst=ip["dst"], outer_len=ip["len"])
                return kind, inner_info
        if ip["proto"] != number:
            return None
        info.update(sport=sport, dport=dport)
        if sport == mark:
            return "probe", info
        if dport == mark:
            return "reply", info
        return None
    if ip["proto"] == socket.IPPROTO_ICMP and len(frame) >= l4 + 8:
        itype, code, _, ident, _ = struct.unpack_from("!BBHHH", frame, l4)
        if itype in (0, 8) and proto == "icmp" and ident == mark:
            info.update(sport=ident, icmp=ICMP_TYPES[itype])
            return ("probe" if itype == 8 else "reply"), info
        if itype in (3, 11, 12):
            quoted = _ipv4(frame, l4 + 8)
            if quoted is None or quoted["proto"] != number or len(frame) < quoted["l4"] + 8:
                return None
            q = quoted["l4"]
            ours = (struct.unpack_from("!H", frame, q + 4)[0] == mark if proto == "icmp"
                    else struct.unpack_from("!H", frame, q)[0] == mark)
            if ours:
                what = ICMP_UNREACH.get(code, f"code {code}") if itype == 3 else f"{ICMP_TYPES[itype]} code {code}"
                info["icmp"] = f"ICMP {what}"
                return "reply", info
    return None


# -- kfree_skb in a private tracefs instance ---------------------------------------------------------

def _tracefs_root() -> str:
    """In a private mount namespace (we are a forked child that unshared it): the tracefs root,
    mounting tracefs at /sys/kernel/tracing if nothing is mounted (the mount dies with us)."""
    for d in TRACEFS_DIRS:
        if os.path.isdir(f"{d}/instances"):
            return d
    syscalls.mount("tracefs", TRACEFS_DIRS[0], "tracefs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    if not os.path.isdir(f"{TRACEFS_DIRS[0]}/instances"):
        raise OSError(errno.ENOENT, "tracefs has no instances directory")
    return TRACEFS_DIRS[0]


def _private_mount_ns() -> None:
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def drop_filter(format_text: str) -> str | None:
    """The event filter that leaves out unannotated drops (kfree_skb() without a reason): numeric,
    from the event's own format (NOT_SPECIFIED is 2 on 6.x kernels, but the enum moves)."""
    if not re.search(r"\breason;", format_text):
        return None
    m = re.search(r'\{\s*(\d+),\s*"NOT_SPECIFIED"\s*\}', format_text)
    return f"reason != {m.group(1)}" if m else None


def _tracer_main(ctl: int, rep: int, name: str, max_life: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C; we stop on EOF or "stop"
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    _private_mount_ns()
    root = _tracefs_root()
    inst = f"{root}/instances/{name}"
    os.mkdir(inst, 0o700)
    try:
        notes = []
        try:
            _write(f"{inst}/buffer_size_kb", "512")
        except OSError:
            pass
        ev = f"{inst}/events/skb/kfree_skb"
        filt = drop_filter(_read(f"{ev}/format"))
        if filt:
            try:
                _write(f"{ev}/filter", filt)
            except OSError as e:
                notes.append(f"filter {filt!r} refused ({e.strerror}); all drops kept")
                filt = None
        _write(f"{ev}/enable", "1")
        try:
            _send(rep, {"ready": True, "filter": filt, "notes": notes})
            _wait_line(ctl, time.monotonic() + max_life)
        finally:
            _write(f"{ev}/enable", "0")
        drops, lost = parse_trace(_read(f"{inst}/trace"))
        if lost:
            notes.append(f"{lost} drop events lost (trace buffer overrun)")
        try:
            _send(rep, {"drops": drops, "notes": notes})
        except OSError:
            pass  # the parent is gone; still remove the instance
    finally:
        _rmdir_instance(inst)


def _rmdir_instance(inst: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(inst)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    os.rmdir(inst)


_TRACE_LINE = re.compile(r"kfree_skb:.*?protocol=(\d+)\s+location=(\S+)\s+reason[:=]\s*(\S+)")


def parse_trace(text: str) -> tuple[list[dict], int]:
    """kfree_skb lines of a `trace` file, aggregated by reason and location; and the count of lost events."""
    counts: dict[tuple[str, str, int], int] = {}
    lost = 0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _TRACE_LINE.search(line)
        if m:
            key = (m.group(3), m.group(2), int(m.group(1)))
            counts[key] = counts.get(key, 0) + 1
            continue
        lm = re.search(r"\[LOST (\d+) EVENTS\]", line)
        if lm:
            lost += int(lm.group(1))
    drops = [{"reason": r, "location": loc, "protocol": p, "count": n} for (r, loc, p), n in counts.items()]
    drops.sort(key=lambda d: -d["count"])
    return drops, lost


def _in_private_tracefs(fn: Callable[[str], object], timeout: float = 5.0):
    """Run fn(tracefs_root) in a forked child inside a private mount namespace; its JSON result."""
    def main(ctl: int, rep: int) -> None:
        _private_mount_ns()
        _send(rep, {"ok": fn(_tracefs_root())})

    child = _Child(main, signal.SIGKILL)
    try:
        child.start()
        res = child.recv(time.monotonic() + timeout)
    finally:
        child.close(grace=1.0)
    if not res or "error" in res:
        raise OSError(errno.EIO, (res or {}).get("error", "tracefs helper did not answer"))
    return res["ok"]


def list_instances(prefix: str = INSTANCE_PREFIX) -> list[str]:
    """Names of tracefs instances starting with `prefix` (read in a private mount namespace)."""
    return _in_private_tracefs(lambda root: sorted(n for n in os.listdir(f"{root}/instances") if n.startswith(prefix)))


def remove_instance(name: str) -> None:
    """Remove one tracefs instance (e.g. one a killed tracer left)."""
    if not name.startswith(INSTANCE_PREFIX) or "/" in name:
        raise ValueError(f"not a netdiag instance: {name!r}")
    _in_private_tracefs(lambda root: _rmdir_instance(f"{root}/instances/{name}"))


class _Tracer:
    def __init__(self, max_life: float):
        self.name = f"{INSTANCE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.child = _Child(lambda ctl, rep: _tracer_main(ctl, rep, self.name, max_life), signal.SIGTERM)

    def start(self) -> "_Tracer":
        self.child.start()
        return self

    def close(self) -> None:
        if self.child.pid is None:
            self.child.close(grace=0)
            return
        if not self.child.close(grace=3.0):
            try:  # it was killed before it could clean up
                remove_instance(self.name)
            except (OSError, ValueError):
                pass


# -- nftrace in a forked child -----------------------------------------------------------------------

def _nftrace_main(ctl: int, rep: int, ns_paths: list[str], proto: str, token: str, max_life: float) -> None:
    """Subscribe at once, add the trace tables when the mark comes, read events until "stop" (or EOF,
    or SIGTERM from a dying parent), remove the tables, then report. Table names carry our pid, so
    tables of a child killed outright are found by nftrace.prune()."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C; we stop on EOF or "stop"
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    deadline = time.monotonic() + max_life
    session = nftrace.Session(ns_paths, proto, name=nftrace.table_name(os.getpid(), token))
    try:
        msg = _wait_line(ctl, deadline)
        if not isinstance(msg, dict) or "mark" not in msg:
            return  # the parent gave up before the probe was ready
        armed = session.arm(int(msg["mark"]))
        _send(rep, {"ready": armed > 0, "traced": [ns.path for ns in session.ns if ns.armed], "notes": session.notes})
        session.notes = []
        poller = select.poll()
        for fd in [ctl] + session.fds():
            poller.register(fd, select.POLLIN)
        while time.monotonic() < deadline:  # read as events come: the order across namespaces is kept
            ready = {fd for fd, _ in poller.poll(max(deadline - time.monotonic(), 0) * 1000)}
            session.read()
            if ctl in ready:
                break  # "stop", or EOF: the parent is done (or gone)
        session.read()
        events = session.events()
        session.close()  # the tables go before we report: when probe() returns, they are gone
        _send(rep, {"events": events, "notes": session.notes})
    finally:
        session.close()


class _NfTracer:
    def __init__(self, ns_paths: list[str], proto: str, max_life: float):
        self.token = secrets.token_hex(4)
        self.ns_paths = list(ns_paths)
        self.child = _Child(lambda ctl, rep: _nftrace_main(ctl, rep, self.ns_paths, proto, self.token, max_life),
                            signal.SIGTERM)
        self.reported = False  # its final report comes after it removed its tables

    def start(self) -> "_NfTracer":
        from runtime import nft

        nft._load()  # dlopen before fork: the child must not need the loader lock another thread may hold
        self.child.start()
        return self

    @property
    def name(self) -> str:  # the child names its tables after its own pid
        return nftrace.table_name(self.child.pid, self.token)

    def close(self) -> list[str]:
        if self.child.pid is None:
            self.child.close(grace=0)  # never forked (or already closed): only pipes to close
            return []
        name = self.name
        self.child.close(grace=3.0)
        if self.reported:
            return []
        return nftrace.remove(self.ns_paths, name)  # it died (or was killed) before it could clean up


# -- the probe --------------------------------------------------------------------------------------

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
    caps: list[_Capture] = []
    try:
        child = _Child(lambda ctl, rep: _probe_main(ctl, rep, src_ns_path, dst, proto, dport, size, timeout), signal.SIGKILL)
        child.start()
        if trace_drops:  # sets itself up while we wait for the probe socket and open the captures
            tracer = _Tracer(max_life=timeout + 30)
            tracer.start()
        if trace_ns:  # subscribes while we wait; adds its tables once it has the mark
            nft_tracer = _NfTracer(list(trace_ns), proto, max_life=timeout + 30)
            try:
                nft_tracer.start()
            except Exception as e:  # noqa: BLE001 - no libnftables, no fork: the probe goes on untraced
                got["nftrace_error"] = f"cannot start: {e}"
                notes += nft_tracer.close()
                nft_tracer = None
        hello = child.recv(time.monotonic() + 5)
        if not hello or "sport" not in hello:
            return done("error", f"probe child failed: {_child_failure(child, hello)}")
        mark = got["sport"] = hello["sport"]
        if nft_tracer is not None:
            nft_tracer.child.send({"mark": mark})
        caps = [_Capture(h, mark) for h in hops]
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
            res = _result("error", f"probe child gave no answer within {timeout + 1:g}s ({_child_failure(child, None)})")
        elif "error" in res and "outcome" not in res:
            res = _result("error", res["error"])
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
        for c in caps:
            c.close()
        if child is not None:  # after its report it only waits for our EOF; otherwise it is killed at once
            child.close(grace=0.5 if reported else 0)
        if tracer is not None:
            tracer.close()
        if nft_tracer is not None:
            notes += nft_tracer.close()


def _child_failure(child: _Child, hello: dict | None) -> str:
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
    """Tie the host-wide kfree_skb drops to the probe where nftrace saw netfilter drop it."""
    ev = nftrace.first_drop(got["nftrace"])
    if ev is None:
        return
    where = f"{nftrace.describe(ev)} in {ev['ns_path']}"
    notes.append(f"nftrace: the {ev['direction']} was dropped by netfilter: {where}")
    for d in got["drops"]:
        if d.get("reason") == "NETFILTER_DROP":
            d["probe_dropped_by"] = where


__all__ = ["Hop", "LiveResult", "probe", "match_frame", "parse_trace", "drop_filter", "list_instances",
           "remove_instance", "DROPS_SCOPE", "MAX_FRAMES"]
