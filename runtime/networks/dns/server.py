"""The resolver process: UDP and TCP on the network's gateway address, local answers, forwarding,
and exit when its records file goes. Single-threaded (selectors), stdlib only (but for entering a
sandbox's namespace, through runtime.kernel.ns, when the records file lists sandboxes).

Sandboxes (overlay networks, whose bridges carry no address on the host): the resolver serves
127.0.0.11:53 inside each listed container's network namespace, as Docker's embedded DNS does
(listen.py), and answers there with that container's names; a sandbox gone from the file has its
sockets closed, which lets its namespace go."""
from __future__ import annotations

import ipaddress
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

from .codec import A, AAAA, ANY, CLASS_IN, MalformedPacket, NOTIMP, NXDOMAIN, PTR, Query, REFUSED, SERVFAIL, UDP_MAX, _encode_name, _labels, build_response, parse_query
from .config import Config, load_config
from .listen import bind, close_sandbox, open_sandbox

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
    def __init__(self, server: "Resolver", sock: socket.socket, client: str | None = None):
        self.server, self.sock = server, sock
        try:
            self.peer = client or sock.getpeername()[0]
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
    def __init__(self, udp: socket.socket | None, tcp: socket.socket | None, records_path: str, cfg: Config):
        self.udp, self.tcp, self.path, self.cfg = udp, tcp, records_path, cfg
        self.stamp = self._stamp()
        self.sel = selectors.DefaultSelector()
        self.pending: list[_Forward] = []
        self.tcp_conns: set[_TCPConn] = set()
        self.sandboxes: dict[str, tuple[tuple[str, int], list[socket.socket]]] = {}  # key -> (where, sockets)
        if udp is not None and tcp is not None:
            self._serve_on(udp, tcp, None)
        self.sync_sandboxes()

    def _serve_on(self, udp: socket.socket, tcp: socket.socket, client: str | None) -> None:
        """Answer on this pair; `client` names the asker for a sandbox's pair (else its address)."""
        for s in (udp, tcp):
            s.setblocking(False)
        self.sel.register(udp, selectors.EVENT_READ, lambda sock, mask: self._on_udp(sock, mask, client))
        self.sel.register(tcp, selectors.EVENT_READ, lambda sock, mask: self._on_accept(sock, mask, client))

    # sandboxes -------------------------------------------------------------------------------
    def sync_sandboxes(self) -> None:
        """Sockets in every sandbox the records file lists, none in those it no longer lists. A
        sandbox that cannot be served (gone, reused, its firewall refusing the redirect) is tried
        again when the records file changes."""
        self.leave([k for k, (where, _) in self.sandboxes.items() if self.cfg.sandboxes.get(k) != where])
        for key, where in self.cfg.sandboxes.items():
            if key not in self.sandboxes:
                socks = open_sandbox(*where)
                if socks:
                    self._serve_on(*socks, key)
                self.sandboxes[key] = (where, list(socks))

    def leave(self, keys) -> None:
        """Close the sockets of these sandboxes and take their redirect out of their namespaces."""
        for key in keys:
            where, socks = self.sandboxes.pop(key)
            for s in socks:
                if s.fileno() != -1:
                    self.sel.unregister(s)
                    s.close()
            if socks:
                close_sandbox(*where)

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
                return True  # half-written? keep the old records and look again next time
            self.sandboxes = {k: v for k, v in self.sandboxes.items() if v[1]}  # retry those that failed
            self.sync_sandboxes()
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

    def _on_udp(self, sock: socket.socket, mask: int, client: str | None = None) -> None:
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
            self.handle(data, reply, udp=True, client=client or addr[0])

    def _on_accept(self, sock: socket.socket, mask: int, client: str | None = None) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        if len(self.tcp_conns) >= MAX_TCP:
            conn.close()
            return
        conn.setblocking(False)
        c = _TCPConn(self, conn, client)
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


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m runtime.networks.dns", description=__doc__.split("\n")[0])
    ap.add_argument("--listen", help="the address to serve on in this namespace (none: only the sandboxes)")
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
    udp = tcp = None
    if args.listen:
        try:
            udp, tcp = bind(args.listen, args.port)
        except (OSError, ValueError) as e:
            tell(f"error: cannot listen on {args.listen} port {args.port}: {getattr(e, 'strerror', None) or e}")
            return 1
    server = Resolver(udp, tcp, args.records, cfg)
    tell(f"ok {udp.getsockname()[1] if udp else 0}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:  # stopped (SIGTERM) or its file gone: no redirect may stay behind in a running container
        server.leave(list(server.sandboxes))
    return 0
