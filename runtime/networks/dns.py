"""The embedded DNS resolver of a user-defined network (like Docker's 127.0.0.11).

One process per network, listening on the network's gateway IP, UDP and TCP, in the host's
network namespace. It answers A (and AAAA, PTR) for the container names and aliases listed in a
JSON records file, forwards other names upstream unless the network is internal, and exits when
the records file disappears (so it dies with its network even if the CLI was killed) or on SIGTERM.

Records file (rewritten by the runtime; re-read when it changes):
    {"network": "<id>", "internal": false, "upstream": ["203.0.113.1", "127.0.0.2:5353"],
     "records": {"web1": ["172.18.0.2"], "alias": ["172.18.0.2", "172.18.0.3"]}}
An upstream is "IP" (port 53), "IPv4:port" or "[IPv6]:port".

    python -m runtime.networks.dns --listen IP --port 53 --records FILE [--ready-fd N]
writes "ok PORT\\n" to the ready fd once bound (PORT is the bound port, useful with --port 0),
or "error: ...\\n" and exits 1. The runtime uses start()/spawn() and stop().

Stdlib only, single-threaded (selectors); imports kept light because it starts per network.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

# --- codec (RFC 1035) -------------------------------------------------------------------------

A, NS, CNAME, PTR, AAAA, ANY = 1, 2, 5, 12, 28, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
TTL = 600  # like Docker
UDP_MAX = 512  # we do not speak EDNS: bigger local answers are truncated (TC) over UDP
_HEADER = struct.Struct("!HHHHHH")


class MalformedPacket(ValueError):
    """Not a DNS message we can read; the server drops it silently."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    labels: tuple[bytes, ...]  # as sent (case preserved, so answers echo it)
    qtype: int
    qclass: int

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def name(self) -> str:
        """Lower-case, no trailing dot ("" for the root)."""
        return b".".join(self.labels).decode("ascii", "replace").lower()


