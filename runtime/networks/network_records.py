"""Network records: NETDIAG_ROOT/networks/<id>.json, with Docker's field names.

A record holds the network's config (IPAM, options, labels) and its endpoints under "Containers",
plus netdiag's own facts under "netdiag" (bridge device, resolver pid). Endpoint changes happen
under the network's lock, so parallel `run`s never hand out one address twice.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from collections.abc import Iterator

from .. import paths, state
from ..errors import Conflict, InvalidArgument, NotFound

BUILTIN = ("bridge", "host", "none")
DEFAULT_NAME = "bridge"  # the default bridge network (docker0)
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
KNOWN_OPTS = (OPT_BRIDGE_NAME, OPT_MTU, OPT_ICC, OPT_MASQ, "com.docker.network.bridge.default_bridge")
OPT_VXLANID = "com.docker.network.driver.overlay.vxlanid_list"
OVERLAY_OPTS = (OPT_MTU, OPT_VXLANID)
ATTACHABLE = ("bridge", "overlay", "cni")  # drivers whose networks give containers an interface


def nets_dir() -> Path:
    return paths.root() / "networks"


def _path(net_id: str) -> Path:
    return nets_dir() / f"{net_id}.json"


def now_iso() -> str:
    return state.now_iso()


def list_all() -> list[dict]:
    """Every network record. An unusable one (corrupt, unreadable) is listed as a network of driver
    "unreadable" named by its short id, with the reason under "Error": never among bridges(), so
    the firewall, IPAM and DNS derive from the sound records alone, and `network rm` or `system
    prune` can remove it."""
    d = nets_dir()
    if not d.is_dir():
        return []
    out = []
    for p in d.glob("*.json"):
        if p.name.endswith(".dns.json") or p.name.startswith("."):
            continue
        try:
            net = state.read_json(p, expect=dict)
            problem = _problem(net) if net is not None else ""
            if problem:
                raise state.CorruptRecord(p, problem)
        except state.CorruptRecord as e:
            net = unreadable_record(p.stem, f"its record {p.name} is unusable: {e.why}")
        if net is not None:
            out.append(net)
    return sorted(out, key=lambda n: (n["Name"] not in BUILTIN, n["Name"]))


_SHAPE = (("Name", str), ("Id", str), ("Driver", str), ("IPAM", dict), ("Options", dict), ("Labels", dict),
          ("Containers", dict), ("netdiag", dict))
UNREADABLE = "unreadable"


def _problem(net: dict) -> str:
    """What makes a parsed record unusable by the code that reads it ("" when nothing does)."""
    missing = [k for k, kind in _SHAPE if not isinstance(net.get(k), kind)]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if not all(isinstance(e, dict) for e in net["Containers"].values()):
        return "an endpoint under Containers is not an object"
    if net["Driver"] in ("bridge", "overlay"):  # a CNI network's addresses are its IPAM plugin's
        cfg = net["IPAM"].get("Config")
        if not (isinstance(cfg, list) and cfg and all(isinstance(c, dict) for c in cfg)
                and isinstance(cfg[0].get("Subnet"), str) and isinstance(cfg[0].get("Gateway"), str)):
            return "its IPAM config has no subnet and gateway"
        if not isinstance(net["netdiag"].get("Bridge"), str):
            return "it names no bridge device"
    return ""


def unreadable_record(net_id: str, why: str) -> dict:
    """Stands for a record that cannot be read. Its bridge is the one netdiag derives from the id
    (br-<id>), removed with it when it exists; a custom-named device cannot be known any more."""
    rec = new_record(net_id[:12], UNREADABLE)
    rec.update(Id=net_id, Created="", Error=why, netdiag={"Bridge": f"br-{net_id[:12]}"})
    return rec


def bridges() -> list[dict]:
    return [n for n in list_all() if n["Driver"] == "bridge"]


def overlays() -> list[dict]:
    """This host's mirrors of the cluster's overlay networks (the cluster store holds the truth)."""
    return [n for n in list_all() if n["Driver"] == "overlay"]


def cni() -> list[dict]:
    """Records of CNI conflists netdiag's containers were attached through (`cni:NAME`)."""
    return [n for n in list_all() if n["Driver"] == "cni"]


