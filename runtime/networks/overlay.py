"""The overlay driver: networks shared by the hosts of a cluster, VXLAN in the kernel, state in etcd
(Docker's classic overlay with an external KV store; flannel's vxlan backend).

The cluster store holds each network (subnet, VNI), its claims and every endpoint (address, MAC,
host); this host keeps a mirror record (Driver "overlay") with its own endpoints only. A host with
an endpoint on the network has a sandbox: a bridge `ov-<id>` (no address: it only switches) and a
VXLAN device `vx-<id>` on it (UDP 4789, `nolearning`, `proxy`), with static FDB entries (remote
MAC -> remote VTEP) and permanent ARP entries (remote IP -> MAC) programmed from the store for
every remote endpoint: no multicast, no flooding, no learning. The agent keeps them in sync.
Names: the host's overlays resolver (dns/records.py) answers inside each local container on
127.0.0.11 for every endpoint of its networks, from the store's records.

Same shape as the bridge driver: create/delete for networks, attach/detach for endpoints;
validated before any side effect; attach all-or-nothing (rolled back in reverse); detach and
delete idempotent. Endpoint MTU = underlay MTU - 50 (an `-o ...mtu=` option may lower it). An
overlay never gives a container its default route: a bridge network does, as in Docker.
"""
from __future__ import annotations

import hashlib
import os
import re
from ipaddress import IPv4Address, IPv4Network

from .. import ipam, state
from ..errors import Conflict, InvalidArgument, NetdiagError
from ..kernel import addr, fdb, link, neigh
from . import network_records
from .dns import records as dns_records

VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8


def bridge_name(net_id: str) -> str:
    return f"ov-{net_id[:12]}"


def vxlan_name(net_id: str) -> str:
    return f"vx-{net_id[:12]}"


def endpoint_id(container_id: str, net_id: str) -> str:
    return hashlib.sha256(f"{container_id}:{net_id}:ep".encode()).hexdigest()


def validate_options(options: dict) -> tuple[dict, int | None, int | None]:
    """(options, requested VNI, MTU ceiling)."""
    from ..cluster import alloc

    for key in options:
        if key not in network_records.OVERLAY_OPTS:
            raise InvalidArgument(f"Unknown overlay option {key!r}", f"known options: {', '.join(network_records.OVERLAY_OPTS)}", "check the spelling")
    vni = alloc.parse_vni(options[network_records.OPT_VXLANID]) if network_records.OPT_VXLANID in options else None
    return options, vni, network_records.mtu_option(options)


def _store(member: dict):
    from ..cluster.store import Store

    return Store(member["store"])


# -- the cluster's record and this host's mirror --------------------------------------------------
def cluster_record(net: dict) -> dict:
    cfg = network_records.ipam(net)
    return {"Id": net["Id"], "Name": net["Name"], "Subnet": cfg["Subnet"], "Gateway": cfg["Gateway"],
            "VNI": net["netdiag"]["VNI"], "Options": net["Options"], "Labels": net["Labels"], "Created": net["Created"]}


def _mirror_record(rec: dict, old: dict | None) -> dict:
    net = old or network_records.new_record(rec["Name"], "overlay")
    net.update(Name=rec["Name"], Id=rec["Id"], Created=rec.get("Created", ""), Scope="swarm", Attachable=True,
               Options=dict(rec.get("Options") or {}), Labels=dict(rec.get("Labels") or {}))
    net["IPAM"]["Config"] = [{"Subnet": rec["Subnet"], "Gateway": rec["Gateway"]}]
    net["netdiag"].update(Bridge=bridge_name(rec["Id"]), Vxlan=vxlan_name(rec["Id"]), VNI=int(rec["VNI"]))
    return net


def _valid(rec) -> bool:
    try:
        IPv4Network(rec["Subnet"])
        IPv4Address(rec["Gateway"])
        network_records.validate_name(rec["Name"])
        return isinstance(rec["Id"], str) and len(rec["Id"]) == 64 and int(rec["VNI"]) > 0
    except (KeyError, TypeError, ValueError, NetdiagError):
        return False


