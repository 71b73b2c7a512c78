"""Cluster-wide allocation: VNIs, overlay subnets and endpoint addresses.

Planning is pure (pick_*); claiming is one etcd transaction per attempt that succeeds only if
nothing it decided on changed since it was read (optimistic concurrency, retried): two hosts that
create networks or attach endpoints at the same moment never get the same VNI, subnet or address.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Iterable

from ..errors import Conflict, InvalidArgument, NotFound
from .. import ipam
from . import keys
from .store import Store, absent, delete, empty, present, put, unchanged, value_is

VNI_MIN, VNI_MAX = 256, 2**24 - 1
ATTEMPTS = 16


class SubnetOverlap(Conflict):
    code = "SUBNET_OVERLAP"


def parse_vni(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if not VNI_MIN <= value <= VNI_MAX:
        raise InvalidArgument(f"Invalid VXLAN id {text!r}", f"a VNI is a number from {VNI_MIN} to {VNI_MAX}",
                              "use e.g. -o com.docker.network.driver.overlay.vxlanid_list=4097, or leave it out")
    return value


def pick_vni(used: Iterable[int], requested: int | None = None) -> int:
    used = set(used)
    if requested is not None:
        if requested in used:
            raise Conflict(f"VXLAN id {requested} is already used by another overlay network",
                           "one VNI carries one network", "choose another vxlanid_list value, or leave it out")
        return requested
    for vni in range(VNI_MIN, VNI_MAX + 1):
        if vni not in used:
            return vni
    raise Conflict("No free VXLAN id is left", "every VNI is in use", "remove unused overlay networks")


def default_pools() -> Iterable[IPv4Network]:
    """Docker's overlay pool: /24s out of 10.0.0.0/8 (10.0.1.0/24 first)."""
    for second in range(0, 256):
        for third in range(1 if second == 0 else 0, 256):
            yield IPv4Network(f"10.{second}.{third}.0/24")


def pick_subnet(taken: list[tuple[IPv4Network, str]], requested: IPv4Network | None = None) -> IPv4Network:
    if requested is not None:
        for other, what in taken:
            if requested.overlaps(other):
                raise SubnetOverlap(f"Subnet {requested} overlaps {what}",
                                    "two networks with overlapping addresses make routing ambiguous (SUBNET_OVERLAP)",
                                    "choose another --subnet, or leave it out to get a free one")
        return requested
    for pool in default_pools():
        if not any(pool.overlaps(other) for other, _ in taken):
            return pool
    raise Conflict("No free address pool is left for an overlay network", "10.0.0.0/8 is in use", "give --subnet")


def pick_ip(subnet: IPv4Network, gateway: IPv4Address, used: Iterable[str], requested: str | None = None) -> IPv4Address:
    return ipam.allocate(subnet, gateway, None, used, requested)


# -- transactions ------------------------------------------------------------------------------------
def claim_network(store: Store, record: dict, requested_subnet: IPv4Network | None, requested_vni: int | None,
                  gateway: IPv4Address | None, local_taken: list[tuple[IPv4Network, str]]) -> dict:
    """Claim name, VNI and subnet and write the network, in one transaction; returns the record
    with Subnet, Gateway and VNI filled in."""
    claims = keys.ROOT + "claims/"
    for _ in range(ATTEMPTS):
        found, rev = store.prefix(claims)
        names, vnis, subnets = set(), set(), []
        for key, owner, _ in found:
            kind, rest = keys.split(key)
            if kind == "claims/names" and rest:
                names.add(rest[0])
            elif kind == "claims/vnis" and rest and rest[0].isdigit():
                vnis.add(int(rest[0]))
            elif kind == "claims/subnets" and rest:
                addr, _, plen = rest[0].partition("_")
                subnets.append((IPv4Network(f"{addr}/{plen}"), f"overlay network {str(owner)[:12]}"))
        if record["Name"] in names:
            raise Conflict(f"Network {record['Name']!r} already exists in the cluster", "",
                           f"use it, or remove it first ('netdiag network rm {record['Name']}')")
        vni = pick_vni(vnis, requested_vni)
        subnet = pick_subnet(subnets + local_taken, requested_subnet)
        gw = gateway or ipam.default_gateway(subnet)
        ipam.check_pool(subnet, gw, None)
        rec = {**record, "Subnet": str(subnet), "Gateway": str(gw), "VNI": vni}
        nid = rec["Id"]
        if store.txn([unchanged(claims, rev)],
                     [put(keys.name(rec["Name"]), nid), put(keys.vni(vni), nid), put(keys.subnet(subnet), nid),
                      put(keys.network(nid), rec)], what=f"create network {rec['Name']}"):
            return rec
    raise Conflict(f"Cannot create network {record['Name']}", "other hosts kept changing the cluster's networks", "try again")


