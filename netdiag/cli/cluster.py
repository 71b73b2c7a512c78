"""`netdiag cluster join|ls|leave`: hosts that share overlay networks through etcd."""
from __future__ import annotations

from typing import Optional

import typer

from .app import app
from .output import json_lines, table

cluster_app = typer.Typer(help="Join hosts into a cluster for overlay networks (state in etcd).", no_args_is_help=True, suggest_commands=False)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("join")
def join(
    store: Optional[str] = typer.Option(None, "--store", help="etcd://HOST:2379[,HOST2:2379] (default: $NETDIAG_CLUSTER_STORE)"),
    advertise: Optional[str] = typer.Option(None, "--advertise", help="This host's VTEP address (default: the source address towards the store)"),
    name: Optional[str] = typer.Option(None, "--name", help="This host's name in the cluster (default: its hostname)"),
):
    """Join the cluster: a membership lease kept alive by this host's agent, which programs the
    overlay networks' VXLAN forwarding from the store. The advertised address is checked: it must
    be this host's, and every member must reach it (TCP 7946)."""
    from runtime.api import cluster

    rec = cluster.join(store, advertise, name)
    print(f"joined {rec['store']} as {rec['name']} (host {rec['host']}, VTEP {rec['vtep']} on {rec['underlay']}, "
          f"underlay MTU {rec['mtu']})")


@cluster_app.command("ls")
def ls(json_out: bool = typer.Option(False, "--json", help="One JSON object per member")):
    """Members: name, VTEP address, lease (seconds left of its TTL), age, endpoints."""
    from runtime.api import cluster

    rows = cluster.members()
    if json_out:
        json_lines(rows)
        return
    table(["HOST ID", "NAME", "VTEP", "LEASE", "AGE", "ENDPOINTS"],
          [[m["id"][:12] + (" *" if m["self"] else ""), m["name"], m["vtep"],
            f"{m['lease_left']}/{m['lease_ttl']}s" if m["lease_left"] is not None else "-",
            f"{m['age']}s" if m["age"] is not None else "-", str(m["endpoints"])] for m in rows])


@cluster_app.command("leave")
def leave(force: bool = typer.Option(False, "-f", "--force", help="Also when containers here are on overlay networks (they lose them)")):
    """Leave the cluster: the agent ends its lease, so this host and its endpoints disappear from
    the others at once; this host's overlay sandboxes and VXLAN firewall guard go."""
    from runtime.api import cluster

    cluster.leave(force)
    print("left the cluster")
