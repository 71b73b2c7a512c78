"""`netdiag network ...`: Docker's network commands, with what Docker lacks (host veths, published ports)."""
from __future__ import annotations

from typing import List, Optional

import typer

from .app import app
from .output import for_each, listing, print_json

net_app = typer.Typer(help="Manage networks (bridge, overlay, host, none).", no_args_is_help=True)
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


def _prepare(cluster: bool = True, reconcile: bool = True):
    """The built-in records, on a cluster member the overlay networks mirrored from the store (a
    warning, not an error, when it is away), and for a command that changes networks netdiag's
    rules rewritten as a whole. Reading commands (ls, inspect) never touch the firewall: a
    diagnosis must find the host as it is (`netdiag system repair` restores the rules on purpose)."""
    import sys

    from runtime.networks import bridge, enforce, model

    model.ensure_builtin_records()
    if cluster:
        from runtime.cluster import local

        if local.member() is not None:
            from runtime.errors import NetdiagError
            from runtime.networks import overlay

            try:
                for note in overlay.refresh():
                    print(f"netdiag: note: {note}", file=sys.stderr)
            except NetdiagError as e:
                print(f"netdiag: warning: overlay networks are shown as this host last saw them: {e}", file=sys.stderr)
    if reconcile and (model.bridges() or model.overlays()):
        enforce.apply()  # restores netdiag's rules (and its DOCKER-USER accepts) if something removed them
    return bridge, model


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
    from runtime.errors import InvalidArgument
    from runtime.kernel.syscalls import require_root

    require_root("create a network")
    if driver == "overlay":
        from runtime.networks import overlay

        if ip_range or internal:
            raise InvalidArgument("--ip-range and --internal are not supported on overlay networks", "", "drop them")
        _prepare(cluster=False)
        net = overlay.create(name, subnet=subnet or "", gateway=gateway or "", options=_kv(opt, "opt"), labels=_kv(label, "label"))
        print(net["Id"])
        return
    if driver != "bridge":
        raise InvalidArgument(f"Unknown network driver {driver!r}", "this runtime creates bridge and overlay networks", "use -d bridge or -d overlay")
    bridge, _ = _prepare()
    net = bridge.create(name, subnet=subnet or "", gateway=gateway or "", ip_range=ip_range or "", internal=internal,
                        options=_kv(opt, "opt"), labels=_kv(label, "label"))
    print(net["Id"])


