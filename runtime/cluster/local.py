"""This host's membership, as its own state: NETDIAG_ROOT/cluster/member.json, written by `cluster
join` and the agent (its pid, its current lease), removed by `cluster leave`; and the VTEPs of the
other members (peers.json), which the agent mirrors from the store for the firewall guard."""
from __future__ import annotations

from pathlib import Path

from .. import paths, state
from ..errors import NetdiagError


def directory() -> Path:
    return paths.root() / "cluster"


def member_path() -> Path:
    return directory() / "member.json"


def peers_path() -> Path:
    return directory() / "peers.json"


def member() -> dict | None:
    """The membership record, or None when this host has not joined."""
    try:
        return state.read_json(member_path(), expect=dict)
    except state.CorruptRecord:
        return None


def save(record: dict) -> None:
    state.write_json(member_path(), record)


def update(**changes) -> dict:
    with state.locked("cluster"):
        rec = member() or {}
        rec.update(changes)
        save(rec)
        return rec


def require() -> dict:
    """The membership record of a joined host whose agent holds a lease; a clear error otherwise."""
    from ..kernel.syscalls import pid_alive

    rec = member()
    if rec is None:
        raise NetdiagError("This host is not a cluster member", "overlay networks live in the cluster store",
                           "join first: netdiag cluster join --store etcd://HOST:2379")
    if not rec.get("lease") or not pid_alive(int(rec.get("agent_pid") or 0), rec.get("agent_start")):
        raise NetdiagError("This host's cluster agent is not running", "its membership lease is not kept alive",
                           "run 'netdiag cluster join' again (with the same --store)")
    return rec


def vteps() -> list[str]:
    """Every member's VTEP address, this host's included (the firewall's allowed VXLAN sources)."""
    try:
        data = state.read_json(peers_path(), {}, expect=dict)
    except state.CorruptRecord:
        return []
    return sorted({h["vtep"] for h in data.get("hosts", []) if isinstance(h, dict) and isinstance(h.get("vtep"), str)})


def save_peers(hosts: list[dict]) -> bool:
    """Write the members' list; True when it changed."""
    try:
        old = state.read_json(peers_path(), {}, expect=dict)
    except state.CorruptRecord:
        old = {}
    new = {"hosts": sorted(hosts, key=lambda h: h.get("id", ""))}
    if old == new:
        return False
    state.write_json(peers_path(), new)
    return True
