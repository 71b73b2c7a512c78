"""Removing a stopped container: its endpoints, cgroups and record (used by rm, prune, a failed
run, and the monitor of an --rm container)."""
from __future__ import annotations

from . import cgroups, container_records, endpoints


def remove_stopped(c: container_records.Container) -> None:
    """Remove everything a stopped container owns. Idempotent: missing pieces are fine."""
    endpoints.detach_all(c)
    if c.broken:  # its config, and so the list of its networks, may be lost: find endpoints by id
        from ..networks import drivers, network_records as nets

        for net in nets.attachable():
            if c.id in net["Containers"]:
                drivers.of(net).detach(net, c.id)
    cgroups.remove(c.id)
    container_records.delete_record(c)
    if (c.config.get("HostConfig") or {}).get("AutoRemove"):  # Docker's --rm takes its anonymous volumes along
        from .volumes import remove_anonymous

        remove_anonymous(c)