def mirror(networks: list[dict]) -> bool:
    """Make this host's overlay records match the cluster's networks; a network gone from the
    cluster loses its record and its sandbox here. True when anything changed. An existing record
    is changed under its own lock, so an attach writing its endpoint at the same time keeps it."""
    want = {rec["Id"]: rec for rec in networks if _valid(rec)}
    changed = False
    with state.locked("networks"):
        have = {n["Id"]: n for n in network_records.overlays()}
        for nid, rec in want.items():
            old = have.get(nid)
            if old is None:
                other = network_records.find(rec["Name"])
                if other is None:  # else a local network of that name hides it (see conflicts())
                    network_records.save(_mirror_record(rec, None))
                    changed = True
            elif _mirror_record(rec, _copy(old)) != old:
                with network_records.locked(old) as fresh:
                    _mirror_record(rec, fresh)
                changed = True
        for nid, old in have.items():
            if nid not in want:
                with state.locked("net-" + nid[:16]):
                    teardown(old)
                    network_records.delete(old)
                changed = True
    return changed


def _copy(net: dict) -> dict:
    import copy

    return copy.deepcopy(net)


def conflicts(networks: list[dict]) -> list[str]:
    """Cluster networks whose name a local network of this host already has."""
    out = []
    for rec in networks:
        other = network_records.find(rec.get("Name", "")) if _valid(rec) else None
        if other is not None and other["Id"] != rec["Id"]:
            out.append(f"the cluster's overlay network {rec['Name']} is hidden on this host by its local {other['Driver']} "
                       f"network of the same name")
    return out


def refresh(member: dict | None = None) -> list[str]:
    """Mirror the cluster's networks now (the CLI, before listing); returns notes for the user."""
    from ..cluster import keys

    member = member or _member()
    if member is None:
        return []
    found, _ = _store(member).prefix(keys.NETWORKS)
    nets = [v for _, v, _ in found if isinstance(v, dict)]
    mirror(nets)
    return conflicts(nets)


def _member() -> dict | None:
    from ..cluster import local

    return local.member()


# -- networks ---------------------------------------------------------------------------------------
def create(name: str, *, subnet: str = "", gateway: str = "", ip_range: str = "", internal: bool = False,
           options: dict | None = None, labels: dict | None = None) -> dict:
    """Claim the network in the cluster store (one transaction), then mirror it here. Kernel
    objects come with the first endpoint on each host."""
    from ..cluster import alloc, local
    from . import bridge

    if ip_range or internal:
        raise InvalidArgument("--ip-range and --internal are not supported on overlay networks", "", "drop them")
    network_records.validate_name(name)
    options, vni, _ = validate_options(dict(options or {}))
    if name in network_records.BUILTIN:
        raise Conflict(f"Network name {name!r} is reserved", "bridge, host and none are the built-in networks", "choose another name")
    if gateway and not subnet:
        raise InvalidArgument("--gateway needs --subnet", "a gateway is chosen inside a subnet", "give --subnet too")
    sub = ipam.parse_subnet(subnet) if subnet else None
    gw = ipam.parse_ip(gateway, "gateway") if gateway else None
    if sub is not None and gw is not None:
        ipam.check_pool(sub, gw, None)
    member = local.require()
    store = _store(member)
    with state.locked("networks"):
        if network_records.find(name) is not None:
            raise Conflict(f"Network {name!r} already exists", "", f"use it, or remove it first ('netdiag network rm {name}')")
        rec = network_records.new_record(name, "overlay", options=options, labels=labels)
        # this host's bridges and routes (the underlay's among them) must not be shadowed either
        local_taken = bridge.used_subnets()
        claimed = alloc.claim_network(store, {"Id": rec["Id"], "Name": name, "Options": options, "Labels": dict(labels or {}),
                                              "Created": rec["Created"]}, sub, vni, gw, local_taken)
        net = _mirror_record(claimed, rec)
        network_records.save(net)
    return net