def _read_name(data: bytes, off: int) -> tuple[tuple[bytes, ...], int]:
    """Labels at `off` (following compression pointers) and the offset just past the name."""
    labels: list[bytes] = []
    end = None
    jumps = total = 0
    while True:
        if off >= len(data):
            raise MalformedPacket("name runs past the end")
        n = data[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(data):
                raise MalformedPacket("truncated pointer")
            jumps += 1
            if jumps > 64:
                raise MalformedPacket("compression loop")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | data[off + 1]
            continue
        if n & 0xC0:
            raise MalformedPacket("reserved label type")
        if n == 0:
            return tuple(labels), (off + 1 if end is None else end)
        label = data[off + 1:off + 1 + n]
        if len(label) != n:
            raise MalformedPacket("label runs past the end")
        total += n + 1
        if total + 1 > 255:  # + the root label
            raise MalformedPacket("name longer than 255 octets")
        labels.append(label)
        off += 1 + n


def _encode_name(labels) -> bytes:
    out = b"".join(bytes([len(lb)]) + lb for lb in labels) + b"\0"
    if any(not 0 < len(lb) < 64 for lb in labels) or len(out) > 255:
        raise ValueError(f"not a valid DNS name: {labels!r}")
    return out


def _labels(name: str) -> tuple[bytes, ...]:
    return tuple(lb.encode("idna" if not lb.isascii() else "ascii") for lb in name.rstrip(".").split(".") if lb)


def parse_query(data: bytes) -> Query:
    """A standard query: header, exactly one question. Raises MalformedPacket otherwise."""
    if len(data) < 12:
        raise MalformedPacket("shorter than a header")
    qid, flags, qd, _an, _ns, _ar = _HEADER.unpack_from(data)
    if flags & 0x8000:
        raise MalformedPacket("a response, not a query")
    if qd != 1:
        raise MalformedPacket(f"{qd} questions")
    labels, off = _read_name(data, 12)
    if off + 4 > len(data):
        raise MalformedPacket("question runs past the end")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    return Query(qid, flags, labels, qtype, qclass)


def build_query(name: str, qtype: int = A, qid: int | None = None, rd: bool = True) -> bytes:
    qid = random.getrandbits(16) if qid is None else qid
    return (_HEADER.pack(qid, 0x0100 if rd else 0, 1, 0, 0, 0)
            + _encode_name(_labels(name)) + struct.pack("!HH", qtype, CLASS_IN))


def build_response(q: Query, rcode: int = NOERROR, answers=(), *, aa: bool = True,
                   ra: bool = True, ttl: int = TTL, max_size: int = 65535) -> bytes:
    """Answer `q`. `answers` are (type, rdata bytes) for the question's name. If the message would
    exceed `max_size`, it is sent without answers and with TC set (the client retries over TCP)."""
    flags = 0x8000 | (q.opcode << 11) | (q.flags & 0x0100) | (0x0400 if aa else 0) \
        | (0x0080 if ra else 0) | (rcode & 0xF)
    question = _encode_name(q.labels) + struct.pack("!HH", q.qtype, q.qclass)
    rrs = [struct.pack("!HHHIH", 0xC00C, t, CLASS_IN, ttl, len(rd)) + rd for t, rd in answers]
    msg = _HEADER.pack(q.id, flags, 1, len(rrs), 0, 0) + question + b"".join(rrs)
    if len(msg) > max_size:
        msg = _HEADER.pack(q.id, flags | 0x0200, 1, 0, 0, 0) + question
    return msg


@dataclass
class Response:
    id: int
    flags: int
    rcode: int
    question: tuple[str, int]
    answers: list[tuple[str, int, int, object]] = field(default_factory=list)  # name, type, ttl, data


def parse_response(data: bytes) -> Response:
    """Decode a response (for clients and tests): A/AAAA as address strings, names for
    PTR/CNAME/NS, raw bytes otherwise."""
    if len(data) < 12:
        raise MalformedPacket("shorter than a header")
    qid, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data)
    off, question = 12, ("", 0)
    for _ in range(qd):
        labels, off = _read_name(data, off)
        if off + 4 > len(data):
            raise MalformedPacket("question runs past the end")
        question = (b".".join(labels).decode("ascii", "replace"), struct.unpack_from("!H", data, off)[0])
        off += 4
    resp = Response(qid, flags, flags & 0xF, question)
    for _ in range(an):
        labels, off = _read_name(data, off)
        if off + 10 > len(data):
            raise MalformedPacket("record runs past the end")
        rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        rdata = data[off:off + rdlen]
        if len(rdata) != rdlen:
            raise MalformedPacket("rdata runs past the end")
        if rtype in (A, AAAA) and rdlen in (4, 16):
            value: object = str(ipaddress.ip_address(rdata))
        elif rtype in (PTR, CNAME, NS):
            value = b".".join(_read_name(data, off)[0]).decode("ascii", "replace")
        else:
            value = rdata
        resp.answers.append((b".".join(labels).decode("ascii", "replace"), rtype, ttl, value))
        off += rdlen
    return resp


# --- records file -----------------------------------------------------------------------------

@dataclass
class Config:
    network: str = ""
    internal: bool = True
    upstreams: list[tuple[str, int]] = field(default_factory=list)
    names: dict[str, list] = field(default_factory=dict)    # name -> [ip_address]
    reverse: dict[str, str] = field(default_factory=dict)   # "2.0.18.172.in-addr.arpa" -> name
    # names a client sees through its *other* networks (Docker resolves across all of them)
    clients: dict[str, dict[str, list]] = field(default_factory=dict)  # client ip -> name -> [ip]


def parse_upstream(entry: str) -> tuple[str, int]:
    """"203.0.113.1" | "203.0.113.1:5353" | "2001:db8::1" | "[2001:db8::1]:5353" -> (ip, port)."""
    host, port = str(entry).strip(), 53
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif host.count(":") == 1:
        host, p = host.split(":")
        port = int(p)
    ipaddress.ip_address(host)  # raises ValueError for names: we never resolve them
    if not 0 < port < 65536:
        raise ValueError(f"bad port in upstream {entry!r}")
    return host, port


