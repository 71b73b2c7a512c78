"""The `cni` network driver: one netdiag container on `cni:NAME` = one CNI attachment made by the
plugins of conflist NAME (ADD when the container starts, DEL when it stops or is removed, also
after a crash through `system prune`/`rm`, which find its endpoint in the record).

A record `cni:NAME` (driver "cni") mirrors the conflist in netdiag's store: made on first use
after the conflist was checked (a bad conflist leaves nothing), its endpoints are the attachments
(address, MAC, host veth from the plugins' result). The CNI network itself is the conflist's and
the plugins': netdiag never writes the bridge, IPAM or rules, only runs ADD/CHECK/DEL.

The container's network namespace is pinned (bind-mounted under NETDIAG_ROOT/cni/netns) for the
attachment's lifetime, like a pod sandbox's /run/netns/cni-...: the plugins' DEL must find the
interfaces and addresses it tears down after the container's last process exited.
"""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from ... import paths, state
from ...errors import Conflict, InvalidArgument, NetdiagError
from ...kernel import syscalls as sc
from .. import network_records
from . import conflist, invoke

PREFIX = "cni:"


def record_name(name: str) -> str:
    return PREFIX + name


def conf_name(net: dict) -> str:
    return net["netdiag"].get("CniName") or net["Name"][len(PREFIX):]


def checked(name: str) -> conflist.ConfList:
    """Conflist NAME, with every plugin installed and accepting the list's cniVersion."""
    conf = conflist.load(name)
    for kind in dict.fromkeys(p["type"] for p in conf.plugins):
        versions = invoke.supported_versions(kind, conf.cni_version)
        if conf.cni_version not in versions:
            raise conflist.BadConf(f"CNI plugin {kind} does not support cniVersion {conf.cni_version} ({conf.source})",
                                   f"it supports {', '.join(versions) or 'none'}", "set the conflist's cniVersion to one of them")
    return conf


def ensure_record(name: str) -> dict:
    """The `cni:NAME` record, made or refreshed from the checked conflist (its errors first)."""
    conf = checked(name)
    subnet, gateway = conf.ipam_range()
    facts = {"CniName": conf.name, "Conflist": conf.source, "CniVersion": conf.cni_version,
             "Plugins": [p["type"] for p in conf.plugins], "Bridge": conf.bridge_device()}
    with state.locked("networks"):
        net = network_records.find(record_name(name))
        if net is None:
            net = network_records.new_record(record_name(name), "cni")
            net["Scope"] = "local"
        elif net["Driver"] != "cni":
            raise Conflict(f"Network {record_name(name)} exists and is not a CNI network", "", "remove it first")
        net["netdiag"].update(facts)
        net["IPAM"]["Driver"] = next((p["ipam"].get("type", "") for p in conf.plugins if isinstance(p.get("ipam"), dict)), "")
        net["IPAM"]["Config"] = [{"Subnet": subnet, "Gateway": gateway}] if subnet else []
        network_records.save(net)
    return net


def create(name: str, *, subnet: str = "", gateway: str = "", ip_range: str = "", internal: bool = False,
           options: dict | None = None, labels: dict | None = None) -> dict:
    """`network create -d cni NAME`: record conflist NAME (its plugins own addresses and rules)."""
    if subnet or gateway or ip_range or internal or options:
        raise InvalidArgument("A CNI network takes no --subnet, --gateway, --ip-range, --internal or -o",
                              "its conflist says all of that", f"edit the conflist {name} in {conflist.conf_dir()}")
    net = ensure_record(name)
    if labels:
        with network_records.locked(net) as fresh:
            fresh["Labels"].update(labels)
    return network_records.reload(net)


def delete(net: dict, force: bool = False, keep_link: bool = False) -> None:
    """Forget the record; with force, DEL every attachment first. The conflist's bridge stays:
    it is the bridge plugin's, shared by every user of the conflist."""
    if not force:
        network_records.refuse_in_use(net)
    for cid in list(net["Containers"]):
        detach(net, cid)
    network_records.delete(net)


# -- endpoints --------------------------------------------------------------------------------------
def pin_path(cid: str, ifname: str) -> Path:
    return paths.root() / "cni" / "netns" / f"{cid[:12]}-{ifname}"


