"""The records file as the resolver reads it (the format is in the package docstring). Stdlib only."""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

@dataclass
class Config:
    network: str = ""
    internal: bool = True
    upstreams: list[tuple[str, int]] = field(default_factory=list)
    names: dict[str, list] = field(default_factory=dict)    # name -> [ip_address]
    reverse: dict[str, str] = field(default_factory=dict)   # "2.0.18.172.in-addr.arpa" -> name
    # names a client sees through its *other* networks (Docker resolves across all of them)
    clients: dict[str, dict[str, list]] = field(default_factory=dict)  # client ip (or sandbox key) -> name -> [ip]
    # containers served inside their own namespace on 127.0.0.11 (overlays): key -> (netns path, inode)
    sandboxes: dict[str, tuple[str, int]] = field(default_factory=dict)


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
        cfg.clients[client] = _names(names)
    for key, box in (raw.get("sandboxes") or {}).items():
        if not (isinstance(box, dict) and isinstance(box.get("netns"), str) and box["netns"].startswith("/proc/")
                and isinstance(box.get("inode"), int)):
            raise ValueError(f"sandbox {key!r} needs a /proc netns path and its inode")
        cfg.sandboxes[key] = (box["netns"], box["inode"])
        cfg.clients[key] = _names(box.get("names") or {})
    return cfg


def _names(names: dict) -> dict[str, list]:
    return {n.lower().rstrip("."): [ipaddress.ip_address(i) for i in ips] for n, ips in names.items()}