def load_config(path: str) -> Config:
    """Read and validate the records file. Raises OSError or ValueError."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict) or not isinstance(raw.get("records") or {}, dict):
        raise ValueError("records file must be an object with a 'records' object")
    cfg = Config(network=str(raw.get("network", "")), internal=bool(raw.get("internal", False)))
    upstream = raw.get("upstream") or []
    cfg.upstreams = [parse_upstream(u) for u in ([upstream] if isinstance(upstream, str) else upstream)]
    for name, ips in (raw.get("records") or {}).items():
        key = name.lower().rstrip(".")
        addrs = cfg.names.setdefault(key, [])
        for ip in [ips] if isinstance(ips, str) else ips:
            if not isinstance(ip, str):
                raise ValueError(f"record {name!r}: {ip!r} is not an IP address string")
            addr = ipaddress.ip_address(ip)
            if addr not in addrs:
                addrs.append(addr)
            cfg.reverse.setdefault(addr.reverse_pointer, key)
    for client, names in (raw.get("clients") or {}).items():
        ipaddress.ip_address(client)
        cfg.clients[client] = {n.lower().rstrip("."): [ipaddress.ip_address(i) for i in ips] for n, ips in names.items()}
    return cfg


# --- server -----------------------------------------------------------------------------------

FORWARD_TIMEOUT = 2.0
CHECK_EVERY = 0.2
TCP_IDLE = 10.0
MAX_PENDING = 512
MAX_TCP = 64


@dataclass(eq=False)  # compared by identity in the pending list
class _Forward:
    query: Query
    data: bytes
    reply: object
    upstreams: list
    index: int = 0
    sock: socket.socket | None = None
    upid: int = 0
    deadline: float = 0.0


class _TCPConn:
    def __init__(self, server: "Resolver", sock: socket.socket):
        self.server, self.sock = server, sock
        try:
            self.peer = sock.getpeername()[0]
        except OSError:
            self.peer = None
        self.inbuf = self.outbuf = b""
        self.closed = False
        self.last = time.monotonic()

    def on_event(self, sock: socket.socket, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                return self.close()
            if chunk == b"":
                return self.close()
            if chunk:
                self.last = time.monotonic()
                self.inbuf += chunk
                while len(self.inbuf) >= 2:
                    n = struct.unpack_from("!H", self.inbuf)[0]
                    if len(self.inbuf) < 2 + n:
                        break
                    msg, self.inbuf = self.inbuf[2:2 + n], self.inbuf[2 + n:]
                    self.server.handle(msg, self.send, udp=False, client=self.peer)
        if mask & selectors.EVENT_WRITE and not self.closed:
            self._flush()

    def send(self, msg: bytes) -> None:
        if not self.closed:
            self.outbuf += struct.pack("!H", len(msg)) + msg
            self._flush()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.outbuf) if self.outbuf else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return self.close()
        self.outbuf = self.outbuf[sent:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
        self.server.sel.modify(self.sock, events, self.on_event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.sel.unregister(self.sock)
            self.sock.close()
            self.server.tcp_conns.discard(self)


class Resolver:
    def __init__(self, udp: socket.socket, tcp: socket.socket, records_path: str, cfg: Config):
        self.udp, self.tcp, self.path, self.cfg = udp, tcp, records_path, cfg
        self.stamp = self._stamp()
        self.sel = selectors.DefaultSelector()
        self.pending: list[_Forward] = []
        self.tcp_conns: set[_TCPConn] = set()
        for s in (udp, tcp):
            s.setblocking(False)
        self.sel.register(udp, selectors.EVENT_READ, self._on_udp)
        self.sel.register(tcp, selectors.EVENT_READ, self._on_accept)

    # records ---------------------------------------------------------------------------------
    def _stamp(self):
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> bool:
        """Re-read the records file if it changed. False once it is gone (time to exit)."""
        try:
            stamp = self._stamp()
        except FileNotFoundError:
            return False
        except OSError:
            return True
        if stamp != self.stamp:
            try:
                self.cfg = load_config(self.path)
                self.stamp = stamp
            except FileNotFoundError:
                return False
            except (OSError, ValueError):
                pass  # half-written? keep the old records and look again next time
        return True

    # queries ---------------------------------------------------------------------------------
    def handle(self, data: bytes, reply, udp: bool, client: str | None = None) -> None:
        try:
            q = parse_query(data)
        except MalformedPacket:
            return
        cfg = self.cfg
        ra = not cfg.internal and bool(cfg.upstreams)
        limit = UDP_MAX if udp else 65535
        try:
            if q.opcode != 0:
                return reply(build_response(q, NOTIMP, aa=False, ra=ra))
            name = q.name
            if q.qtype in (PTR, ANY) and name in cfg.reverse:
                return reply(build_response(q, answers=[(PTR, _encode_name(_labels(cfg.reverse[name])))],
                                            ra=ra, max_size=limit))
            addrs = cfg.names.get(name)
            if addrs is None and client in cfg.clients:
                addrs = cfg.clients[client].get(name)
            if addrs is not None:
                if q.qclass not in (CLASS_IN, ANY):
                    return reply(build_response(q, REFUSED, aa=False, ra=ra))
                want = {A: (4,), AAAA: (6,), ANY: (4, 6)}.get(q.qtype, ())
                answers = [(A if a.version == 4 else AAAA, a.packed) for a in addrs if a.version in want]
                return reply(build_response(q, answers=answers, ra=ra, max_size=limit))  # maybe NODATA
            if cfg.internal:
                return reply(build_response(q, NXDOMAIN, ra=False))
            if not cfg.upstreams or len(self.pending) >= MAX_PENDING:
                return reply(build_response(q, REFUSED if not cfg.upstreams else SERVFAIL, aa=False, ra=ra))
        except ValueError:  # a question name we cannot echo back
            return
        self._try_upstream(_Forward(q, data, reply, list(cfg.upstreams)))

    def _on_udp(self, sock: socket.socket, mask: int) -> None:
        for _ in range(64):  # drain a burst, but let TCP and timers run
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue

            def reply(msg: bytes, addr=addr) -> None:
                try:
                    sock.sendto(msg, addr)
                except OSError:
                    pass
            self.handle(data, reply, udp=True, client=addr[0])

    def _on_accept(self, sock: socket.socket, mask: int) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        if len(self.tcp_conns) >= MAX_TCP:
            conn.close()
            return
        conn.setblocking(False)
        c = _TCPConn(self, conn)
        self.tcp_conns.add(c)
        self.sel.register(conn, selectors.EVENT_READ, c.on_event)

    # forwarding ------------------------------------------------------------------------------
    def _try_upstream(self, fw: _Forward) -> None:
        self._drop_sock(fw)
        while fw.index < len(fw.upstreams):
            host, port = fw.upstreams[fw.index]
            fw.index += 1
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.setblocking(False)
                s.connect((host, port))  # connected: only that server's answers reach us
                fw.upid = random.getrandbits(16)
                s.send(struct.pack("!H", fw.upid) + fw.data[2:])
            except OSError:
                s.close()
                continue
            fw.sock, fw.deadline = s, time.monotonic() + FORWARD_TIMEOUT
            self.sel.register(s, selectors.EVENT_READ, lambda sock, mask, fw=fw: self._on_upstream(fw))
            if fw not in self.pending:
                self.pending.append(fw)
            return
        self._finish(fw, build_response(fw.query, SERVFAIL, aa=False))

    def _on_upstream(self, fw: _Forward) -> None:
        try:
            data = fw.sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # e.g. ICMP port unreachable: next server now
            return self._try_upstream(fw)
        if len(data) < 12 or struct.unpack_from("!H", data)[0] != fw.upid or not data[2] & 0x80:
            return  # not the answer to our question; keep waiting
        self._finish(fw, struct.pack("!H", fw.query.id) + data[2:])

    def _drop_sock(self, fw: _Forward) -> None:
        if fw.sock is not None:
            self.sel.unregister(fw.sock)
            fw.sock.close()
            fw.sock = None

    def _finish(self, fw: _Forward, msg: bytes) -> None:
        self._drop_sock(fw)
        if fw in self.pending:
            self.pending.remove(fw)
        fw.reply(msg)

    # loop ------------------------------------------------------------------------------------
    def _expire(self) -> None:
        now = time.monotonic()
        for fw in [f for f in self.pending if f.deadline <= now]:
            self._try_upstream(fw)
        for c in [c for c in self.tcp_conns if now - c.last > TCP_IDLE]:
            c.close()

    def serve_forever(self) -> None:
        while self.refresh():
            timeout = CHECK_EVERY
            if self.pending:
                timeout = max(0.0, min(timeout, min(f.deadline for f in self.pending) - time.monotonic()))
            for key, mask in self.sel.select(timeout):
                if key.fileobj.fileno() != -1:  # closed by an earlier callback in this batch
                    key.data(key.fileobj, mask)
            self._expire()


def bind(listen_ip: str, port: int) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on listen_ip:port. With port 0 both get the same free port."""
    family = socket.AF_INET6 if ipaddress.ip_address(listen_ip).version == 6 else socket.AF_INET
    for attempt in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((listen_ip, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((listen_ip, udp.getsockname()[1]))
            tcp.listen(64)
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            if port != 0 or e.errno != 98 or attempt == 19:  # EADDRINUSE: pick another free port
                raise
    raise AssertionError("unreachable")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m runtime.networks.dns", description=__doc__.split("\n")[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--records", required=True)
    ap.add_argument("--ready-fd", type=int)
    args = ap.parse_args(argv)

    def tell(msg: str) -> None:
        if args.ready_fd is None:
            print(msg, file=sys.stderr if msg.startswith("error") else sys.stdout, flush=True)
            return
        try:
            os.write(args.ready_fd, msg.encode() + b"\n")
            os.close(args.ready_fd)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        cfg = load_config(args.records)
    except (OSError, ValueError) as e:
        tell(f"error: cannot read records file {args.records}: {e}")
        return 1
    try:
        udp, tcp = bind(args.listen, args.port)
    except (OSError, ValueError) as e:
        tell(f"error: cannot listen on {args.listen} port {args.port}: {getattr(e, 'strerror', None) or e}")
        return 1
    server = Resolver(udp, tcp, args.records, cfg)
    tell(f"ok {udp.getsockname()[1]}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


# --- runtime API ------------------------------------------------------------------------------

_children: dict = {}  # pid -> Popen, so stop() can reap what we started


def spawn(listen_ip: str, records_file: str, port: int = 53, timeout: float = 5.0) -> tuple[int, int]:
    """Start a resolver process; return (pid, bound port) once it listens. Port 0 = any free port.
    Raises KernelError (and leaves no process behind) if it cannot start."""
    import select
    import subprocess
    from pathlib import Path

    from runtime.errors import KernelError

    what = f"Cannot start the DNS resolver on {listen_ip} port {port}"
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the runtime package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.networks.dns", "--listen", listen_ip, "--port", str(port),
             "--records", os.path.abspath(records_file), "--ready-fd", str(w)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, pass_fds=(w,), start_new_session=True, env=env)
    except OSError as e:
        os.close(r)
        raise KernelError(what, f"could not run {sys.executable}: {e}") from e
    finally:
        os.close(w)
    buf, deadline = b"", time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(r)
    line = buf.decode(errors="replace").strip()
    if line.startswith("ok "):
        _children[proc.pid] = proc
        return proc.pid, int(line.split()[1])
    proc.kill()
    proc.wait()
    if line:
        why = line.removeprefix("error: ")
    elif time.monotonic() >= deadline:
        why = f"it did not report ready within {timeout:g} s"
    else:
        why = f"it exited with status {proc.returncode} before listening"
    raise KernelError(what, why, "check that the network's gateway address is configured on the host "
                      "and that nothing else listens on that port")


def start(listen_ip: str, records_file: str, port: int = 53) -> int:
    """Start the resolver of a network; returns its pid (see spawn() for the bound port too)."""
    return spawn(listen_ip, records_file, port)[0]


def _is_resolver(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"runtime.networks.dns" in f.read()
    except OSError:
        return False  # gone (a zombie has an empty cmdline, so it counts as gone too)


def stop(pid: int, timeout: float = 2.0) -> None:
    """SIGTERM the resolver, SIGKILL it if it lingers. Fine if it is already gone; a pid that
    was reused by some other program is left alone."""
    proc = _children.pop(pid, None)
    if proc is not None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except Exception:  # subprocess.TimeoutExpired
                proc.kill()
                proc.wait()
        return
    if pid <= 0 or not _is_resolver(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 1.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _is_resolver(pid):
                return
            time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
