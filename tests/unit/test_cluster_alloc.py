"""The cluster's pure parts: store URLs, the key layout, VNI/subnet/address planning, which remote
endpoints a host programs, and the firewall's VXLAN guard as rendered nft."""
from ipaddress import IPv4Address, IPv4Network

import pytest

from runtime.cluster import alloc, keys
from runtime.cluster.store import empty, parse_url, unchanged
from runtime.errors import Conflict, InvalidArgument
from runtime.networks import firewall, overlay


def test_store_urls_are_parsed_and_bad_ones_refused():
    assert parse_url("etcd://10.0.0.1:2379,etcd2:2380") == [("10.0.0.1", 2379), ("etcd2", 2380)]
    assert parse_url("etcd://10.0.0.1") == [("10.0.0.1", 2379)]
    for bad in ("http://10.0.0.1:2379", "etcd://", "etcd://a b:1", "etcd://h:99999", "etcd://h;rm:1"):
        with pytest.raises(InvalidArgument):
            parse_url(bad)


def test_keys_only_take_hex_ids_and_split_back():
    nid = "ab" * 32
    assert keys.endpoint(nid, "cd" * 32) == f"/netdiag/v1/endpoints/{nid}/{'cd' * 32}"
    assert keys.split(keys.ip(nid, IPv4Address("10.0.1.2"))) == ("ips", [nid, "10.0.1.2"])
    assert keys.split(keys.subnet(IPv4Network("10.0.1.0/24"))) == ("claims/subnets", ["10.0.1.0_24"])
    assert keys.split("/other/x") == ("", [])
    with pytest.raises(ValueError):
        keys.network("../hosts")


def test_range_compares_cover_exactly_the_prefix():
    c = empty("/netdiag/v1/endpoints/x/")
    assert (c["target"], c["result"], c["create_revision"]) == ("CREATE", "EQUAL", 0)
    import base64

    assert base64.b64decode(c["range_end"]) == b"/netdiag/v1/endpoints/x0"  # '/' + 1
    assert unchanged("/p/", 41)["mod_revision"] == 42


def test_vni_planning_within_256_to_2_24():
    assert alloc.pick_vni([]) == 256
    assert alloc.pick_vni([256, 257, 259]) == 258
    assert alloc.pick_vni([256], requested=4097) == 4097
    with pytest.raises(Conflict):
        alloc.pick_vni([4097], requested=4097)
    for bad in ("255", "16777216", "x", "-1"):
        with pytest.raises(InvalidArgument):
            alloc.parse_vni(bad)
    assert alloc.parse_vni("16777215") == 2**24 - 1


def test_subnet_planning_skips_every_overlap_and_refuses_a_requested_one():
    taken = [(IPv4Network("10.0.1.0/24"), "ov1"), (IPv4Network("10.0.2.0/23"), "the host's route")]
    assert alloc.pick_subnet(taken) == IPv4Network("10.0.4.0/24")
    assert alloc.pick_subnet([]) == IPv4Network("10.0.1.0/24")
    with pytest.raises(alloc.SubnetOverlap, match="overlaps ov1"):
        alloc.pick_subnet(taken, IPv4Network("10.0.0.0/16"))
    assert alloc.pick_subnet(taken, IPv4Network("10.9.0.0/24")) == IPv4Network("10.9.0.0/24")


def test_address_planning_skips_gateway_and_used():
    sub = IPv4Network("10.0.1.0/24")
    assert alloc.pick_ip(sub, IPv4Address("10.0.1.1"), ["10.0.1.2"]) == IPv4Address("10.0.1.3")
    with pytest.raises(Conflict):
        alloc.pick_ip(sub, IPv4Address("10.0.1.1"), ["10.0.1.5"], "10.0.1.5")


def test_a_host_programs_the_endpoints_of_live_members_but_its_own():
    hosts = {"a" * 16: {"id": "a" * 16, "vtep": "198.51.100.1"}, "c" * 16: {"id": "c" * 16, "vtep": "198.51.100.3"}}
    eps = [{"host": "a" * 16, "ip": "10.0.1.2/24", "mac": "02:42:0a:00:01:02"},
           {"host": "c" * 16, "ip": "10.0.1.3/24", "mac": "02:42:0A:00:01:03"},
           {"host": "d" * 16, "ip": "10.0.1.4/24", "mac": "02:42:0a:00:01:04"},  # its host's lease is gone
           {"host": "c" * 16, "ip": "garbage", "mac": "x"},
           {"host": "c" * 16, "ip": "10.0.1.9/24", "mac": "02:42:0a:00:01:09 dev lo"}]  # never reaches netlink
    assert overlay.remote_endpoints(eps, hosts, "a" * 16) == {"02:42:0a:00:01:03": ("10.0.1.3", "198.51.100.3")}


def test_the_vxlan_guard_accepts_members_only_in_netdiags_own_table():
    script = firewall.render([], [], ["198.51.100.3", "198.51.100.1"])
    assert "elements = { 198.51.100.1, 198.51.100.3 }" in script
    assert 'udp dport 4789 ip saddr != @vteps counter drop' in script
    assert "hook input" in script and "table ip netdiag {" in script
    assert "vxlan_guard" not in firewall.render([], [])
    with pytest.raises(InvalidArgument):
        firewall.render([], [], ["198.51.100.1; flush ruleset"])
