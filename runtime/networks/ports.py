"""Published ports: Docker's -p syntax, parsed and validated before anything reaches nftables."""
from __future__ import annotations

import ipaddress
import re

from ..errors import Conflict, InvalidArgument

_SPEC = re.compile(r"^(?:(?P<ip>\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+(?:-\d+)?)?:)?(?P<ctr>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp))?$")
EPHEMERAL = (32768, 60999)


def _range(text: str, what: str, spec: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    start, end = int(lo), int(hi or lo)
    if not (1 <= start <= 65535 and 1 <= end <= 65535) or end < start:
        raise InvalidArgument(f"Invalid {what} port {text!r} in -p {spec}", "ports are 1-65535 and a range is LOW-HIGH", "use e.g. -p 8080:80")
    return start, end


def parse(spec: str) -> dict:
    """'127.0.0.1:8080:80/udp' -> {proto, host_ip, host_start, host_end, ctr_start, ctr_end}.
    A missing host port means 'pick a free one' (host_start = 0)."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise InvalidArgument(f"Invalid port mapping {spec!r}", "the form is [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|udp], ports or ranges",
                              "use e.g. -p 8080:80 or -p 127.0.0.1:8000-8010:8000-8010")
    ip = m.group("ip")
    if ip:
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise InvalidArgument(f"Invalid host IP {ip!r} in -p {spec}", "", "use an IPv4 address such as 127.0.0.1") from None
        if addr.version != 4:
            raise InvalidArgument(f"IPv6 host IP in -p {spec}", "published ports are IPv4 only here", "use an IPv4 address")
        ip = None if str(addr) == "0.0.0.0" else str(addr)
    c0, c1 = _range(m.group("ctr"), "container", spec)
    if m.group("host"):
        h0, h1 = _range(m.group("host"), "host", spec)
        if h1 - h0 != c1 - c0:
            raise InvalidArgument(f"Port ranges in -p {spec} differ in length", f"{h1 - h0 + 1} host ports for {c1 - c0 + 1} container ports",
                                  "give ranges of the same length")
    else:
        h0 = h1 = 0
    return {"proto": m.group("proto") or "tcp", "host_ip": ip, "host_start": h0, "host_end": h1, "ctr_start": c0, "ctr_end": c1}


def exposed_to_specs(exposed: dict) -> list[dict]:
    """-P: every EXPOSEd port to a free host port."""
    out = []
    for key in sorted(exposed or {}):
        port, _, proto = key.partition("/")
        out.append({"proto": proto or "tcp", "host_ip": None, "host_start": 0, "host_end": 0,
                    "ctr_start": int(port), "ctr_end": int(port)})
    return out


def _overlaps(a: dict, b: dict) -> bool:
    same_ip = a["host_ip"] is None or b["host_ip"] is None or a["host_ip"] == b["host_ip"]
    return a["proto"] == b["proto"] and same_ip and a["host_start"] <= b["host_end"] and b["host_start"] <= a["host_end"]


def assign(specs: list[dict], taken: list[dict]) -> list[dict]:
    """Give host ports to specs without one, and refuse a host port another container publishes."""
    out: list[dict] = []
    for spec in specs:
        spec = dict(spec)
        if spec["host_start"] == 0:
            for port in range(*EPHEMERAL):
                trial = {**spec, "host_start": port, "host_end": port}
                if not any(_overlaps(trial, t) for t in taken + out):
                    spec = trial
                    break
        for t in taken + out:
            if _overlaps(spec, t):
                raise Conflict(
                    f"Host port {spec['host_start']}/{spec['proto']} is already allocated",
                    f"container {t.get('container', '?')[:12]} publishes {t['host_start']}-{t['host_end']}/{t['proto']}",
                    "choose another host port, or stop that container")
        out.append(spec)
    return out


def describe(p: dict, ctr_ip: str | None = None) -> str:
    """Docker's PORTS column: 0.0.0.0:8080->80/tcp."""
    host = f"{p['host_ip'] or '0.0.0.0'}:{p['host_start']}" + (f"-{p['host_end']}" if p["host_end"] != p["host_start"] else "")
    ctr = f"{p['ctr_start']}" + (f"-{p['ctr_end']}" if p["ctr_end"] != p["ctr_start"] else "")
    return f"{host}->{ctr}/{p['proto']}"
