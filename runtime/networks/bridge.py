"""The bridge driver: Docker's default `bridge` (docker0, 172.17.0.0/16) and user-defined bridges.

create/delete for networks, attach/detach for endpoints. Config is validated before any side
effect; attach is all-or-nothing (rolled back in reverse order); detach and delete succeed when
the kernel objects are already gone. Teardown removes firewall rules before links.
"""
from __future__ import annotations

import hashlib
import re
import sys
from ipaddress import IPv4Address, IPv4Network

from .. import ipam, state
from ..errors import Conflict, InvalidArgument, NetdiagError
from ..kernel import addr, bridge as kernel_bridge, link, route, sysctl
from . import enforce, network_records
from .dns import records as dns_records

DEFAULT_NAME = network_records.DEFAULT_NAME
DEFAULT_DEVICE, FALLBACK_DEVICE = "docker0", "netdiag0"
_IFNAME = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


class SubnetOverlap(Conflict):
    code = "SUBNET_OVERLAP"


def _bool_opt(options: dict, key: str) -> None:
    if key in options and str(options[key]).lower() not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"Invalid value {options[key]!r} for {key}", "it is true or false", f"use -o {key}=false")


def validate_options(options: dict) -> dict:
    for key in options:
        if key not in network_records.KNOWN_OPTS:
            raise InvalidArgument(f"Unknown bridge option {key!r}", f"known options: {', '.join(network_records.KNOWN_OPTS)}", "check the spelling")
    name = options.get(network_records.OPT_BRIDGE_NAME)
    if name is not None and not _IFNAME.match(name):
        raise InvalidArgument(f"Invalid bridge name {name!r}", "interface names are 1-15 letters, digits, '_', '.' or '-'",
                              "choose a shorter name, e.g. br-web")
    network_records.mtu_option(options)
    for key in (network_records.OPT_ICC, network_records.OPT_MASQ):
        _bool_opt(options, key)
    return options


def used_subnets(exclude_id: str = "") -> list[tuple[IPv4Network, str]]:
    """Subnets netdiag networks use, and the host's routes (other than via netdiag's own bridges)."""
    ours = {n["netdiag"].get("Bridge") for n in network_records.bridges()}
    out = [(IPv4Network(network_records.ipam(n)["Subnet"]), f"network {n['Name']}") for n in network_records.bridges()
           if n["Id"] != exclude_id and network_records.ipam(n).get("Subnet")]
    for dst, dev in route.subnets():
        if dev not in ours:
            out.append((dst, f"the host's route to {dst} via {dev or '?'}"))
    return out


def _check_overlap(subnet: IPv4Network, used: list[tuple[IPv4Network, str]]) -> None:
    for other, what in used:
        if subnet.overlaps(other):
            raise SubnetOverlap(f"Subnet {subnet} overlaps {what}",
                                "two networks with overlapping addresses make routing ambiguous (SUBNET_OVERLAP)",
                                "choose another --subnet, or leave it out to get a free one")