def delete(net: dict, force: bool = False, keep_link: bool = False) -> None:
    """Remove the network from the cluster (refused while any host has an endpoint on it), then
    this host's sandbox and mirror."""
    from ..cluster import alloc

    if not force:
        network_records.refuse_in_use(net)
    for cid in list(net["Containers"]):
        detach(net, cid)
    member = _member()
    if member is not None:
        alloc.release_network(_store(member), cluster_record(net))
    teardown(net)
    network_records.delete(net)


# -- this host's sandbox ----------------------------------------------------------------------------
def underlay_mtu(member: dict) -> int:
    mtus = [lk["mtu"] for lk in link.dump() if lk["name"] == member.get("underlay") and lk["mtu"]]
    return mtus[0] if mtus else int(member.get("mtu") or 1500)


def endpoint_mtu(net: dict, member: dict) -> int:
    """Underlay MTU - 50, lowered further by -o com.docker.network.driver.mtu."""
    mtu = underlay_mtu(member) - VXLAN_OVERHEAD
    opt = net["Options"].get(network_records.OPT_MTU)
    return min(mtu, int(opt)) if opt else mtu


def ensure_sandbox(net: dict, member: dict) -> bool:
    """Bridge and VXLAN device of the network on this host, up; True if this call made them."""
    from ..kernel import bridge as kernel_bridge, vxlan

    mtu = endpoint_mtu(net, member)
    made = kernel_bridge.ensure(net["netdiag"]["Bridge"], None, None, mtu)
    try:
        made = vxlan.ensure(net["netdiag"]["Vxlan"], int(net["netdiag"]["VNI"]), IPv4Address(member["vtep"]),
                            member["underlay"], mtu, net["netdiag"]["Bridge"]) or made
    except BaseException:
        if made:
            link.delete(net["netdiag"]["Bridge"])
        raise
    return made


def teardown(net: dict) -> None:
    """Remove the sandbox (VXLAN device first, then the bridge); fine when already gone."""
    link.delete(net["netdiag"].get("Vxlan") or vxlan_name(net["Id"]))
    link.delete(net["netdiag"].get("Bridge") or bridge_name(net["Id"]))


def program(net: dict, remotes: dict[str, tuple[str, str]]) -> dict:
    """Make the VXLAN device's FDB and ARP entries exactly `remotes` (MAC -> (IP, VTEP)): add or
    repoint what is missing or stale, remove what is not there any more. Returns what changed."""
    done = {"added": 0, "removed": 0, "errors": []}
    with state.locked("ovsync-" + net["Id"][:16]):
        vx = link.index(net["netdiag"]["Vxlan"])
        if vx is None:
            return done
        have_fdb, have_arp = fdb.entries(vx), neigh.arp_entries(vx)
        want_fdb = {mac: vtep for mac, (_, vtep) in remotes.items()}
        want_arp = {ip: mac for mac, (ip, _) in remotes.items()}
        add_fdb = {mac: IPv4Address(v) for mac, v in want_fdb.items() if have_fdb.get(mac) != v}
        add_arp = {IPv4Address(ip): mac for ip, mac in want_arp.items() if have_arp.get(ip) != mac}
        gone_fdb = [mac for mac in have_fdb if mac not in want_fdb]
        gone_arp = [IPv4Address(ip) for ip in have_arp if ip not in want_arp]
        errors = fdb.remove(vx, gone_fdb) + neigh.remove_arp(vx, gone_arp)
        errors += [e for e in fdb.replace(vx, add_fdb) + neigh.replace_arp(vx, add_arp) if e is not None]
        done.update(added=len(add_fdb), removed=len(gone_fdb), errors=[str(e) for e in errors])
    return done


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def remote_endpoints(endpoints: list[dict], hosts: dict[str, dict], me: str) -> dict[str, tuple[str, str]]:
    """MAC -> (IP, VTEP) of the endpoints of live members other than this host; anything in the
    store that is not a well-formed address or MAC is skipped, never sent to the kernel. Pure."""
    out = {}
    for ep in endpoints:
        h = hosts.get(ep.get("host")) if isinstance(ep, dict) else None
        if h is None or ep.get("host") == me:
            continue
        try:
            ip = str(IPv4Address(str(ep["ip"]).split("/")[0]))
            vtep = str(IPv4Address(str(h.get("vtep"))))
            mac = str(ep["mac"]).lower()
        except (KeyError, ValueError):
            continue
        if _MAC.fullmatch(mac):
            out[mac] = (ip, vtep)
    return out


