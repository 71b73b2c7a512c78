"""What a trace killed with SIGKILL can leave, found and removed (`netdiag system prune`)."""
from __future__ import annotations


def prune_leftovers() -> list[str]:
    """nftables trace tables of traces whose owner is gone (in any namespace a trace may have
    used: the host, netdiag's containers, ip netns namespaces) and their private tracefs
    instances; what was removed."""
    import os

    from runtime import records

    from . import live, nftrace
    from .tracers import instance_owner_gone

    paths = [None] + [f"/proc/{c['pid']}/ns/net" for c in records.containers()]
    if os.path.isdir("/run/netns"):
        paths += [f"/run/netns/{n}" for n in sorted(os.listdir("/run/netns"))]
    out = [f"trace table {t}" for t in nftrace.prune(paths)]
    try:
        for name in live.list_instances():
            if instance_owner_gone(name):
                live.remove_instance(name)
                out.append(f"tracefs instance {name}")
    except OSError:
        pass  # no tracefs here: nothing can be left in it
    return out
