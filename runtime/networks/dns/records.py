"""Each user-defined network's records file, written by the runtime: its containers' names, short
ids and aliases, the names a client sees through its other networks (Docker resolves across all
of them), and where unknown names go upstream. The resolver re-reads it when it changes and exits
when it goes.

Overlay networks have one records file and one resolver per host (overlays.dns.json): an overlay's
bridge has no address on the host to listen on, so the resolver serves each local container with
an overlay endpoint inside its own namespace on 127.0.0.11, as Docker's embedded DNS does (the
file's "sandboxes"). Its names are those of every endpoint of the container's overlays on every
host, read from the cluster store (by the attach, then the agent's watch: cached in the file, so a
bridge's change does not ask the store), and of its user-defined bridges. The resolver starts with
this host's first overlay endpoint and stops with its last."""
from __future__ import annotations

import ipaddress
import os
import time

from ... import state
from ...errors import KernelError
from ...kernel.syscalls import pid_alive, proc_start_time
from .. import network_records
from ..network_records import DEFAULT_NAME
from .control import spawn, start, stop


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
    if overlays_file().exists():
        update_overlays()


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


# -- overlay networks: one resolver per host, inside each container --------------------------------
def overlays_file():
    return network_records.nets_dir() / "overlays.dns.json"


def _endpoint_names(eps: list[dict]) -> dict[str, list[str]]:
    """Names of endpoints as the cluster store lists them: name, short id, aliases. Anything that
    is not an address is skipped: the store is shared, the resolver must never choke on it."""
    out: dict[str, list[str]] = {}
    for ep in eps:
        try:
            ip = str(ipaddress.IPv4Address(str(ep["ip"]).split("/")[0]))
            names = [ep["name"], str(ep["container"])[:12], *ep.get("aliases", [])]
        except (KeyError, TypeError, ValueError):
            continue
        for name in names:
            if isinstance(name, str) and name:
                out.setdefault(name.lower(), []).append(ip)
    return out


def _merge(into: dict[str, list[str]], names: dict[str, list[str]]) -> None:
    for name, ips in names.items():
        into.setdefault(name, []).extend(ip for ip in ips if ip not in into.get(name, []))


def update_overlays(remote: dict[str, list[dict]] | None = None, sandbox: dict[str, dict] | None = None) -> None:
    """Rewrite the overlays' records file from this host's records, and start or stop their resolver.
    `remote`: per overlay network, the endpoints the store lists on other live hosts (kept until
    given again); `sandbox`: a container just attached, {id: {"netns": /proc/PID/ns/net, "inode"}}.
    This host's own endpoints are always read from its records, so a local detach is seen at once."""
    with state.locked("overlay-dns"):
        try:
            old = state.read_json(overlays_file(), {}, expect=dict)
        except state.CorruptRecord:
            old = {}
        overlays = [n for n in network_records.overlays() if n["Containers"]]
        cache = {nid: eps for nid, eps in {**(old.get("cluster") or {}), **(remote or {})}.items()
                 if any(n["Id"] == nid for n in overlays)}
        local = {cid for n in overlays for cid in n["Containers"]}
        boxes = {cid: {"netns": b["netns"], "inode": b["inode"]}
                 for cid, b in {**(old.get("sandboxes") or {}), **(sandbox or {})}.items() if cid in local}
        resolver = old.get("resolver") or {}
        if not boxes:
            stop(int(resolver.get("pid") or 0))
            overlays_file().unlink(missing_ok=True)
            return
        user_bridges = [n for n in network_records.bridges() if n["Name"] != DEFAULT_NAME]
        for cid, box in boxes.items():
            names: dict[str, list[str]] = {}
            for net in overlays + user_bridges:
                if cid in net["Containers"]:
                    _merge(names, _names(net))
                    _merge(names, _endpoint_names(cache.get(net["Id"], [])))
            box["names"] = names
        doc = {"network": "overlays", "internal": False, "upstream": _upstream(), "records": {}, "sandboxes": boxes,
               "cluster": cache, "resolver": resolver}
        if not pid_alive(int(resolver.get("pid") or 0), resolver.get("start")):
            state.write_json(overlays_file(), doc)
            pid = spawn(None, str(overlays_file()), 0)[0]
            doc["resolver"] = {"pid": pid, "start": proc_start_time(pid)}
        if doc != old:
            state.write_json(overlays_file(), doc)


def overlays_resolver_down() -> bool:
    """True when the overlays' resolver should run (its file is there) but its process is gone."""
    try:
        resolver = (state.read_json(overlays_file(), {}, expect=dict) or {}).get("resolver") or {}
    except state.CorruptRecord:
        return True
    return overlays_file().exists() and not pid_alive(int(resolver.get("pid") or 0), resolver.get("start"))


SANDBOX_READY = 3.0  # seconds: the resolver looks at its file every 0.2 s


def wait_served(netns_path: str, name: str) -> None:
    """Return once the overlays' resolver answers a question for `name` on 127.0.0.11:53 inside the
    namespace (it sets itself up there when it sees the sandbox in its file); a KernelError after
    SANDBOX_READY seconds."""
    import socket

    from ...kernel.ns import netns
    from .codec import build_query
    from .listen import SANDBOX_ADDRESS

    deadline = time.monotonic() + SANDBOX_READY
    while True:
        with netns(netns_path):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the container's, also once back here
        try:
            s.settimeout(0.1)
            s.sendto(build_query(name), (SANDBOX_ADDRESS, 53))
            if s.recv(512):
                return
        except OSError:  # refused (nothing there yet) or no answer yet
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise KernelError(f"The overlay network's DNS resolver does not answer on {SANDBOX_ADDRESS}:53 in the container",
                              f"it did not set itself up there within {SANDBOX_READY:g} s",
                              "look for its error in 'netdiag network inspect', or run the container with --dns SERVER")
        time.sleep(0.03)
