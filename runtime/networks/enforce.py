"""Enforce the firewall the network records imply: netdiag's own tables (derived from the records,
written in one transaction), and Docker's DOCKER-USER accepting netdiag's bridges.

The rules are a pure function of the records (and, on a cluster member, of the members' VTEPs the
agent mirrors from the store), so "apply" after any change, and "reconcile" on the next command
after someone flushed them, are the same operation.
"""
from __future__ import annotations

from . import network_records


def desired():
    from .firewall import NetSpec, PortSpec

    nets, ports = [], []
    for n in network_records.bridges():
        cfg = network_records.ipam(n)
        bridge = n["netdiag"]["Bridge"]
        nets.append(NetSpec(
            id=n["Id"], bridge=bridge, subnet=cfg["Subnet"], gateway=cfg["Gateway"], internal=bool(n["Internal"]),
            icc=network_records.flag(n, network_records.OPT_ICC), masquerade=network_records.flag(n, network_records.OPT_MASQ),
            ports=tuple(sorted(e["HostVeth"] for e in n["Containers"].values())),
        ))
        for cid, e in sorted(n["Containers"].items()):
            for p in e.get("Ports", []):
                ports.append(PortSpec(proto=p["proto"], host_ip=p["host_ip"], host_start=p["host_start"],
                                      host_end=p["host_end"], ctr_ip=e["IPv4Address"].split("/")[0],
                                      ctr_start=p["ctr_start"], ctr_end=p["ctr_end"], bridge=bridge, container=cid))
    return nets, ports


def _listing() -> str:
    """The kernel's text listing of netdiag's tables (about half a millisecond; no counters in them)."""
    from ..kernel import nft
    from ..errors import KernelError

    try:
        return nft.run("list table ip netdiag") + nft.run("list table bridge netdiag")
    except KernelError:
        return ""


def _stamp_path():
    return network_records.nets_dir() / ".firewall.json"


def apply(force: bool = False) -> bool:
    """Make the kernel's netdiag tables match the records. A full rewrite costs ~15 ms, so it is
    skipped when the script is the one last applied and the kernel still lists exactly what it did
    then; anything else (a change, a flush, a deleted table) rewrites. True if it wrote."""
    import hashlib

    from .. import state
    from . import firewall

    nets, ports = desired()
    vteps = _vteps()
    _coexist([n.bridge for n in nets] + [n["netdiag"]["Bridge"] for n in network_records.overlays()])
    if not nets and not vteps:
        firewall.remove()
        _stamp_path().unlink(missing_ok=True)
        return True
    digest = hashlib.sha256(firewall.render(nets, ports, vteps).encode()).hexdigest()
    try:
        stamp = state.read_json(_stamp_path(), {}, expect=dict)
    except state.CorruptRecord:  # only a cache of what was applied last: rewrite
        stamp = {}
    if not force and stamp.get("digest") == digest and stamp.get("listing") == _listing():
        return False
    firewall.apply(nets, ports, vteps)
    state.write_json(_stamp_path(), {"digest": digest, "listing": _listing()})
    return True


def _vteps() -> list[str]:
    """The cluster members' VTEPs when this host is one (the agent mirrors them from the store)."""
    from ..cluster import local

    return local.vteps() if local.member() is not None else []


def _coexist(bridges: list[str]) -> None:
    """Keep Docker's DOCKER-USER accepting our bridges (after a Docker restart or a firewall reload
    too): another manager's drop policy must not silently kill netdiag's networks."""
    import socket
    import sys

    from . import foreign

    links = {name for _, name in socket.if_nameindex()}
    for note in foreign.sync(bridges, links):
        print(f"netdiag: note: {note}.", file=sys.stderr)


def warn_blocked(bridge: str, network: str) -> None:
    """Where no DOCKER-USER exists but another table drops forwarded traffic, say what fixes it."""
    import sys

    from . import foreign

    for b in foreign.blocking_policies(bridge):
        print(f"netdiag: warning: {b['table']} {b['chain']} ({b['what']}) drops the forwarded traffic of network "
              f"{network} (bridge {bridge}), and netdiag does not edit other managers' tables; "
              f"to let it through: {b['fix']}", file=sys.stderr)
