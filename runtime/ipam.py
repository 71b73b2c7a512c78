"""Address management for networks (bridge and overlay): pools, gateways, sequential allocation,
Docker's MACs. Pure, below runtime.networks and runtime.cluster (whose allocator plans overlay
subnets and addresses with it)."""
from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network
from collections.abc import Iterable

from .errors import Conflict, InvalidArgument

DEFAULT_BRIDGE_SUBNET = IPv4Network("172.17.0.0/16")

# ranges that are not usable unicast: a bridge on them breaks the host or every later container
# (127/8 shadows the host's own loopback services, 224/4 makes every route "unreachable")
_NOT_UNICAST = (
    (IPv4Network("0.0.0.0/8"), "is 'this network' (0.0.0.0/8), never a real address"),
    (IPv4Network("127.0.0.0/8"), "is loopback (127.0.0.0/8): containers would route their own lo, and the host's "
                                 "127.0.0.1 services (its DNS forwarder) would be shadowed"),
    (IPv4Network("169.254.0.0/16"), "is link-local (169.254.0.0/16), which the kernel never forwards"),
    (IPv4Network("224.0.0.0/4"), "is multicast (224.0.0.0/4): no container can have such an address"),
    (IPv4Network("240.0.0.0/4"), "is reserved class E (240.0.0.0/4), dropped by the kernel"),
)


def check_unicast(net: IPv4Network, what: str = "Subnet") -> None:
    for bad, why in _NOT_UNICAST:
        if net.overlaps(bad):
            raise InvalidArgument(f"{what} {net} cannot be used for containers", f"it {why}",
                                  "choose a private range such as 10.x.0.0/16, 172.16-31.0.0/16 or 192.168.x.0/24")


def parse_subnet(text: str, what: str = "Subnet") -> IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise InvalidArgument(f"Invalid subnet {text!r}", str(e), "use CIDR notation with the network address, e.g. 172.20.0.0/16") from None
    if net.version != 4:
        raise InvalidArgument(f"Subnet {text} is IPv6", "bridge networks here are IPv4 only", "use an IPv4 CIDR")
    if net.prefixlen > 30:
        raise InvalidArgument(f"Subnet {text} is too small", "it needs room for a gateway and at least one container", "use a /30 or larger")
    check_unicast(net, what)
    return net


def parse_ip(text: str, what: str = "address") -> IPv4Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"Invalid {what} {text!r}", "it is not an IPv4 address", "use dotted notation, e.g. 172.20.0.10") from None
    if ip.version != 4:
        raise InvalidArgument(f"Invalid {what} {text!r}", "only IPv4 is supported", "use an IPv4 address")
    return ip


def check_host_address(ip: IPv4Address, subnet: IPv4Network, what: str = "--ip") -> None:
    """An address a container (or gateway) can have on `subnet`: inside it, not its network or broadcast address."""
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"Address {ip} ({what}) is not a host address of subnet {subnet}",
                              "it must lie inside the network's subnet, and not be its first or last address",
                              f"choose an address inside {subnet}, e.g. {subnet.network_address + 2}")


def check_pool(subnet: IPv4Network, gateway: IPv4Address, ip_range: IPv4Network | None) -> None:
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"Gateway {gateway} is outside subnet {subnet}", "the gateway must be a host address of the subnet", f"use e.g. --gateway {next(subnet.hosts())}")
    if ip_range is not None and not ip_range.subnet_of(subnet):
        raise InvalidArgument(f"IP range {ip_range} is not inside subnet {subnet}", "", "choose an --ip-range within --subnet")


def default_gateway(subnet: IPv4Network) -> IPv4Address:
    return subnet.network_address + 1


def allocate(subnet: IPv4Network, gateway: IPv4Address, ip_range: IPv4Network | None,
             used: Iterable[str], requested: str | None = None) -> IPv4Address:
    """The requested address if free, else the lowest free host of the range (from .2 upwards)."""
    taken = {IPv4Address(u) for u in used} | {gateway}
    if requested:
        ip = parse_ip(requested)
        check_host_address(ip, subnet)
        if ip in taken:
            raise Conflict(f"Address {ip} is already in use on this network",
                           "it is the gateway" if ip == gateway else "another container has it", "choose another --ip, or leave --ip out")
        return ip
    pool = ip_range or subnet
    for ip in pool.hosts() if pool.prefixlen < 31 else pool:
        if ip not in taken and ip != subnet.network_address and ip != subnet.broadcast_address:
            return ip
    raise Conflict(f"No free address left in {pool}", f"all {pool.num_addresses - 2} addresses are in use",
                   "disconnect containers or create a network with a larger --subnet")


def mac_for(ip: IPv4Address) -> str:
    """Docker's rule: 02:42 followed by the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def candidate_pools() -> Iterable[IPv4Network]:
    """Docker's default pools for new networks after 172.17/16: 172.18-31/16, then 192.168.x.0/20."""
    for second in range(17, 32):
        yield IPv4Network(f"172.{second}.0.0/16")
    for third in range(0, 256, 16):
        yield IPv4Network(f"192.168.{third}.0/20")


def free_pool(in_use: Iterable[IPv4Network], skip_default: bool = True) -> IPv4Network:
    in_use = list(in_use)
    for pool in candidate_pools():
        if skip_default and pool == DEFAULT_BRIDGE_SUBNET:
            continue
        if not any(pool.overlaps(u) for u in in_use):
            return pool
    raise Conflict("No free address pool is left for a new network", "172.17-31.0.0/16 and 192.168.0.0/16 are all in use",
                   "remove unused networks ('netdiag network prune') or give --subnet")
