"""Network actions (Docker's `network create|rm|prune|connect|disconnect|ls|inspect`).

Commands that change networks first restore the built-in records and rewrite netdiag's firewall
as a whole (something may have flushed it); reading commands never touch the firewall, so a
diagnosis finds the host as it is. On a cluster member the overlay networks are mirrored from the
store first (a warning, not an error, when the store is away).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Conflict, InvalidArgument, NetdiagError
from . import note, require_root


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    driver: str = "bridge"
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    options: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)


def _prepare(*, cluster: bool = True, reconcile: bool = True) -> None:
    from ..networks import enforce, network_records

    network_records.ensure_builtin_records()
    if cluster:
        from ..cluster import local

        if local.member() is not None:
            from ..networks import overlay

            try:
                for text in overlay.refresh():
                    note(text)
            except NetdiagError as e:
                note(f"overlay networks are shown as this host last saw them: {e}", "warning")
    if reconcile and (network_records.bridges() or network_records.overlays()):
        enforce.apply()  # restores netdiag's rules (and its DOCKER-USER accepts) if something removed them



def create(spec: NetworkSpec) -> dict:
    """A network of spec.driver; its record (Docker's network JSON)."""
    from ..networks import drivers

    require_root("create a network")
    driver = drivers.named(spec.driver)
    _prepare(cluster=spec.driver != "overlay")  # a bridge must not take an overlay's subnet
    return driver.create(spec.name, subnet=spec.subnet, gateway=spec.gateway, ip_range=spec.ip_range,
                         internal=spec.internal, options=dict(spec.options), labels=dict(spec.labels))


def get(ref: str) -> dict:
    from ..networks import network_records

    return network_records.get(ref)


def subnet(net: dict) -> str:
    from ..networks.network_records import ipam

    return ipam(net).get("Subnet", "")


def listing(filters: list[str] = ()) -> list[dict]:
    """Network records matching every filter (name=, driver=, id=, label=KEY[=VALUE])."""
    from ..networks import network_records

    checks = [_filter(f) for f in filters]  # every filter is checked before anything is listed
    _prepare(reconcile=False)
    return [n for n in network_records.list_all() if all(ok(n) for ok in checks)]


def _filter(text: str):
    key, _, value = text.partition("=")
    if key == "name":
        return lambda n: value in n["Name"]
    if key == "driver":
        return lambda n: n["Driver"] == value
    if key == "id":
        return lambda n: n["Id"].startswith(value)
    if key == "label":
        k, sep, v = value.partition("=")
        return lambda n: k in n["Labels"] and (not sep or n["Labels"][k] == v)
    raise InvalidArgument(f"Unknown filter {key!r}", "filters are name, driver, id and label", "use e.g. -f name=back")


def inspect(ref: str) -> dict:
    """Docker's JSON for a network, plus each endpoint's host-side veth and published ports, and
    what Docker never shows: the overlay's peers, or other managers' rules that decide a bridge's
    traffic."""
    from ..networks import network_records

    _prepare(reconcile=False)
    n = network_records.get(ref)
    view = {k: v for k, v in n.items() if k != "netdiag"}
    view["Containers"] = {cid: {k: e[k] for k in ("Name", "EndpointID", "MacAddress", "IPv4Address", "IPv6Address",
                                                  "HostVeth", "Interface", "Aliases", "Ports") if k in e}
                          for cid, e in n["Containers"].items()}
    view["Bridge"] = n["netdiag"].get("Bridge", "")
    if n["Driver"] == "overlay":
        from ..networks import overlay

        view.update(overlay.inspect(n))
    elif n["Driver"] == "cni":
        from ..networks.cni import driver as cni

        view.update(cni.inspect(n))
    elif view["Bridge"]:
        from ..networks import foreign

        view["ForeignRules"] = foreign.affecting(view["Bridge"])
    return view


def connect(network: str, container: str, *, ip: str | None = None, aliases: list[str] = ()) -> None:
    from ..containers import container_records, endpoints
    from ..networks import network_records

    require_root("connect a container")
    _prepare()
    endpoints.connect(container_records.get(container), network_records.get(network)["Name"], ip, list(aliases))


def disconnect(network: str, container: str) -> None:
    from ..containers import container_records, endpoints
    from ..networks import network_records

    require_root("disconnect a container")
    _prepare()
    endpoints.disconnect(container_records.get(container), network_records.get(network)["Name"])


def remove(ref: str, *, force: bool = False) -> str:
    """Remove a network (refused while containers are attached, unless force: they are then
    disconnected for real, so they forget it); its name."""
    from ..containers import container_records, endpoints
    from ..networks import drivers, network_records

    require_root("remove a network")
    _prepare()
    n = network_records.get(ref)
    if n["Name"] in network_records.BUILTIN:
        raise Conflict(f"{n['Name']} is a pre-defined network and cannot be removed", "", "")
    if force:
        for cid in list(n["Containers"]):
            try:
                endpoints.disconnect(container_records.get(cid), n["Name"])
            except NetdiagError:  # a container record that is gone or unreadable: its endpoint goes below
                continue
        n = network_records.get(n["Id"])
    drivers.of(n).delete(n, force=force)
    return n["Name"]


def prune(*, unreadable: bool = False) -> list[str]:
    """Remove the user-defined bridge networks (and records of CNI conflists) no container uses,
    like Docker; with `unreadable` (system prune) also networks whose record is unusable, with their
    bridge. Their names."""
    from ..networks import bridge, drivers, network_records

    require_root("prune networks")
    _prepare()
    removed = []
    for net in network_records.list_all():
        if net["Driver"] == network_records.UNREADABLE and unreadable:
            bridge.delete(net, force=True)
            removed.append(f"{net['Name']} (unusable record)")
        elif net["Driver"] in ("bridge", "cni") and net["Name"] not in network_records.BUILTIN and not net["Containers"]:
            drivers.of(net).delete(net)
            removed.append(net["Name"])
    return removed


def repair() -> list[str]:
    """Rewrite netdiag's firewall from its records (as dockerd does when it starts); the names of
    the networks whose rules were rewritten."""
    from ..networks import enforce, network_records

    require_root("rewrite netdiag's firewall rules")
    network_records.ensure_builtin_records()
    nets = network_records.bridges() + network_records.overlays()
    enforce.apply()
    return [n["Name"] for n in nets]
