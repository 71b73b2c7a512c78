"""Derive netdiag's whole firewall from the network records and write it in one transaction.

The rules are a pure function of the records, so "apply" after any change, and "reconcile" on
the next command after someone flushed them, are the same operation.
"""
from __future__ import annotations

from . import model


def desired():
    from .firewall import NetSpec, PortSpec

    nets, ports = [], []
    for n in model.bridges():
        cfg = model.ipam(n)
        bridge = n["netdiag"]["Bridge"]
        nets.append(NetSpec(
            id=n["Id"], bridge=bridge, subnet=cfg["Subnet"], gateway=cfg["Gateway"], internal=bool(n["Internal"]),
            icc=model.flag(n, model.OPT_ICC), masquerade=model.flag(n, model.OPT_MASQ),
            ports=tuple(sorted(e["HostVeth"] for e in n["Containers"].values())),
        ))
        for cid, e in sorted(n["Containers"].items()):
            for p in e.get("Ports", []):
                ports.append(PortSpec(proto=p["proto"], host_ip=p["host_ip"], host_start=p["host_start"],
                                      host_end=p["host_end"], ctr_ip=e["IPv4Address"].split("/")[0],
                                      ctr_start=p["ctr_start"], ctr_end=p["ctr_end"], bridge=bridge, container=cid))
    return nets, ports


def apply() -> None:
    from . import firewall

    nets, ports = desired()
    if nets:
        firewall.apply(nets, ports)
    else:
        firewall.remove()


def reconcile() -> bool:
    """Restore netdiag's rules if something else flushed or changed them. True if it had to."""
    from . import firewall

    nets, ports = desired()
    if not nets:
        return False
    if firewall.in_sync(nets, ports):
        return False
    firewall.apply(nets, ports)
    return True
