"""Build the host model: every namespace's state plus who owns it, veth pairs matched across
namespaces, and the runtimes' own records. The result is plain JSON (a versioned snapshot) so it
can be saved, loaded elsewhere, and reasoned over offline without root."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

from . import collect, owners

SCHEMA = "netdiag.snapshot/1"


def collect_ns(ref: owners.NsRef, errors: list[dict], with_sockets: bool = True, conntrack: bool = False) -> dict | None:
    """One namespace's full state, or None (with the reason in `errors`) when it cannot be entered.
    `conntrack` adds the host's connection table (full snapshots; live diagnoses do not read it)."""
    try:
        if ref.kind == "host":  # where we are already: no setns, so this works without root too
            data = collect.collect_here(errors, ref.id, with_sockets, conntrack=conntrack)
        else:
            with collect.inside(ref.path):
                data = collect.collect_here(errors, ref.id, with_sockets)
    except PermissionError as e:
        errors.append({"ns": ref.id, "what": f"cannot enter {ref.label()}",
                       "error": f"{e.strerror}: entering another network namespace needs CAP_SYS_ADMIN (run as root)"})
        return None
    except OSError as e:
        errors.append({"ns": ref.id, "what": f"cannot enter {ref.label()}", "error": str(e)})
        return None
    if with_sockets and data["sockets"]:
        owned = collect.socket_owners(ref.pids)
        for s in data["sockets"]:
            s.update(owned.get(s["inode"], {}))
    return {**meta(ref), "resolv_conf": _resolv_conf(ref), **data}


def meta(ref: owners.NsRef) -> dict:
    return {"id": ref.id, "inode": ref.inode, "kind": ref.kind, "name": ref.name, "label": ref.label(),
            "runtime": ref.runtime, "container": ref.container.get("id", ""), "netns_names": ref.netns_names,
            "pids": ref.pids[:20]}


def _envelope(namespaces, host_id: str, containers: list, networks: list, errors: list) -> dict:
    return {
        "schema": SCHEMA,
        "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "hostname": platform.node(), "kernel": platform.release(),
        "host": host_id, "namespaces": namespaces, "containers": containers, "networks": networks, "errors": errors,
    }


def build(*, with_sockets: bool = True) -> dict:
    """Observe every namespace now: the whole host in one JSON document."""
    errors: list[dict] = []
    refs, containers, docker_nets = owners.discover(errors)
    namespaces = {}
    for ref in sorted(refs.values(), key=lambda r: (r.kind != "host", r.label())):
        data = collect_ns(ref, errors, with_sockets, conntrack=True)
        if data is not None:
            namespaces[ref.id] = data
    _match_veths(namespaces)
    host = next(r.id for r in refs.values() if r.kind == "host")
    return _envelope(namespaces, host, containers, _netdiag_networks(errors) + docker_nets, errors)


def live(*, with_sockets: bool = True) -> dict:
    """The same document, but each namespace is read only when something asks for it: a trace or an
    inspect touches a handful of namespaces, not every one on a host with hundreds."""
    from .lazy import LazyNamespaces

    errors: list[dict] = []
    refs, containers, docker_nets = owners.discover(errors)
    namespaces = LazyNamespaces(refs, errors, with_sockets)
    host = next(r.id for r in refs.values() if r.kind == "host")
    return _envelope(namespaces, host, containers, _netdiag_networks(errors) + docker_nets, errors)


def _resolv_conf(ref: owners.NsRef) -> str | None:
    if ref.kind != "container" or not ref.pids:
        return None
    try:
        with open(f"/proc/{ref.container.get('pid') or ref.pids[0]}/root/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return None


def _netdiag_networks(errors: list[dict]) -> list[dict]:
    try:
        from runtime.networks import model
    except ImportError:
        return []
    out = []
    try:
        for n in model.bridges():
            cfg = model.ipam(n)
            out.append({"runtime": "netdiag", "id": n["Id"], "name": n["Name"], "driver": n["Driver"],
                        "subnet": cfg.get("Subnet", ""), "gateway": cfg.get("Gateway", ""), "internal": n["Internal"],
                        "options": n["Options"], "bridge": n["netdiag"].get("Bridge", ""),
                        "endpoints": {cid: {"name": e["Name"], "ip": e["IPv4Address"], "host_veth": e["HostVeth"]}
                                      for cid, e in n["Containers"].items()}})
    except Exception as e:  # noqa: BLE001
        errors.append({"what": "netdiag networks", "error": str(e)})
    return out


def _match_veths(namespaces: dict) -> None:
    """Pair each veth with its peer: the peer has our ifindex as its link, and we have its index.
    Several candidates (index collisions across namespaces) are settled by the kernel's nsid."""
    by_index: dict[int, list[tuple[str, dict]]] = {}
    for ns_id, ns in namespaces.items():
        for link in ns["links"]:
            if link["kind"] == "veth":
                by_index.setdefault(link["index"], []).append((ns_id, link))
    for ns_id, ns in namespaces.items():
        for link in ns["links"]:
            if link["kind"] != "veth" or link.get("link") is None:
                continue
            same_ns = link.get("link_netnsid") is None
            cands = [(other, peer) for other, peer in by_index.get(link["link"], [])
                     if peer.get("link") == link["index"] and (other == ns_id) == same_ns and peer is not link]
            if len(cands) > 1:
                cands = _by_nsid(namespaces, ns_id, link, cands)
            if len(cands) == 1:
                other, peer = cands[0]
                link["peer"] = {"ns": other, "index": peer["index"], "name": peer["name"]}
            else:
                link["peer"] = {"ns": None, "ambiguous": len(cands) > 1, "index": link["link"]}


def ns_path(ns: dict) -> str | None:
    """A path to open a snapshot namespace by, while it still exists: its ip netns name or a pid."""
    if ns.get("netns_names"):
        return f"/run/netns/{ns['netns_names'][0]}"
    if ns.get("pids"):
        return f"/proc/{ns['pids'][0]}/ns/net"
    return None


def _by_nsid(namespaces: dict, ns_id: str, link: dict, cands: list) -> list:
    """Ask the kernel, inside ns_id, which nsid each candidate namespace has."""
    from .rawlink import NsidQuery

    home = ns_path(namespaces[ns_id])
    hits = []
    try:
        with collect.inside(home), NsidQuery() as q:
            for other, peer in cands:
                path = ns_path(namespaces[other])
                if not path:
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    nsid = q.nsid(fd)
                finally:
                    os.close(fd)
                if nsid == link["link_netnsid"]:
                    hits.append((other, peer))
    except (OSError, TypeError):
        return cands
    return hits or cands
