"""The host as one document: every namespace (read lazily, or all of them), who owns it, and the
runtimes' networks and containers. Plain JSON (a versioned snapshot, schemas/snapshot.schema.json)
that can be saved, loaded elsewhere and reasoned over offline without root."""
from __future__ import annotations

import platform
from datetime import datetime, timezone

from ..snapshot_model import Model
from ..schemas import SNAPSHOT as SCHEMA
from . import discover


def _envelope(namespaces, host_id: str, containers: list, networks: list, errors: list, cluster: dict | None = None) -> dict:
    return {
        "schema": SCHEMA,
        "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "hostname": platform.node(), "kernel": platform.release(), "boot_id": _boot_id(),
        "host": host_id, "namespaces": namespaces, "containers": containers, "networks": networks, "errors": errors,
        "cluster": cluster,
    }


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _cluster(errors: list[dict]) -> dict | None:
    """The overlay cluster's view (members, networks, endpoints) when this host is a member."""
    from runtime import records

    try:
        return records.cluster()
    except Exception as e:  # noqa: BLE001 - the store being away must not hide the host
        errors.append({"what": "the cluster store", "error": str(e)})
        return None


def build(*, with_sockets: bool = True) -> dict:
    """Observe every namespace now: the whole host in one JSON document (with the connection
    table, which live diagnoses do not read)."""
    snap = live(with_sockets=with_sockets, conntrack=True)
    return {**snap, "namespaces": snap["namespaces"].materialize()}


def live(*, with_sockets: bool = True, conntrack: bool = False) -> dict:
    """The same document, but each namespace is read only when something asks for it: a trace or an
    inspect touches a handful of namespaces, not every one on a host with hundreds."""
    from .namespaces import LazyNamespaces

    errors: list[dict] = []
    refs, containers, docker_nets = discover.discover(errors)
    cluster = _cluster(errors)
    namespaces = LazyNamespaces(refs, errors, with_sockets, conntrack=conntrack, remote_names=_remote_names(cluster))
    host = next(r.id for r in refs.values() if r.kind == "host")
    return _envelope(namespaces, host, containers, _netdiag_networks(errors) + docker_nets, errors, cluster)


def _remote_names(cluster: dict | None) -> dict[str, str]:
    """Address -> "NAME (container on HOST)" for the overlay endpoints of other members."""
    if not cluster:
        return {}
    hosts = {h["id"]: h.get("name") or h["id"][:12] for h in cluster["hosts"]}
    return {e["ip"]: f"{e['name']} (container on {hosts.get(e['host'], e['host'][:12])})"
            for e in cluster["endpoints"] if e["host"] != cluster["host"]}


def _netdiag_networks(errors: list[dict]) -> list[dict]:
    from runtime import records

    try:
        return records.networks()
    except Exception as e:  # noqa: BLE001 - a broken state dir must not hide the rest
        errors.append({"what": "netdiag networks", "error": str(e)})
        return []


def live_model(*, conntrack: bool = False) -> Model:
    """The live host as a Model, each namespace read when first needed."""
    return Model(live(conntrack=conntrack))


def model_of(snapshot: str | list[str] | None = None, *, conntrack: bool = False) -> Model:
    """The one way every command gets its model: snapshot file(s) (several: a cluster's hosts,
    merged), validated before use, or else the live host."""
    if snapshot:
        return Model.load(snapshot)
    return live_model(conntrack=conntrack)
