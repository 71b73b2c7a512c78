"""Kernel objects made from a description (a replayed snapshot), not on the run path: bridges and
VXLAN devices with given MACs, link settings, routes and policy rules of any table and type,
permanent neighbours, VXLAN FDB entries. Through pyroute2 (off every hot path). Everything acts in
the calling thread's network namespace; names and addresses are validated by the caller."""
from __future__ import annotations

import errno
import socket

ROUTE_TYPES = {"unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5, "blackhole": 6,
               "unreachable": 7, "prohibit": 8, "throw": 9}
SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
NUD_PERMANENT, RTNH_F_ONLINK = 0x80, 4


def _ipr():
    from pyroute2 import IPRoute

    return IPRoute()


def _index(r, name: str) -> int:
    found = r.link_lookup(ifname=name)
    if not found:
        raise OSError(errno.ENODEV, f"no interface {name}")
    return found[0]


def create_bridge(name: str, mtu: int | None = None, mac: str | None = None) -> None:
    with _ipr() as r:
        r.link("add", ifname=name, kind="bridge", **_opt(mtu=mtu, address=mac))


def create_vxlan(name: str, vni: int, port: int, local: str | None = None, dev: str | None = None,
                 learning: bool = False, mtu: int | None = None, mac: str | None = None) -> None:
    with _ipr() as r:
        extra = _opt(vxlan_local=local, mtu=mtu, address=mac, vxlan_link=_index(r, dev) if dev else None)
        r.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=port, vxlan_learning=int(learning), **extra)


def configure(name: str, *, mac: str | None = None, mtu: int | None = None, master: str | None = None,
              up: bool | None = None) -> None:
    """Set what is given: MAC, MTU, master (by name), admin state."""
    with _ipr() as r:
        idx = _index(r, name)
        extra = _opt(address=mac, mtu=mtu, master=_index(r, master) if master else None,
                     state=None if up is None else ("up" if up else "down"))
        if extra:
            r.link("set", index=idx, **extra)


def set_port(name: str, *, hairpin: bool, isolated: bool) -> None:
    """Bridge port flags (the port must be enslaved)."""
    with _ipr() as r:
        r.brport("set", index=_index(r, name), mode=int(hairpin), isolated=int(isolated))


def _route_args(r, route: dict) -> dict:
    dst = route["dst"]
    args = {"table": route["table"], "type": ROUTE_TYPES[route["type"]], "scope": SCOPES[route.get("scope") or "global"],
            "dst_len": 0 if dst == "default" else int(dst.split("/")[1]), "family": socket.AF_INET}
    if dst != "default":
        args["dst"] = dst.split("/")[0]
    args.update(_opt(gateway=route.get("gateway"), prefsrc=route.get("prefsrc"), priority=route.get("metric") or None,
                     oif=_index(r, route["dev"]) if route.get("dev") else None))
    return args


def add_route(route: dict) -> None:
    """A route as the snapshot describes it (dst "default" or "a.b.c.d/len", dev by name)."""
    with _ipr() as r:
        args = {**_route_args(r, route), "proto": route.get("proto") or 3}
        try:
            r.route("add", **args)
        except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError
            if getattr(e, "code", None) != errno.ENETUNREACH or not route.get("gateway"):
                raise
            r.route("add", flags=RTNH_F_ONLINK, **args)  # the gateway was reachable only because someone said so


def delete_route(route: dict) -> None:
    with _ipr() as r:
        r.route("del", **_route_args(r, route))


def _rule_args(rule: dict) -> dict:
    args = {"family": socket.AF_INET, "priority": rule["priority"], "table": rule["table"], "action": rule["action"]}
    for key in ("src", "dst"):
        if rule.get(key):
            args[key], args[f"{key}_len"] = rule[key].split("/")[0], int(rule[key].split("/")[1])
    return {**args, **_opt(iifname=rule.get("iif"), oifname=rule.get("oif"), fwmark=rule.get("fwmark"))}


def add_rule(rule: dict) -> None:
    with _ipr() as r:
        r.rule("add", **_rule_args(rule))


def delete_rule(rule: dict) -> None:
    with _ipr() as r:
        r.rule("del", **_rule_args(rule))


def add_neighbour(dev: str, address: str, lladdr: str) -> None:
    with _ipr() as r:
        r.neigh("add", ifindex=_index(r, dev), dst=address, lladdr=lladdr, state=NUD_PERMANENT)


def append_fdb(dev: str, lladdr: str, dst: str, vni: int | None = None) -> None:
    """A VXLAN forwarding entry: frames for `lladdr` (00:..:00 = every unknown one) go to VTEP `dst`."""
    with _ipr() as r:
        r.fdb("append", ifindex=_index(r, dev), lladdr=lladdr, dst=dst, **_opt(vni=vni))


def _opt(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}
