"""Address management for bridge networks: pools, gateways, sequential allocation, Docker's MACs."""
from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable

from ..errors import Conflict, InvalidArgument

DEFAULT_BRIDGE_SUBNET = IPv4Network("172.17.0.0/16")


def parse_subnet(text: str) -> IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise InvalidArgument(f"Invalid subnet {text!r}", str(e), "use CIDR notation with the network address, e.g. 172.20.0.0/16") from None
    if net.version != 4:
        raise InvalidArgument(f"Subnet {text} is IPv6", "bridge networks here are IPv4 only", "use an IPv4 CIDR")
    if net.prefixlen > 30:
        raise InvalidArgument(f"Subnet {text} is too small", "it needs room for a gateway and at least one container", "use a /30 or larger")
    return net


def parse_ip(text: str, what: str = "address") -> IPv4Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"Invalid {what} {text!r}", "it is not an IPv4 address", "use dotted notation, e.g. 172.20.0.10") from None
    if ip.version != 4:
        raise InvalidArgument(f"Invalid {what} {text!r}", "only IPv4 is supported", "use an IPv4 address")
    return ip


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
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            raise InvalidArgument(f"Address {ip} is not a host address of subnet {subnet}", "", f"choose an --ip inside {subnet}")
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