def create(name: str, *, subnet: str = "", gateway: str = "", ip_range: str = "", internal: bool = False,
           options: dict | None = None, labels: dict | None = None, default: bool = False) -> dict:
    """Validate, record, then realize (bridge device, firewall, resolver); undo all on failure."""
    network_records.validate_name(name)
    options = validate_options(dict(options or {}))
    if name in network_records.BUILTIN and not default:
        raise Conflict(f"Network name {name!r} is reserved", "bridge, host and none are the built-in networks", "choose another name")
    if gateway and not subnet:
        raise InvalidArgument("--gateway needs --subnet", "a gateway is chosen inside a subnet", "give --subnet too")
    if ip_range and not subnet:
        raise InvalidArgument("--ip-range needs --subnet", "", "give --subnet too")
    sub = ipam.parse_subnet(subnet) if subnet else None
    gw = ipam.parse_ip(gateway, "gateway") if gateway else None
    rng = ipam.parse_subnet(ip_range, "IP range") if ip_range else None
    with state.locked("networks"):
        if network_records.find(name) is not None:
            raise Conflict(f"Network {name!r} already exists", "", f"use it, or remove it first ('netdiag network rm {name}')")
        net = network_records.new_record(name, "bridge", internal=internal, options=options, labels=labels)
        used = used_subnets()
        if sub is None:
            sub = _pick_default_subnet(used) if default else ipam.free_pool([u for u, _ in used])
        else:
            _check_overlap(sub, used)
        gw = gw or ipam.default_gateway(sub)
        ipam.check_pool(sub, gw, rng)
        device = options.get(network_records.OPT_BRIDGE_NAME) or (_default_device() if default else f"br-{net['Id'][:12]}")
        owner = next((n["Name"] for n in network_records.bridges() if n["netdiag"].get("Bridge") == device), None)
        if owner is not None:
            raise Conflict(f"Bridge {device} is already used by network {owner}", "one bridge device carries one network",
                           "choose another -o com.docker.network.bridge.name, or leave it out")
        existed = link.exists(device)
        if existed and not default:
            raise Conflict(f"Interface {device} already exists", "netdiag will not take over an interface it did not make",
                           "choose another -o com.docker.network.bridge.name")
        net["IPAM"]["Config"] = [{"Subnet": str(sub), "Gateway": str(gw), **({"IPRange": str(rng)} if rng else {})}]
        net["netdiag"] = {"Bridge": device, "MTU": int(options.get(network_records.OPT_MTU, 1500))}
        if default:
            net["Options"].setdefault("com.docker.network.bridge.default_bridge", "true")
            net["Options"].setdefault(network_records.OPT_BRIDGE_NAME, device)
        network_records.save(net)
    try:
        realize(net)
        if not default:
            dns_records.start_resolver(net)
            enforce.warn_blocked(device, name)  # the default bridge's first `run` warns itself
    except BaseException:
        # undo only what this command made: a bridge that existed before stays (it may carry traffic)
        delete(network_records.reload(net), force=True, keep_link=existed)
        raise
    return network_records.reload(net)


def _default_device() -> str:
    """docker0, unless a real Docker engine (or anyone else) owns it: then netdiag0."""
    mine = [n for n in network_records.bridges() if n["Name"] == DEFAULT_NAME]
    if mine:
        return mine[0]["netdiag"]["Bridge"]
    return FALLBACK_DEVICE if link.exists(DEFAULT_DEVICE) else DEFAULT_DEVICE


def _pick_default_subnet(used: list[tuple[IPv4Network, str]]) -> IPv4Network:
    if not any(ipam.DEFAULT_BRIDGE_SUBNET.overlaps(u) for u, _ in used):
        return ipam.DEFAULT_BRIDGE_SUBNET
    return ipam.free_pool([u for u, _ in used])


def ensure_default() -> dict:
    """The default `bridge` network, made on first use (like dockerd does at start)."""
    net = network_records.find(DEFAULT_NAME)
    if net is not None:
        return net
    net = create(DEFAULT_NAME, default=True)
    cfg = network_records.ipam(net)
    if net["netdiag"]["Bridge"] != DEFAULT_DEVICE or cfg["Subnet"] != str(ipam.DEFAULT_BRIDGE_SUBNET):
        print(f"netdiag: note: the default bridge network uses {net['netdiag']['Bridge']} on {cfg['Subnet']}, because "
              f"{DEFAULT_DEVICE} or {ipam.DEFAULT_BRIDGE_SUBNET} is already taken on this host", file=sys.stderr)
    return net


def realize(net: dict) -> None:
    """Make the kernel match the record: bridge up with its gateway address, forwarding, firewall."""
    cfg = network_records.ipam(net)
    sub = IPv4Network(cfg["Subnet"])
    kernel_bridge.ensure(net["netdiag"]["Bridge"], IPv4Address(cfg["Gateway"]), sub, net["netdiag"].get("MTU", 1500))
    sysctl.write("net/ipv4/ip_forward", "1")
    # published on 127.0.0.1: DNAT'd loopback traffic must be routable onto the bridge
    sysctl.write(f"net/ipv4/conf/{net['netdiag']['Bridge']}/route_localnet", "1")
    enforce.apply()