@net_app.command("ls")
def ls(
    filter_: List[str] = typer.Option([], "-f", "--filter", help="name=..., driver=..., id=..., label=KEY[=VALUE]"),
    format: Optional[str] = typer.Option(None, "--format", help="'json' for one JSON object per line"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids"),
):
    """List networks."""
    _, model = _prepare(reconcile=False)
    rows = []
    for n in model.list_all():
        if not _matches(n, filter_):
            continue
        rows.append({"ID": n["Id"][:12], "Name": n["Name"], "Driver": n["Driver"], "Scope": n.get("Scope", "local"),
                     "Subnet": model.ipam(n).get("Subnet", ""), "Bridge": n["netdiag"].get("Bridge", ""),
                     "Internal": n["Internal"], "Containers": len(n["Containers"])})
    listing(rows, [("NETWORK ID", "ID"), ("NAME", "Name"), ("DRIVER", "Driver"), ("SCOPE", "Scope"), ("SUBNET", "Subnet"),
                   ("BRIDGE", "Bridge")], quiet=quiet, as_json=json_out or format == "json")


def _matches(n: dict, filters: List[str]) -> bool:
    from runtime.errors import InvalidArgument

    for f in filters:
        key, _, value = f.partition("=")
        if key == "name":
            ok = value in n["Name"]
        elif key == "driver":
            ok = n["Driver"] == value
        elif key == "id":
            ok = n["Id"].startswith(value)
        elif key == "label":
            k, sep, v = value.partition("=")
            ok = k in n["Labels"] and (not sep or n["Labels"][k] == v)
        else:
            raise InvalidArgument(f"Unknown filter {key!r}", "filters are name, driver, id and label", "use e.g. -f name=back")
        if not ok:
            return False
    return True


@net_app.command("inspect")
def inspect(networks: List[str] = typer.Argument(..., help="Network names or ids")):
    """Docker's JSON for networks, plus each endpoint's host-side veth and published ports."""
    _, model = _prepare(reconcile=False)
    out = []
    for ref in networks:
        n = model.get(ref)
        view = {k: v for k, v in n.items() if k != "netdiag"}
        view["Containers"] = {cid: {k: e[k] for k in ("Name", "EndpointID", "MacAddress", "IPv4Address", "IPv6Address",
                                                      "HostVeth", "Interface", "Aliases", "Ports") if k in e}
                              for cid, e in n["Containers"].items()}
        view["Bridge"] = n["netdiag"].get("Bridge", "")
        if n["Driver"] == "overlay":
            from runtime.networks import overlay

            view.update(overlay.inspect(n))
        elif view["Bridge"]:  # what Docker never shows: other managers' rules that decide this network's traffic
            from runtime.networks import foreign

            view["ForeignRules"] = foreign.affecting(view["Bridge"])
        out.append(view)
    print_json(out)


@net_app.command("connect")
def connect(
    network: str = typer.Argument(..., help="Network name or id"),
    container: str = typer.Argument(..., help="Container name or id"),
    ip: Optional[str] = typer.Option(None, "--ip", help="Static IPv4 address"),
    alias: List[str] = typer.Option([], "--alias", help="Extra DNS name"),
):
    """Connect a container to a network (adds eth1, eth2... to a running container)."""
    from runtime.containers import endpoints, model as cmodel
    from runtime.kernel.syscalls import require_root

    require_root("connect a container")
    _, model = _prepare()
    net = model.get(network)
    endpoints.connect(cmodel.get(container), net["Name"], ip, list(alias))


@net_app.command("disconnect")
def disconnect(
    network: str = typer.Argument(..., help="Network name or id"),
    container: str = typer.Argument(..., help="Container name or id"),
    force: bool = typer.Option(False, "-f", "--force", help="Accepted for Docker compatibility"),
):
    """Disconnect a container from a network (removes its interface)."""
    from runtime.containers import endpoints, model as cmodel
    from runtime.kernel.syscalls import require_root

    require_root("disconnect a container")
    _, model = _prepare()
    endpoints.disconnect(cmodel.get(container), model.get(network)["Name"])


@net_app.command("rm")
def rm(
    networks: List[str] = typer.Argument(..., help="Network names or ids"),
    force: bool = typer.Option(False, "-f", "--force", help="Disconnect attached containers first"),
):
    """Remove networks (refused while containers are attached, unless -f)."""
    from runtime.errors import Conflict
    from runtime.kernel.syscalls import require_root

    require_root("remove a network")
    bridge, model = _prepare()

    def remove(n: dict) -> None:
        if n["Name"] in model.BUILTIN:
            raise Conflict(f"{n['Name']} is a pre-defined network and cannot be removed", "", "")
        if force:  # disconnect for real: the containers forget the network, so it can be connected again
            from runtime.containers import endpoints, model as cmodel

            from runtime.errors import NetdiagError

            for cid in list(n["Containers"]):
                try:
                    endpoints.disconnect(cmodel.get(cid), n["Name"])
                except NetdiagError:  # a container record that is gone or unreadable: its endpoint goes below
                    continue
            n = model.get(n["Id"])
        if n["Driver"] == "overlay":
            from runtime.networks import overlay

            overlay.delete(n, force=force)
        else:
            bridge.delete(n, force=force)

    for_each(networks, model.get, remove)


@net_app.command("prune")
def prune(force: bool = typer.Option(False, "-f", "--force", help="Do not ask (prune never removes networks in use)")):
    """Remove user-defined networks that no container uses."""
    from runtime.kernel.syscalls import require_root

    require_root("prune networks")
    bridge, model = _prepare()
    print("Deleted Networks:")
    for n in model.bridges():
        if n["Name"] not in model.BUILTIN and not n["Containers"]:
            bridge.delete(n)
            print(n["Name"])
