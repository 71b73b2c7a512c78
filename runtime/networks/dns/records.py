"""Each user-defined network's records file, written by the runtime: its containers' names, short
ids and aliases, the names a client sees through its other networks (Docker resolves across all
of them), and where unknown names go upstream. The resolver re-reads it when it changes and exits
when it goes."""
from __future__ import annotations

import os

from ... import state
from ...kernel.syscalls import pid_alive
from .. import network_records
from ..network_records import DEFAULT_NAME
from .control import start


def records_file(net: dict):
    return network_records.nets_dir() / f"{net['Id']}.dns.json"


def _upstream() -> list[str]:
    env = os.environ.get("NETDIAG_DNS_UPSTREAM")
    if env is not None:
        return [s for s in env.split(",") if s]
    servers = []
    try:
        for line in open("/etc/resolv.conf"):
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
                servers.append(parts[1])
    except OSError:
        pass
    return servers


def _names(net: dict) -> dict[str, list[str]]:
    records: dict[str, list[str]] = {}
    for cid, e in net["Containers"].items():
        ip = e["IPv4Address"].split("/")[0]
        for name in [e["Name"], cid[:12], *e.get("Aliases", [])]:
            records.setdefault(name.lower(), []).append(ip)
    return records


def write(net: dict | None) -> None:
    """The resolver's view of a network: its own names, and for each of its containers the names of
    the other user-defined networks that container is on (Docker resolves across all of them)."""
    if net is None or net["Name"] == DEFAULT_NAME:
        return
    others = [n for n in network_records.bridges() if n["Id"] != net["Id"] and n["Name"] != DEFAULT_NAME]
    clients = {}
    for cid, e in net["Containers"].items():
        seen: dict[str, list[str]] = {}
        for other in others:
            if cid in other["Containers"]:
                for name, ips in _names(other).items():
                    seen.setdefault(name, []).extend(ips)
        if seen:
            clients[e["IPv4Address"].split("/")[0]] = seen
    state.write_json(records_file(net), {"network": net["Id"], "internal": net["Internal"],
                                          "upstream": [] if net["Internal"] else _upstream(),
                                          "records": _names(net), "clients": clients})


def refresh() -> None:
    """Rewrite every resolver's view (after an endpoint anywhere came or went)."""
    for net in network_records.bridges():
        write(net)


def start_resolver(net: dict) -> None:
    write(net)
    pid = start(network_records.ipam(net)["Gateway"], str(records_file(net)))
    with network_records.locked(net) as fresh:
        fresh["netdiag"]["DnsPid"] = pid


def ensure_resolver(net: dict) -> None:
    """Restart a network's resolver if it died (e.g. after the lab or host restarted)."""
    if net["Name"] == DEFAULT_NAME or pid_alive(int(net["netdiag"].get("DnsPid") or 0)):
        return
    start_resolver(net)