def delete(net: dict, force: bool = False, keep_link: bool = False) -> None:
    """Remove a network: resolver, firewall rules, then the bridge device (unless `keep_link`: a
    failed create never deletes a device it did not make), then the record."""
    if not force:
        network_records.refuse_in_use(net)
    from . import dns

    for cid in list(net["Containers"]):
        detach(net, cid)
    net = network_records.find(net["Id"]) or net
    if net["netdiag"].get("DnsPid"):
        dns.stop(net["netdiag"]["DnsPid"])
    network_records.delete(net)
    dns_records.records_file(net).unlink(missing_ok=True)
    enforce.apply()
    if not keep_link:
        link.delete(net["netdiag"]["Bridge"])
        enforce.apply()  # now that the bridge is gone, its accept rules in Docker's DOCKER-USER go too


# -- endpoints --------------------------------------------------------------------------------------

def veth_name(container_id: str, net_id: str) -> str:
    return "veth" + hashlib.sha256(f"{container_id}:{net_id}".encode()).hexdigest()[:7]


def attach(net: dict, container: dict, netns_path: str, ifname: str, *, ip: str | None = None,
           aliases: list[str] = (), default_route: bool = True, publish: list[dict] = ()) -> dict:
    """Give a container (namespace at netns_path) an interface on this network. All or nothing."""
    cid = container["Id"]
    cfg = network_records.ipam(net)
    sub, gw = IPv4Network(cfg["Subnet"]), IPv4Address(cfg["Gateway"])
    rng = IPv4Network(cfg["IPRange"]) if cfg.get("IPRange") else None
    with network_records.locked(net) as fresh:
        used = [e["IPv4Address"].split("/")[0] for k, e in fresh["Containers"].items() if k != cid]
        ip_addr = ipam.allocate(sub, gw, rng, used, ip)
        endpoint = {
            "Name": container["Name"], "EndpointID": hashlib.sha256(f"{cid}:{net['Id']}:ep".encode()).hexdigest(),
            "MacAddress": ipam.mac_for(ip_addr), "IPv4Address": f"{ip_addr}/{sub.prefixlen}", "IPv6Address": "",
            "HostVeth": veth_name(cid, net["Id"]), "Interface": ifname, "Aliases": list(aliases),
            "Ports": [dict(p) for p in publish],
        }
        fresh["Containers"][cid] = endpoint
    done = []
    try:
        realize_if_missing(net)
        link.veth_to_bridge(endpoint["HostVeth"], ifname, netns_path, net["netdiag"]["Bridge"],
                                   net["netdiag"].get("MTU", 1500), endpoint["MacAddress"])
        done.append("veth")
        _configure_endpoint(netns_path, ifname, ip_addr, sub, gw if default_route and not net["Internal"] else None)
        enforce.apply()
        done.append("firewall")
        dns_records.refresh()
    except BaseException:
        _undo_attach(net, cid, endpoint, done)
        raise
    return endpoint


def _configure_endpoint(ns_path: str, ifname: str, ip: IPv4Address, subnet: IPv4Network, gateway: IPv4Address | None) -> None:
    """Inside the container's namespace: the address, the link up, the default route via the gateway."""
    from ..kernel.ns import netns

    with netns(ns_path):
        idx = link.index(ifname)
        addr.add(idx, ip, subnet.prefixlen)
        link.set_up(idx)
        if gateway is not None:
            route.add_default(gateway, idx)


def _undo_attach(net: dict, cid: str, endpoint: dict, done: list[str]) -> None:
    with network_records.locked(net) as fresh:
        fresh["Containers"].pop(cid, None)
    try:
        enforce.apply()
    except NetdiagError:
        pass
    if "veth" in done:
        link.delete(endpoint["HostVeth"])


def realize_if_missing(net: dict) -> None:
    if not link.exists(net["netdiag"]["Bridge"]):
        realize(net)


def detach(net: dict, cid: str) -> None:
    """Remove a container's endpoint: record and rules first, then the link. Idempotent."""
    endpoint = None
    try:
        with network_records.locked(net) as fresh:
            endpoint = fresh["Containers"].pop(cid, None)
    except NetdiagError:
        return
    enforce.apply()
    if endpoint:
        link.delete(endpoint["HostVeth"])
    dns_records.refresh()