def cluster_view(store, net_id: str) -> tuple[list[dict], dict[str, dict]]:
    """The network's endpoints and the live members, read from the store."""
    from ..cluster import keys

    eps, _ = store.prefix(keys.endpoints(net_id))
    hosts, _ = store.prefix(keys.HOSTS)
    return [v for _, v, _ in eps if isinstance(v, dict)], {v["id"]: v for _, v, _ in hosts if isinstance(v, dict) and "id" in v}


def remote_records(endpoints: list[dict], hosts: dict[str, dict], me: str) -> list[dict]:
    """The endpoints of live members other than this host, as the store lists them (for DNS)."""
    return [ep for ep in endpoints if isinstance(ep, dict) and ep.get("host") in hosts and ep.get("host") != me]


def sync_peers(net: dict, member: dict, store=None) -> list[dict]:
    """Program the network's remote endpoints here; returns them (the store's records)."""
    eps, hosts = cluster_view(store or _store(member), net["Id"])
    program(net, remote_endpoints(eps, hosts, member["host"]))
    return remote_records(eps, hosts, member["host"])


# -- endpoints --------------------------------------------------------------------------------------
def attach(net: dict, container: dict, netns_path: str, ifname: str, *, ip: str | None = None,
           aliases: list[str] = (), default_route: bool = False, publish: list[dict] = ()) -> dict:
    """Give a container an interface on the overlay: an address claimed in the cluster store, the
    sandbox (made on the first endpoint here) with every remote endpoint programmed, a veth on
    its bridge. All or nothing, undone in reverse."""
    from ..cluster import alloc, local
    from .bridge import veth_name

    if publish:
        raise InvalidArgument(f"Cannot publish ports on overlay network {net['Name']}",
                              "published ports need a bridge network (Docker uses docker_gwbridge)", "connect a bridge network too")
    member = local.require()
    store = _store(member)
    cid = container["Id"]
    ep_id = endpoint_id(cid, net["Id"])
    claim = {"id": ep_id, "container": cid, "name": container["Name"], "host": member["host"], "aliases": list(aliases)}
    address = alloc.claim_address(store, cluster_record(net), claim, ip, int(member["lease"]))
    sub = IPv4Network(network_records.ipam(net)["Subnet"])
    endpoint = {"Name": container["Name"], "EndpointID": ep_id, "MacAddress": ipam.mac_for(address),
                "IPv4Address": f"{address}/{sub.prefixlen}", "IPv6Address": "", "HostVeth": veth_name(cid, net["Id"]),
                "Interface": ifname, "Aliases": list(aliases), "Ports": []}
    done = ["store"]
    try:
        with network_records.locked(net) as fresh:  # the sandbox under the record's lock: two attaches on one
            fresh["Containers"][cid] = endpoint  # host must not both create it, nor a detach tear it down
            done.append("record")
            made = ensure_sandbox(net, member)
        if made:
            from . import enforce

            enforce.apply()  # Docker's DOCKER-USER must let the new bridge through too
        remote = sync_peers(net, member, store)
        mtu = endpoint_mtu(net, member)
        link.veth_to_bridge(endpoint["HostVeth"], ifname, netns_path, net["netdiag"]["Bridge"], mtu, endpoint["MacAddress"])
        done.append("veth")
        from ..kernel.ns import netns

        with netns(netns_path):
            idx = link.index(ifname)
            addr.add(idx, address, sub.prefixlen)
            link.set_up(idx)
        done.append("dns")  # names of every host's endpoints, served in the container on 127.0.0.11
        dns_records.update_overlays({net["Id"]: remote}, {cid: {"netns": netns_path, "inode": os.stat(netns_path).st_ino}})
        dns_records.wait_served(netns_path, container["Name"])
    except BaseException:
        _undo(net, cid, endpoint, done, store)
        raise
    return endpoint


