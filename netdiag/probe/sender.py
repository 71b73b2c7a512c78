"""The probe itself, sent from a forked child inside the source namespace: a TCP connect (and
optionally a DF payload of a given size), a UDP datagram, or an ICMP echo, from a socket whose
source port (or echo id) is the mark every capture and trace recognises. The outcome is what the
sender saw: connected, refused, replied, timeout, unreachable, too_big, error."""
from __future__ import annotations

import errno
import fcntl
import os
import random
import select
import signal
import socket
import struct
import time

from runtime.kernel.ns import join

from .capture import ICMP_TYPES, ICMP_UNREACH, ipv4
from .children import send_line, wait_line

IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
SIOCOUTQ = 0x5411


def probe_main(ctl: int, rep: int, src_ns_path: str, dst: str, proto: str, dport: int, size: int, timeout: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and kills us
    join(src_ns_path)
    sock, mark = _prepare(proto)
    send_line(rep, {"sport": mark})
    if wait_line(ctl, time.monotonic() + 15) != "go":  # EOF: the parent gave up
        return
    result = _run(sock, proto, dst, dport, size, timeout, mark)
    send_line(rep, result)
    wait_line(ctl, time.monotonic() + 5)  # keep the socket (no FIN/RST) until the parent has read the captures
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


def result(outcome: str, detail: str, **extra) -> dict:
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
            return result("error", str(e))
        return result(*_errno_outcome(e.errno))


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
        return result("timeout", f"no answer to SYN within {timeout:g}s")
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        outcome, text = _errno_outcome(err)
        return result(outcome, "connection refused (RST or ICMP port unreachable)" if outcome == "refused" else text)
    if size <= 0:
        return result("connected", "TCP handshake completed")
    # a payload with DF: does data of that size get through (PMTU black holes pass the handshake)?
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    data = b"\0" * size
    while data:
        if not _wait(sock, select.POLLOUT, deadline):
            return result("timeout", f"handshake done, but {size} bytes could not be sent within {timeout:g}s")
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
            return result("connected", f"TCP handshake completed, {size} bytes acknowledged (path MTU {pmtu})", pmtu=pmtu)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return result(*_errno_outcome(err), pmtu=pmtu)
        if time.monotonic() >= deadline:
            return result("timeout", f"handshake done, but {unacked} of {size} bytes not acknowledged within {timeout:g}s "
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
            return result("timeout", f"no UDP answer and no ICMP error within {timeout:g}s")
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            outcome, text = _errno_outcome(e.errno)
            return result(outcome, "ICMP port unreachable" if outcome == "refused" else text)
        return result("replied", f"UDP answer of {len(data)} bytes")


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
            return result("timeout", f"no ICMP answer within {timeout:g}s")
        try:
            data, (src, _) = sock.recvfrom(65536)
        except BlockingIOError:
            continue
        ip = ipv4(data, 0)
        if ip is None or ip["proto"] != socket.IPPROTO_ICMP or len(data) < ip["l4"] + 8:
            continue
        itype, code, _, rid, _ = struct.unpack_from("!BBHHH", data, ip["l4"])
        if itype == 0 and rid == ident and src == dst:
            return result("replied", f"ICMP echo reply from {src} (ttl {ip['ttl']})")
        if itype in (3, 11, 12):
            quoted = ipv4(data, ip["l4"] + 8)
            if not quoted or quoted["proto"] != socket.IPPROTO_ICMP or len(data) < quoted["l4"] + 8:
                continue
            qtype, _, _, qid, _ = struct.unpack_from("!BBHHH", data, quoted["l4"])
            if qtype != 8 or qid != ident:
                continue
            if itype == 3 and code == 4:
                mtu = struct.unpack_from("!H", data, ip["l4"] + 6)[0]
                return result("too_big", f"ICMP fragmentation needed from {src} (next-hop MTU {mtu})", mtu=mtu)
            what = ICMP_UNREACH.get(code, f"code {code}") if itype == 3 else f"{ICMP_TYPES[itype]} code {code}"
            return result("unreachable", f"ICMP {what} from {src}")