def release_network(store: Store, net: dict) -> None:
    """Remove a network and its claims, refused while any host has an endpoint on it."""
    nid = net["Id"]
    subnet = IPv4Network(net["Subnet"])
    ok = store.txn([present(keys.network(nid)), empty(keys.endpoints(nid))],
                   [delete(keys.network(nid)), delete(keys.name(net["Name"])), delete(keys.vni(net["VNI"])),
                    delete(keys.subnet(subnet)), delete(keys.ips(nid), prefix=True)], what=f"remove network {net['Name']}")
    if ok:
        return
    if store.get(keys.network(nid)) is None:
        return  # already gone: removal is idempotent
    eps, _ = store.prefix(keys.endpoints(nid))
    hosts = {h["id"]: h.get("name", h["id"][:12]) for _, h, _ in store.prefix(keys.HOSTS)[0] if isinstance(h, dict)}
    names = ", ".join(sorted(f"{e.get('name')} on {hosts.get(e.get('host'), str(e.get('host'))[:12])}" for _, e, _ in eps if isinstance(e, dict)))
    raise Conflict(f"Network {net['Name']} has active endpoints in the cluster ({names})",
                   "removing it would cut those containers off", "stop or disconnect them on their hosts first")


def claim_address(store: Store, net: dict, endpoint: dict, requested: str | None, lease: int) -> IPv4Address:
    """An address on the network for `endpoint` (claimed on the host's lease), written with it."""
    nid = net["Id"]
    subnet, gw = IPv4Network(net["Subnet"]), IPv4Address(net["Gateway"])
    for _ in range(ATTEMPTS):
        found, _ = store.prefix(keys.ips(nid))
        used = [key.rsplit("/", 1)[1] for key, _, _ in found]
        ip = pick_ip(subnet, gw, used, requested)
        ep = {**endpoint, "ip": f"{ip}/{subnet.prefixlen}", "mac": ipam.mac_for(ip)}
        if store.txn([present(keys.network(nid)), absent(keys.ip(nid, ip))],
                     [put(keys.ip(nid, ip), ep["id"], lease), put(keys.endpoint(nid, ep["id"]), ep, lease)],
                     what=f"attach to network {net['Name']}"):
            return ip
        if store.get(keys.network(nid)) is None:
            raise NotFound(f"Network {net['Name']} was removed from the cluster", "", "create it again, or use another network")
    raise Conflict(f"Cannot allocate an address on {net['Name']}", "other hosts kept taking addresses", "try again")


def register(store: Store, net_id: str, ep: dict, lease: int) -> bool:
    """Write an endpoint that already has its address again (a new lease after an agent restart):
    only while its address is free or still its own. False when someone else has it now."""
    ip = IPv4Address(ep["ip"].split("/")[0])
    ops = [put(keys.ip(net_id, ip), ep["id"], lease), put(keys.endpoint(net_id, ep["id"]), ep, lease)]
    return store.txn([present(keys.network(net_id)), value_is(keys.ip(net_id, ip), ep["id"])], ops) or \
        store.txn([present(keys.network(net_id)), absent(keys.ip(net_id, ip))], ops)


def release_address(store: Store, net_id: str, ep_id: str, ip: str) -> None:
    """Remove an endpoint and free its address (only if the address is still the endpoint's)."""
    addr = IPv4Address(ip.split("/")[0])
    store.txn([value_is(keys.ip(net_id, addr), ep_id)], [delete(keys.ip(net_id, addr)), delete(keys.endpoint(net_id, ep_id))],
              [delete(keys.endpoint(net_id, ep_id))])