def _undo(net: dict, cid: str, endpoint: dict, done: list[str], store) -> None:
    from ..cluster import alloc

    for step in reversed(done):
        try:
            if step == "dns":
                continue  # the resolver lets the sandbox go with the record, below
            if step == "veth":
                link.delete(endpoint["HostVeth"])
            elif step == "record":  # and the sandbox with it when no other endpoint uses it (as detach)
                with network_records.locked(net) as fresh:
                    fresh["Containers"].pop(cid, None)
                    if not fresh["Containers"]:
                        teardown(fresh)
            elif step == "store":
                alloc.release_address(store, net["Id"], endpoint["EndpointID"], endpoint["IPv4Address"])
        except NetdiagError:
            pass  # the agent removes an endpoint of ours that no local record names
    if "dns" in done:
        try:
            dns_records.update_overlays()
        except NetdiagError:
            pass


def detach(net: dict, cid: str) -> None:
    """Remove a container's endpoint: here first (record; the sandbox with the last endpoint), then
    in the store. Idempotent; with the store down, the agent removes it once it answers again."""
    from ..cluster import alloc

    endpoint = None
    try:
        with network_records.locked(net) as fresh:
            endpoint = fresh["Containers"].pop(cid, None)
            if not fresh["Containers"]:
                teardown(fresh)
    except NetdiagError:
        return
    if endpoint is None:
        return
    link.delete(endpoint["HostVeth"])
    try:
        dns_records.update_overlays()  # its names go at once here, its sockets with its sandbox
    except NetdiagError:
        pass
    member = _member()
    if member is not None:
        try:
            alloc.release_address(_store(member), net["Id"], endpoint["EndpointID"], endpoint["IPv4Address"])
        except NetdiagError:
            pass


def inspect(net: dict) -> dict:
    """What `network inspect` adds for an overlay: the VNI, this host's VXLAN device and MTU, each
    member host with its VTEP, and every endpoint of the cluster with the host it lives on."""
    out = {"VNI": net["netdiag"].get("VNI"), "Vxlan": net["netdiag"].get("Vxlan"), "Peers": [], "ClusterEndpoints": {}}
    member = _member()
    if member is None:
        out["ClusterError"] = "this host is not a cluster member"
        return out
    try:
        eps, hosts = cluster_view(_store(member), net["Id"])
        out["MTU"] = endpoint_mtu(net, member)
    except NetdiagError as e:
        out["ClusterError"] = str(e)
        return out
    counts: dict[str, int] = {}
    for ep in eps:
        counts[ep.get("host")] = counts.get(ep.get("host"), 0) + 1
    out["Peers"] = [{"Name": h.get("name", ""), "IP": h.get("vtep"), "HostID": hid, "Endpoints": counts.get(hid, 0),
                     "Self": hid == member["host"]} for hid, h in sorted(hosts.items(), key=lambda kv: kv[1].get("name", ""))]
    for ep in sorted(eps, key=lambda e: e.get("ip", "")):
        h = hosts.get(ep.get("host"), {})
        out["ClusterEndpoints"][ep.get("container", ep.get("id", ""))] = {
            "Name": ep.get("name"), "IPv4Address": ep.get("ip"), "MacAddress": ep.get("mac"), "Host": h.get("name") or ep.get("host"),
            "HostID": ep.get("host"), "VTEP": h.get("vtep"), "Local": ep.get("host") == member["host"]}
    return out


def leave(member: dict) -> None:
    """This host leaves the cluster: every sandbox and mirror goes (endpoints must be gone)."""
    for net in network_records.overlays():
        teardown(net)
        network_records.delete(net)
