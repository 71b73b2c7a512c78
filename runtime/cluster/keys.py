"""Keys of the cluster store (the layout is in the package docstring). Pure."""
from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

ROOT = "/netdiag/v1/"
HOSTS = ROOT + "hosts/"
NETWORKS = ROOT + "networks/"
NAMES = ROOT + "claims/names/"
VNIS = ROOT + "claims/vnis/"
SUBNETS = ROOT + "claims/subnets/"
ENDPOINTS = ROOT + "endpoints/"
IPS = ROOT + "ips/"

_ID = re.compile(r"^[0-9a-f]{12,64}$")


def _id(value: str) -> str:
    if not _ID.fullmatch(value):  # every id that reaches a key is ours: hex
        raise ValueError(f"not an id: {value!r}")
    return value


def host(host_id: str) -> str:
    return HOSTS + _id(host_id)


def network(net_id: str) -> str:
    return NETWORKS + _id(net_id)


def name(net_name: str) -> str:
    return NAMES + net_name  # validated by networks.network_records.validate_name: [a-zA-Z0-9][a-zA-Z0-9_.-]*


def vni(value: int) -> str:
    return VNIS + str(int(value))


def subnet(value: IPv4Network) -> str:
    return SUBNETS + f"{value.network_address}_{value.prefixlen}"


def endpoints(net_id: str) -> str:
    return ENDPOINTS + _id(net_id) + "/"


def endpoint(net_id: str, ep_id: str) -> str:
    return endpoints(net_id) + _id(ep_id)


def ips(net_id: str) -> str:
    return IPS + _id(net_id) + "/"


def ip(net_id: str, address: IPv4Address) -> str:
    return ips(net_id) + str(IPv4Address(address))


def split(key: str) -> tuple[str, list[str]]:
    """'/netdiag/v1/endpoints/N/E' -> ('endpoints', ['N', 'E']); ('', []) for a foreign key."""
    if not key.startswith(ROOT):
        return "", []
    parts = key[len(ROOT):].split("/")
    if parts[0] == "claims":
        return "claims/" + (parts[1] if len(parts) > 1 else ""), parts[2:]
    return parts[0], parts[1:]
