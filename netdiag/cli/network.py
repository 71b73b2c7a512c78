"""`netdiag network ...`: Docker's network commands, with what Docker lacks (host veths, published ports)."""
from __future__ import annotations

from typing import List, Optional

import typer

from .app import app
from .output import for_each, inspected, listing

net_app = typer.Typer(help="Manage networks (bridge, overlay, host, none).", no_args_is_help=True, suggest_commands=False)
app.add_typer(net_app, name="network")


def _kv(items: List[str], what: str) -> dict:
    from runtime.errors import InvalidArgument

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"Invalid {what} {item!r}", "the form is KEY=VALUE", f"use e.g. --{what} key=value")
        out[key] = value
    return out


@net_app.command("create")
def create(
    name: str = typer.Argument(..., help="Network name"),
    driver: str = typer.Option("bridge", "-d", "--driver", help="Driver: bridge, or overlay (cluster-wide, VXLAN; needs 'netdiag cluster join')"),
    subnet: Optional[str] = typer.Option(None, "--subnet", help="Subnet in CIDR, e.g. 172.20.0.0/16 (default: a free pool)"),
    gateway: Optional[str] = typer.Option(None, "--gateway", help="Gateway address (default: the subnet's first host)"),
    ip_range: Optional[str] = typer.Option(None, "--ip-range", help="Allocate container addresses from this sub-range"),
    internal: bool = typer.Option(False, "--internal", help="No route out, no upstream DNS"),
    opt: List[str] = typer.Option([], "-o", "--opt", help="Driver option, e.g. com.docker.network.bridge.enable_icc=false"),
    label: List[str] = typer.Option([], "--label", help="Label KEY=VALUE"),
):
    """Create a network: a Linux bridge with its own subnet, firewall rules and DNS; or (-d overlay)
    a network shared by the cluster's hosts, its subnet, VNI and addresses allocated in etcd."""
    from runtime.api import networks

    net = networks.create(networks.NetworkSpec(name, driver, subnet or "", gateway or "", ip_range or "", internal,
                                               _kv(opt, "opt"), _kv(label, "label")))
    print(net["Id"])


@net_app.command("ls")
def ls(
    filter_: List[str] = typer.Option([], "-f", "--filter", help="name=..., driver=..., id=..., label=KEY[=VALUE]"),
    format: Optional[str] = typer.Option(None, "--format", help="'json' (a JSON object per line), 'table', or a Go template, e.g. '{{.Name}} {{.Driver}}'"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids"),
):
    """List networks."""
    from runtime.api import networks

    rows = [{"ID": n["Id"][:12], "Name": n["Name"], "Driver": n["Driver"], "Scope": n.get("Scope", "local"),
             "Subnet": networks.subnet(n), "Bridge": n["netdiag"].get("Bridge", ""),
             "Internal": n["Internal"], "IPv6": bool(n.get("EnableIPv6")), "CreatedAt": n.get("Created", ""),
             "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items()),
             "Containers": len(n["Containers"])} for n in networks.listing(filter_)]
    listing(rows, [("NETWORK ID", "ID"), ("NAME", "Name"), ("DRIVER", "Driver"), ("SCOPE", "Scope"), ("SUBNET", "Subnet"),
                   ("BRIDGE", "Bridge")], quiet=quiet, as_json=json_out, format_=format,
            headers={"Internal": "INTERNAL", "IPv6": "IPV6", "CreatedAt": "CREATED AT", "Labels": "LABELS", "Containers": "CONTAINERS"})


@net_app.command("inspect")
def inspect(
    networks: List[str] = typer.Argument(..., help="Network names or ids"),
    format_: Optional[str] = typer.Option(None, "-f", "--format", help="A Go template run on each network, e.g. '{{range .IPAM.Config}}{{.Subnet}}{{end}}'; 'json' for a JSON line each"),
):
    """Docker's JSON for networks, plus each endpoint's host-side veth and published ports."""
    from runtime.api import networks as api

    inspected(networks, api.inspect, format_)


@net_app.command("connect")
def connect(
    network: str = typer.Argument(..., help="Network name or id"),
    container: str = typer.Argument(..., help="Container name or id"),
    ip: Optional[str] = typer.Option(None, "--ip", help="Static IPv4 address"),
    alias: List[str] = typer.Option([], "--alias", help="Extra DNS name"),
):
    """Connect a container to a network (adds eth1, eth2... to a running container)."""
    from runtime.api import networks

    networks.connect(network, container, ip=ip, aliases=alias)


@net_app.command("disconnect")
def disconnect(
    network: str = typer.Argument(..., help="Network name or id"),
    container: str = typer.Argument(..., help="Container name or id"),
    force: bool = typer.Option(False, "-f", "--force", help="Accepted for Docker compatibility"),
):
    """Disconnect a container from a network (removes its interface)."""
    from runtime.api import networks

    networks.disconnect(network, container)


@net_app.command("rm")
def rm(
    networks: List[str] = typer.Argument(..., help="Network names or ids"),
    force: bool = typer.Option(False, "-f", "--force", help="Disconnect attached containers first"),
):
    """Remove networks (refused while containers are attached, unless -f)."""
    from runtime.api import networks as api

    for_each(networks, lambda ref: ref, lambda ref: api.remove(ref, force=force))


@net_app.command("prune")
def prune(force: bool = typer.Option(False, "-f", "--force", help="Do not ask (prune never removes networks in use)")):
    """Remove user-defined networks that no container uses."""
    from runtime.api import networks

    removed = networks.prune()
    print("Deleted Networks:")
    for name in removed:
        print(name)