def attachable() -> list[dict]:
    """Bridge, overlay and CNI networks: those a container has an endpoint on."""
    return [n for n in list_all() if n["Driver"] in ATTACHABLE]


def get(ref: str) -> dict:
    every = list_all()
    for n in every:
        if n["Name"] == ref or n["Id"] == ref:
            return n
    hits = [n for n in every if len(ref) >= 3 and n["Id"].startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise Conflict(f"Network id prefix {ref!r} is ambiguous", "", "give more of the id, or the name")
    raise NotFound(f"No such network: {ref}", "", "list networks with 'netdiag network ls', or create it with 'netdiag network create'")


def find(ref: str) -> dict | None:
    try:
        return get(ref)
    except NotFound:
        return None


def save(net: dict) -> None:
    state.write_json(_path(net["Id"]), net)


def refuse_in_use(net: dict) -> None:
    """A network with endpoints is not removed without -f (Docker's rule, for every driver)."""
    if net["Containers"]:
        names = ", ".join(sorted(e["Name"] for e in net["Containers"].values()))
        raise Conflict(f"Network {net['Name']} has active endpoints ({names})", "removing it would cut those containers off",
                       f"disconnect them ('netdiag network disconnect {net['Name']} NAME') or use 'netdiag network rm -f'")


def delete(net: dict) -> None:
    _path(net["Id"]).unlink(missing_ok=True)


def reload(net: dict) -> dict:
    fresh = state.read_json(_path(net["Id"]))
    if fresh is None:
        raise NotFound(f"Network {net['Name']} was removed", "", "")
    return fresh


@contextlib.contextmanager
def locked(net: dict) -> Iterator[dict]:
    """The network's record, fresh, under its lock; saved on exit unless an exception escapes."""
    with state.locked("net-" + net["Id"][:16]):
        fresh = reload(net)
        yield fresh
        save(fresh)


def new_record(name: str, driver: str, *, subnet: str = "", gateway: str = "", ip_range: str = "",
               internal: bool = False, options: dict | None = None, labels: dict | None = None) -> dict:
    ipam_cfg = []
    if subnet:
        entry = {"Subnet": subnet, "Gateway": gateway}
        if ip_range:
            entry["IPRange"] = ip_range
        ipam_cfg.append(entry)
    return {
        "Name": name, "Id": os.urandom(32).hex(), "Created": now_iso(), "Scope": "local", "Driver": driver,
        "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": {}, "Config": ipam_cfg},
        "Internal": internal, "Attachable": False, "Ingress": False, "ConfigOnly": False,
        "Options": dict(options or {}), "Labels": dict(labels or {}), "Containers": {}, "netdiag": {},
    }


def validate_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}", name):
        raise InvalidArgument(f"Invalid network name {name!r}", "names start with a letter or digit and contain letters, digits, '_', '.', '-' (at most 64)",
                              "choose a name like 'backend'")
    return name


def ensure_builtin_records() -> None:
    """`host` and `none` exist as records (as in `docker network ls`); `bridge` is made by its driver."""
    for name, driver in (("host", "host"), ("none", "null")):
        if find(name) is None:
            with state.locked("networks"):
                if find(name) is None:
                    save(new_record(name, driver))


def mtu_option(options: dict) -> int | None:
    """-o com.docker.network.driver.mtu=N, checked (68..65535); None when not given."""
    if OPT_MTU not in options:
        return None
    try:
        mtu = int(options[OPT_MTU])
    except ValueError:
        mtu = 0
    if not 68 <= mtu <= 65535:
        raise InvalidArgument(f"Invalid MTU {options[OPT_MTU]!r}", "the MTU is a number from 68 to 65535",
                              "use e.g. -o com.docker.network.driver.mtu=1450")
    return mtu


def flag(net: dict, option: str, default: bool = True) -> bool:
    value = str(net["Options"].get(option, str(default))).lower()
    return value in ("true", "1", "yes")


def ipam(net: dict) -> dict:
    return net["IPAM"]["Config"][0] if net["IPAM"]["Config"] else {}
