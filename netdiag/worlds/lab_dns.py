"""The lab's resolver: a small authoritative DNS server (UDP, A records) at the address the machine's
/etc/resolv.conf names, inside a world, so that a program in the lab host resolves public names
(registry-1.docker.io, auth.docker.io) to the lab's own servers. Nothing reaches the real
resolver: the lab host's packets to that address go to the outside namespace (or, for a loopback
resolver such as systemd-resolved's 127.0.0.53, stay in the lab host), where this server answers.

    dns = LabResolver(lab, workdir, {"registry-1.docker.io": "203.0.113.1"}).start()
    dns.stop()

    python3 -m netdiag.worlds.lab_dns --listen IP --record NAME=IP ...   (what start() runs)

Other names get NXDOMAIN, other record types an empty answer (glibc asks A and AAAA together).
"""
from __future__ import annotations

import argparse
import ipaddress
import socket
import struct
import subprocess
import sys
from pathlib import Path

from . import servers

NXDOMAIN, TYPE_A, CLASS_IN = 3, 1, 1


def _question(packet: bytes) -> tuple[str, int, int]:
    """(name, qtype, end offset) of the query's one question (no compression in a question)."""
    at, labels = 12, []
    while packet[at]:
        n = packet[at]
        labels.append(packet[at + 1:at + 1 + n].decode("ascii", "replace"))
        at += 1 + n
    qtype, _qclass = struct.unpack("!HH", packet[at + 1:at + 5])
    return ".".join(labels).lower(), qtype, at + 5


def answer(packet: bytes, records: dict[str, str]) -> bytes | None:
    if len(packet) < 17:
        return None
    try:
        name, qtype, end = _question(packet)
    except (IndexError, struct.error):
        return None
    (qid, flags) = struct.unpack("!HH", packet[:4])
    ip = records.get(name.rstrip("."))
    rcode = 0 if ip else NXDOMAIN
    answers = [ip] if ip and qtype == TYPE_A else []
    header = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)  # QR, AA, RD echoed
    body = b"".join(struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, 60, 4) + ipaddress.IPv4Address(a).packed for a in answers)
    return header + packet[12:end] + body


def serve(listen: str, records: dict[str, str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen, 53))
    print(f"listening on {listen}:53", flush=True)
    while True:
        packet, peer = sock.recvfrom(4096)
        reply = answer(packet, records)
        if reply:
            sock.sendto(reply, peer)


def machine_nameserver(resolv_conf: str = "/etc/resolv.conf") -> str:
    """The first IPv4 nameserver the machine's resolver asks (what programs in a lab ask too)."""
    for line in Path(resolv_conf).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and ipaddress.ip_address(parts[1]).version == 4:
            return parts[1]
    return "127.0.0.1"  # glibc's default without a nameserver line


class LabResolver:
    def __init__(self, world, workdir: Path, records: dict[str, str]):
        self.world, self.workdir, self.records = world, Path(workdir), dict(records)
        self.address = machine_nameserver()
        # a loopback resolver is asked in the lab host itself; any other is reached through the outside
        self.where = None if ipaddress.ip_address(self.address).is_loopback else "outside"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "LabResolver":
        from runtime.kernel import addr, link, ns

        if self.where == "outside":
            with ns.netns(self.world.namespace("outside")):
                addr.add(link.index("lo"), ipaddress.IPv4Address(self.address), 32)
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "dns.log"
        argv = [sys.executable, "-m", "netdiag.worlds.lab_dns", "--listen", self.address,
                *(x for name, ip in self.records.items() for x in ("--record", f"{name}={ip}"))]
        self.proc = servers.spawn(self.world, self.where, argv, log)
        try:
            servers.wait_ready(self.proc, log, servers.logged(log, "listening on"), timeout)
        except RuntimeError:
            self.proc = None
            raise
        return self

    def stop(self) -> None:
        servers.kill(self.proc)
        self.proc = None


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--listen", required=True)
    a.add_argument("--record", action="append", default=[], metavar="NAME=IP")
    args = a.parse_args()
    serve(args.listen, {name.lower().rstrip("."): ip for name, _, ip in (r.partition("=") for r in args.record)})


if __name__ == "__main__":
    main()
