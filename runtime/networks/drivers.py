"""The network drivers behind one protocol (CNI's plugin dispatch; libnetwork's driver API).

`bridge` and `overlay` make networks and endpoints; `cni` (networks/cni) records a CNI conflist as
`cni:NAME` and makes endpoints by running its plugins; `host` and `null` are the built-in networks a
container joins without an endpoint of its own (`ensure_builtin_records`), so nothing creates
another one (Docker: "only one instance of host network is allowed").
"""
from __future__ import annotations

from typing import Protocol

from ..errors import Conflict, InvalidArgument, NetdiagError


class Driver(Protocol):
    """What every network driver module provides."""

    def create(self, name: str, *, subnet: str = "", gateway: str = "", ip_range: str = "", internal: bool = False,
               options: dict | None = None, labels: dict | None = None) -> dict: ...

    def delete(self, net: dict, force: bool = False, keep_link: bool = False) -> None: ...

    def attach(self, net: dict, container: dict, netns_path: str, ifname: str, *, ip: str | None = None,
               aliases: list[str] = (), default_route: bool = True, publish: list[dict] = ()) -> dict: ...

    def detach(self, net: dict, cid: str) -> None: ...


def named(driver: str) -> Driver:
    """The driver that creates networks of kind `driver` (`network create -d DRIVER`)."""
    if driver == "bridge":
        from . import bridge

        return bridge
    if driver == "overlay":
        from . import overlay

        return overlay
    if driver == "cni":
        from .cni import driver as cni

        return cni
    if driver in ("host", "null", "none"):
        raise Conflict(f"Only one instance of the {driver!r} network is allowed", "it is a built-in network every host has",
                       f"use it with 'netdiag run --network {'none' if driver == 'null' else driver} ...'")
    raise InvalidArgument(f"Unknown network driver {driver!r}", "this runtime creates bridge and overlay networks, "
                          "and records CNI conflists", "use -d bridge, -d overlay or -d cni")


def of(net: dict) -> Driver:
    """The driver that manages an existing network's endpoints."""
    if net["Driver"] in ("bridge", "overlay", "cni"):
        return named(net["Driver"])
    raise NetdiagError(f"Network {net['Name']} has no endpoints to manage", f"it is a {net['Driver']} network", "")
