"""A stand-in server for a replayed world: binds the listening sockets a snapshot recorded (in the
namespace it was started in) and answers each connection or datagram with one line, so a probe
meets a listener exactly where the real program listened (same address, port, protocol).

    python -m netdiag.scenario.standin PROTO/ADDRESS/PORT[/PROGRAM] ...

Takes the first PROGRAM as its process name (what `ss -p` and snapshots show). Prints one JSON line once every socket is bound or refused ({"bound": [...], "failed": {spec: error}}),
closes stdout, then serves until killed. Exits 1 when nothing could be bound.
"""
from __future__ import annotations

import ipaddress
import json
import selectors
import socket
import sys
import threading

TIMEOUT = 2.0


def parse(spec: str) -> tuple[str, str, int, str]:
    proto, address, port, *name = spec.split("/", 3)
    ipaddress.ip_address(address)
    if proto not in ("tcp", "udp") or not 0 < int(port) < 65536:
        raise ValueError(f"bad socket {spec!r}")
    return proto, address, int(port), "".join(name)


def _parse_or_none(spec: str):
    try:
        return parse(spec)
    except ValueError:
        return None


def bind(proto: str, address: str, port: int, v6only: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # "*:80" takes IPv4 too, unless 0.0.0.0:80 is listed as well
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((address, port))
    if proto == "tcp":
        s.listen(64)
    s.setblocking(False)
    return s


def answer(name: str, proto: str, port: int, first: bytes) -> bytes:
    text = f"netdiag stand-in for {name or 'a program'} on {proto}/{port}\n"
    if first.split(b" ", 1)[0] in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS"):
        return f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}\r\n\r\n{text}".encode()
    return text.encode()


def _serve_conn(conn: socket.socket, name: str, port: int) -> None:
    with conn:
        conn.settimeout(TIMEOUT)
        try:
            first = conn.recv(4096)
        except OSError:
            first = b""
        try:
            conn.sendall(answer(name, "tcp", port, first))
        except OSError:
            pass


def _call_me(name: str) -> None:
    if name:
        try:
            with open("/proc/self/comm", "w") as f:
                f.write(name[:15])
        except OSError:
            pass


def main(argv: list[str]) -> int:
    sel, bound, failed = selectors.DefaultSelector(), [], {}
    wildcard4 = {(p[0], p[2]) for p in (_parse_or_none(x) for x in argv) if p and p[1] == "0.0.0.0"}
    for spec in argv:
        try:
            proto, address, port, name = parse(spec)
            sock = bind(proto, address, port, v6only=address == "::" and (proto, port) in wildcard4)
            sel.register(sock, selectors.EVENT_READ, (proto, port, name))
            bound.append(spec)
        except (OSError, ValueError) as e:
            failed[spec] = str(e)
    _call_me(parse(argv[0])[3] if bound else "")
    print(json.dumps({"bound": bound, "failed": failed}), flush=True)
    sys.stdout.close()
    if not bound:
        return 1
    while True:
        for key, _ in sel.select():
            proto, port, name = key.data
            try:
                if proto == "tcp":
                    conn, _ = key.fileobj.accept()
                    threading.Thread(target=_serve_conn, args=(conn, name, port), daemon=True).start()
                else:
                    data, peer = key.fileobj.recvfrom(65535)
                    key.fileobj.sendto(answer(name, "udp", port, data), peer)
            except OSError:
                continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
