"""IPAM and published-port parsing: pure logic behind `network create` and `run -p`."""
from ipaddress import IPv4Address, IPv4Network

import pytest

from runtime.errors import Conflict, InvalidArgument
from runtime import ipam
from runtime.networks import ports


def test_sequential_allocation_skips_gateway_and_respects_range():
    sub, gw = IPv4Network("172.17.0.0/16"), IPv4Address("172.17.0.1")
    assert str(ipam.allocate(sub, gw, None, [])) == "172.17.0.2"
    assert str(ipam.allocate(sub, gw, None, ["172.17.0.2", "172.17.0.3"])) == "172.17.0.4"
    assert str(ipam.allocate(sub, IPv4Address("172.17.0.2"), None, [])) == "172.17.0.1"
    rng = IPv4Network("172.17.5.0/24")
    assert str(ipam.allocate(sub, gw, rng, [])) == "172.17.5.1"


def test_static_addresses_and_exhaustion():
    sub, gw = IPv4Network("10.0.0.0/30"), IPv4Address("10.0.0.1")
    assert str(ipam.allocate(sub, gw, None, [], "10.0.0.2")) == "10.0.0.2"
    with pytest.raises(Conflict, match="gateway"):
        ipam.allocate(sub, gw, None, [], "10.0.0.1")
    with pytest.raises(Conflict, match="in use"):
        ipam.allocate(sub, gw, None, ["10.0.0.2"], "10.0.0.2")
    with pytest.raises(InvalidArgument):
        ipam.allocate(sub, gw, None, [], "10.0.0.3")  # broadcast
    with pytest.raises(Conflict, match="No free address"):
        ipam.allocate(sub, gw, None, ["10.0.0.2"])


def test_docker_mac_and_pools():
    assert ipam.mac_for(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
    assert ipam.free_pool([IPv4Network("172.17.0.0/16")]) == IPv4Network("172.18.0.0/16")
    taken = [IPv4Network(f"172.{i}.0.0/16") for i in range(16, 32)]
    assert ipam.free_pool(taken) == IPv4Network("192.168.0.0/20")
    assert ipam.free_pool([IPv4Network("172.16.0.0/12")]) == IPv4Network("192.168.0.0/20")


@pytest.mark.parametrize("bad", ["10.0.0.1/24", "10.0.0.0/33", "nonsense", "fd00::/64", "10.0.0.0/31"])
def test_bad_subnets(bad):
    with pytest.raises(InvalidArgument):
        ipam.parse_subnet(bad)


def test_gateway_and_range_must_be_inside():
    sub = IPv4Network("10.1.0.0/24")
    with pytest.raises(InvalidArgument, match="outside subnet"):
        ipam.check_pool(sub, IPv4Address("10.2.0.1"), None)
    with pytest.raises(InvalidArgument, match="not inside"):
        ipam.check_pool(sub, IPv4Address("10.1.0.1"), IPv4Network("10.1.1.0/25"))


@pytest.mark.parametrize("spec,want", [
    ("80", (None, 0, 0, 80, 80, "tcp")),
    ("8080:80", (None, 8080, 8080, 80, 80, "tcp")),
    ("127.0.0.1:8080:80/udp", ("127.0.0.1", 8080, 8080, 80, 80, "udp")),
    ("127.0.0.1::80", ("127.0.0.1", 0, 0, 80, 80, "tcp")),
    ("0.0.0.0:8000-8010:9000-9010", (None, 8000, 8010, 9000, 9010, "tcp")),
])
def test_port_specs(spec, want):
    p = ports.parse(spec)
    assert (p["host_ip"], p["host_start"], p["host_end"], p["ctr_start"], p["ctr_end"], p["proto"]) == want


@pytest.mark.parametrize("spec", ["70000:80", "0:80", "a:80", "1-3:1-2", "::1:80:80", "80/sctp", "10-5:10-5"])
def test_bad_port_specs(spec):
    with pytest.raises(InvalidArgument):
        ports.parse(spec)


def test_port_assignment_refuses_clashes_and_picks_free_ports():
    taken = [dict(ports.parse("8080:80"), container="a" * 64)]
    with pytest.raises(Conflict, match="already allocated"):
        ports.assign([ports.parse("8080:81")], taken)
    assert ports.assign([ports.parse("127.0.0.2:8081:80")], taken)[0]["host_start"] == 8081
    udp = ports.assign([ports.parse("8080:80/udp")], taken)[0]
    assert udp["proto"] == "udp"
    auto = ports.assign([ports.parse("80"), ports.parse("81")], [])
    assert auto[0]["host_start"] == 32768 and auto[1]["host_start"] == 32769
    assert ports.describe(ports.parse("127.0.0.1:8000-8001:80-81")) == "127.0.0.1:8000-8001->80-81/tcp"


@pytest.mark.parametrize("subnet", ["127.0.0.0/24", "224.0.0.0/24", "169.254.0.0/24", "0.0.0.0/8", "240.0.0.0/24",
                                    "0.0.0.0/0", "192.0.0.0/2"])
def test_subnets_that_are_not_usable_unicast_are_refused(subnet):
    with pytest.raises(InvalidArgument, match="cannot be used for containers"):
        ipam.parse_subnet(subnet)


def test_a_host_address_is_inside_and_not_network_or_broadcast():
    net = IPv4Network("10.1.0.0/24")
    ipam.check_host_address(IPv4Address("10.1.0.7"), net)
    for bad in ("10.1.0.0", "10.1.0.255", "10.2.0.7"):
        with pytest.raises(InvalidArgument, match="not a host address"):
            ipam.check_host_address(IPv4Address(bad), net)