def _pin(source: str, target: Path) -> None:
    _unpin(target)  # a pin left by a crash under the same name
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400))
    try:
        sc.mount(source, str(target), None, sc.MS_BIND)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _unpin(target: Path) -> None:
    try:
        sc.umount(str(target), sc.MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # not mounted, or no such file
            raise
    target.unlink(missing_ok=True)


def _pinned(target: Path) -> bool:
    """A namespace is bound there (not only the empty file a reboot leaves behind)."""
    try:
        return os.stat(target).st_dev == os.stat("/proc/self/ns/net").st_dev  # both on nsfs
    except OSError:
        return False


def port_mappings(publish: list[dict]) -> list[dict]:
    """netdiag's -p specs as CNI's `portMappings` capability (one entry per port, as the kubelet does)."""
    out = []
    for p in publish:
        for offset in range(p["ctr_end"] - p["ctr_start"] + 1):
            entry = {"hostPort": p["host_start"] + offset, "containerPort": p["ctr_start"] + offset, "protocol": p["proto"]}
            if p.get("host_ip"):
                entry["hostIP"] = p["host_ip"]
            out.append(entry)
    return out


def endpoint_from_result(result: dict, ifname: str, bridge: str) -> dict:
    """Address, MAC and host veth of an attachment, from its CNI result (0.4.0 and 1.0.0 layouts)."""
    ifaces = [i for i in result.get("interfaces") or [] if isinstance(i, dict)]
    mine = next((n for n, i in enumerate(ifaces) if i.get("sandbox") and i.get("name") == ifname), None)
    ips = [ip for ip in result.get("ips") or [] if isinstance(ip, dict) and "." in str(ip.get("address", ""))]
    ip = next((x for x in ips if mine is None or x.get("interface") == mine), ips[0] if ips else {})
    host = [i.get("name", "") for i in ifaces if not i.get("sandbox") and i.get("name") != bridge]
    return {"IPv4Address": str(ip.get("address", "")), "Gateway": str(ip.get("gateway", "")),
            "MacAddress": str(ifaces[mine].get("mac", "")) if mine is not None else "", "HostVeth": host[-1] if host else ""}


def attach(net: dict, container: dict, netns_path: str, ifname: str, *, ip: str | None = None,
           aliases: list[str] = (), default_route: bool = True, publish: list[dict] = ()) -> dict:
    """ADD the container to the conflist's network. All or nothing: a failed ADD is DELeted."""
    if ip or aliases:
        raise InvalidArgument(f"--ip and --network-alias do not apply to {net['Name']}",
                              "a CNI network's IPAM plugin chooses addresses, and it has no embedded DNS", "drop them")
    cid = container["Id"]
    conf = conflist.load(conf_name(net))
    if publish and "portMappings" not in conf.capabilities:
        raise InvalidArgument(f"Cannot publish ports on {net['Name']}", "no plugin of its conflist declares the "
                              "portMappings capability", "add {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}")
    pin = pin_path(cid, ifname)
    rt = invoke.RuntimeConf(cid, str(pin), ifname, {"portMappings": port_mappings(publish)} if publish else {})
    endpoint = {"Name": container["Name"], "EndpointID": hashlib.sha256(f"{cid}:{net['Id']}:ep".encode()).hexdigest(),
                "MacAddress": "", "IPv4Address": "", "IPv6Address": "", "HostVeth": "", "Interface": ifname,
                "Aliases": [], "Ports": [dict(p) for p in publish], "Netns": str(pin)}
    with network_records.locked(net) as fresh:  # recorded first: a crash during ADD is DELeted by prune
        fresh["Containers"][cid] = endpoint
    try:
        _pin(netns_path, pin)
        endpoint.update(endpoint_from_result(invoke.add(conf, rt), ifname, conf.bridge_device()))
    except BaseException as failed:
        try:
            _del(net, cid, endpoint, conf, rt.capability_args)
        except NetdiagError as e:
            # DEL with the config ADD just failed on fails alike (a field the plugin cannot parse):
            # a record kept for it could never be removed. Forget it, and say what may be left.
            _forget(net, cid, pin)
            if isinstance(failed, NetdiagError):
                raise type(failed)(failed.what, "; ".join(filter(None, [failed.why, f"the DEL after it failed too ({e.what}), so "
                                   f"what the plugins made for container {cid[:12]} may be left"])), failed.fix) from None
        raise
    with network_records.locked(net) as fresh:
        fresh["Containers"][cid] = endpoint
    return endpoint


def _del(net: dict, cid: str, endpoint: dict, current: conflist.ConfList | None = None, caps: dict | None = None) -> None:
    """DEL with the conflist and capability arguments the attachment was made with (cached), else
    the current conflist and `caps` (a failed ADD's: nothing was cached)."""
    ifname, pin = endpoint.get("Interface") or "eth0", Path(endpoint.get("Netns") or pin_path(cid, "eth0"))
    netns = str(pin) if _pinned(pin) else ""  # the spec lets DEL run without a namespace left
    # without any conflist, no plugin can be told: nothing netdiag can undo but its own pin and record
    invoke.delete_attachment(conf_name(net), cid, ifname, netns, current, caps)
    _forget(net, cid, pin)


def _forget(net: dict, cid: str, pin: Path) -> None:
    _unpin(pin)
    with network_records.locked(net) as fresh:
        fresh["Containers"].pop(cid, None)


def detach(net: dict, cid: str) -> None:
    """DEL a container's attachment. Idempotent; a failing DEL keeps the endpoint (and says so),
    so `netdiag rm` or `system prune` can run it again once the cause is fixed."""
    try:
        endpoint = network_records.reload(net)["Containers"].get(cid)
    except NetdiagError:
        return
    if endpoint is None:
        return
    try:
        _del(net, cid, endpoint)
    except invoke.PluginError as e:
        raise invoke.PluginError(e.what, f"{e.why}; the attachment of {cid[:12]} stays recorded",
                                 "fix the cause, then run 'netdiag system prune' (DEL is safe to repeat)") from None


def check(net: dict, cid: str) -> str:
    """CHECK an attachment: "ok", or what the plugins found wrong."""
    endpoint = network_records.reload(net)["Containers"].get(cid) or {}
    ifname = endpoint.get("Interface") or "eth0"
    conf = invoke.cached_conf(conf_name(net), cid, ifname)
    if conf is None:
        return "no cached result (ADD did not finish, or the cache was removed)"
    cached = invoke.cached(conf.name, cid, ifname) or {}
    try:
        invoke.check(conf, invoke.RuntimeConf(cid, endpoint.get("Netns", ""), ifname, cached.get("capabilityArgs") or {}))
    except NetdiagError as e:
        return str(e)
    return "ok"


def inspect(net: dict) -> dict:
    """What `network inspect cni:NAME` adds: the conflist, the cache, and CHECK of every attachment."""
    return {"CNI": {"Conflist": net["netdiag"].get("Conflist", ""), "CniVersion": net["netdiag"].get("CniVersion", ""),
                    "Plugins": net["netdiag"].get("Plugins", []), "CacheDir": str(conflist.cache_dir()),
                    "Check": {cid: check(net, cid) for cid in net["Containers"]}}}
