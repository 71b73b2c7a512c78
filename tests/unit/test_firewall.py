"""render() of the bridge-network firewall: pure, no root. Golden-ish: exact rule lines."""
import re

import pytest

from runtime.kernel import nft
from runtime.errors import Conflict, InvalidArgument, KernelError
from runtime.networks.firewall import NetSpec, PortSpec, render

DEFAULT = NetSpec("a" * 64, "docker0", "172.17.0.0/16", "172.17.0.1", internal=False, icc=True, masquerade=True)
USER = NetSpec("0123456789abcdef" * 4, "br-0123456789ab", "172.18.0.0/16", "172.18.0.1",
               internal=False, icc=True, masquerade=True)
WEB = PortSpec("tcp", None, 8080, 8080, "172.18.0.2", 80, 80, "br-0123456789ab", "c0ffee00c0ffee00")


def chain(script: str, table: str, name: str) -> list[str]:
    """The rule lines of one chain of one table in a rendered script (head line excluded)."""
    body = script.split(f"table {table} {{\n", 1)[1]
    rules = []
    for ln in body.split(f"\tchain {name} {{\n", 1)[1].splitlines():
        if ln == "\t}":
            return rules
        if not ln.strip().startswith("type "):
            rules.append(ln.strip())
    raise AssertionError(f"chain {name} is not closed")


def test_default_and_user_net_with_published_port():
    s = render([USER, DEFAULT], [WEB])
    assert s.startswith(
        "table ip netdiag {}\ndelete table ip netdiag\ntable bridge netdiag {}\ndelete table bridge netdiag\n"
    )
    assert s.count("table ip netdiag {\n") == 1 and s.count("table bridge netdiag {\n") == 1
    assert 'elements = { "br-0123456789ab", "docker0" }' in s
    assert chain(s, "ip netdiag", "prerouting") == ['fib daddr type local jump published comment "published ports"']
    assert "type nat hook prerouting priority dstnat; policy accept;" in s
    assert "type nat hook output priority -100; policy accept;" in s
    assert "type nat hook postrouting priority srcnat; policy accept;" in s
    assert "type filter hook forward priority filter; policy accept;" in s
    assert chain(s, "ip netdiag", "published") == [
        'tcp dport 8080 dnat to 172.18.0.2:80 comment "port 8080->c0ffee00c0ff:80/tcp"'
    ]
    assert chain(s, "ip netdiag", "postrouting") == [
        'ip saddr 172.18.0.0/16 oifname != "br-0123456789ab" masquerade comment "masquerade br-0123456789ab"',
        'oifname "br-0123456789ab" ip saddr 172.18.0.0/16 ct status dnat masquerade comment "hairpin br-0123456789ab"',
        'oifname "br-0123456789ab" ip saddr 127.0.0.0/8 masquerade comment "localhost to br-0123456789ab"',
        'ip saddr 172.17.0.0/16 oifname != "docker0" masquerade comment "masquerade docker0"',
        'oifname "docker0" ip saddr 172.17.0.0/16 ct status dnat masquerade comment "hairpin docker0"',
        'oifname "docker0" ip saddr 127.0.0.0/8 masquerade comment "localhost to docker0"',
    ]
    fwd = chain(s, "ip netdiag", "forward")
    assert [re.sub(r' comment ".*"$', "", r) for r in fwd] == [
        'iifname "br-0123456789ab" oifname != "br-0123456789ab" oifname @bridges drop',
        'iifname "docker0" oifname != "docker0" oifname @bridges drop',
        'oifname "br-0123456789ab" ct state established,related accept',
        'oifname "docker0" ct state established,related accept',
        'oifname "br-0123456789ab" ct status dnat accept',
        'oifname "docker0" ct status dnat accept',
        'oifname "br-0123456789ab" iifname != "br-0123456789ab" drop',
        'oifname "docker0" iifname != "docker0" drop',
        'iifname "br-0123456789ab" accept',
        'iifname "docker0" accept',
    ]
    # icc everywhere: the bridge table has its base chain and nothing else
    assert chain(s, "bridge netdiag", "forward") == []
    assert "set ports_" not in s


def test_deterministic():
    p2 = PortSpec("udp", None, 53, 53, "172.17.0.5", 53, 53, "docker0")
    assert render([USER, DEFAULT], [WEB, p2]) == render([DEFAULT, USER], [p2, WEB])


def test_same_offset_range_is_one_rule():
    p = PortSpec("tcp", None, 8000, 8999, "172.18.0.2", 8000, 8999, "br-0123456789ab", "abc")
    rules = chain(render([USER], [p]), "ip netdiag", "published")
    assert rules == ['tcp dport 8000-8999 dnat to 172.18.0.2 comment "port 8000-8999->abc:8000-8999/tcp"']


def test_offset_range_is_one_map_rule():
    p = PortSpec("udp", None, 5000, 5002, "172.18.0.2", 6000, 6002, "br-0123456789ab", "abc")
    rules = chain(render([USER], [p]), "ip netdiag", "published")
    assert rules == [
        "udp dport 5000-5002 dnat ip to udp dport map "
        "{ 5000 : 172.18.0.2 . 6000, 5001 : 172.18.0.2 . 6001, 5002 : 172.18.0.2 . 6002 } "
        'comment "port 5000-5002->abc:6000-6002/udp"'
    ]
    big = PortSpec("tcp", None, 20000, 20999, "172.18.0.2", 30000, 30999, "br-0123456789ab")
    rules = chain(render([USER], [big]), "ip netdiag", "published")
    assert len(rules) == 1 and rules[0].count(" : 172.18.0.2 . ") == 1000
    assert "20999 : 172.18.0.2 . 30999 }" in rules[0]


def test_loopback_and_specific_host_ip():
    lo = PortSpec("tcp", "127.0.0.1", 8080, 8080, "172.18.0.2", 80, 80, "br-0123456789ab", "abc")
    ext = PortSpec("tcp", "192.0.2.7", 8080, 8080, "172.18.0.3", 80, 80, "br-0123456789ab", "def")
    anyv4 = PortSpec("tcp", "0.0.0.0", 9090, 9090, "172.18.0.3", 90, 90, "br-0123456789ab", "def")
    rules = chain(render([USER], [ext, lo, anyv4]), "ip netdiag", "published")
    assert rules == [
        'tcp dport 9090 dnat to 172.18.0.3:90 comment "port 9090->def:90/tcp"',
        'ip daddr 127.0.0.1 tcp dport 8080 dnat to 172.18.0.2:80 comment "port 127.0.0.1:8080->abc:80/tcp"',
        'ip daddr 192.0.2.7 tcp dport 8080 dnat to 172.18.0.3:80 comment "port 192.0.2.7:8080->def:80/tcp"',
    ]


def test_internal_net():
    internal = NetSpec("fe", "br-int", "10.9.0.0/24", "10.9.0.1", internal=True, icc=True, masquerade=True)
    s = render([internal, USER], [])
    post = chain(s, "ip netdiag", "postrouting")
    assert not any(r.startswith("ip saddr 10.9.0.0/24") for r in post)  # no masquerade out of it
    assert 'oifname "br-int" ip saddr 10.9.0.0/24 ct status dnat masquerade comment "hairpin br-int"' in post
    fwd = chain(s, "ip netdiag", "forward")
    # the internal drops come before every accept of any network
    assert fwd[:2] == [
        'iifname "br-int" oifname != "br-int" drop comment "internal br-int"',
        'oifname "br-int" iifname != "br-int" drop comment "internal br-int"',
    ]
    first_accept = min(i for i, r in enumerate(fwd) if " accept" in r)
    assert first_accept > max(i for i, r in enumerate(fwd) if "@bridges drop" in r)


def test_icc_false_uses_a_bridge_port_set():
    n = NetSpec("0123456789abcdef", "br-noicc", "172.20.0.0/16", "172.20.0.1",
                internal=False, icc=False, masquerade=True, ports=("vethb2", "vetha1"))
    s = render([n, DEFAULT], [])
    bridge_table = s.split("table bridge netdiag {\n", 1)[1]
    assert "\tset ports_0123456789ab {\n\t\ttype ifname\n\t\telements = { \"vetha1\", \"vethb2\" }\n\t}" in bridge_table
    assert chain(s, "bridge netdiag", "forward") == [
        'iifname @ports_0123456789ab oifname @ports_0123456789ab drop comment "icc off on br-noicc"'
    ]
    assert "type filter hook forward priority 0; policy accept;" in bridge_table
    assert "ibrname" not in s


def test_empty_is_valid_and_has_base_chains():
    s = render([], [])
    assert "set bridges {\n\t\ttype ifname\n\t}" in s
    for name in ("published", "postrouting", "forward"):
        assert chain(s, "ip netdiag", name) == []
    assert len(chain(s, "ip netdiag", "prerouting")) == 1 and len(chain(s, "ip netdiag", "output")) == 1
    assert chain(s, "bridge netdiag", "forward") == []


def _net(**kw):
    base = dict(id="ab12", bridge="br-x", subnet="10.1.0.0/24", gateway="10.1.0.1",
                internal=False, icc=True, masquerade=True)
    base.update(kw)
    return NetSpec(**base)


def _port(**kw):
    base = dict(proto="tcp", host_ip=None, host_start=80, host_end=80, ctr_ip="10.1.0.2",
                ctr_start=80, ctr_end=80, bridge="br-x")
    base.update(kw)
    return PortSpec(**base)


@pytest.mark.parametrize("net", [
    _net(bridge="br0; flush ruleset"),
    _net(bridge='br"0'),
    _net(bridge="a" * 16),
    _net(bridge=""),
    _net(id="xyz"),
    _net(id="ab12\n"),
    _net(subnet="10.1.0.0/33"),
    _net(subnet="10.1.0.1/24"),  # host bits set
    _net(subnet="fd00::/64"),
    _net(gateway="10.2.0.1"),  # outside the subnet
    _net(gateway="not-an-ip"),
    _net(ports=("veth0 } flush ruleset",)),
    _net(internal="yes"),
])
def test_bad_network_specs(net):
    with pytest.raises(InvalidArgument):
        render([net], [])


@pytest.mark.parametrize("port", [
    _port(host_start=0, host_end=0),
    _port(host_start=70000, host_end=70000),
    _port(ctr_start=0, ctr_end=0),
    _port(ctr_start=80, ctr_end=70000),
    _port(host_start=8000, host_end=8010, ctr_start=80, ctr_end=85),  # mismatched ranges
    _port(host_start=8000, host_end=8010, ctr_start=80, ctr_end=80),  # host range, single ctr port
    _port(host_start=8080, host_end=8080, ctr_start=80, ctr_end=81),  # single host port, ctr range
    _port(host_start=90, host_end=80, ctr_start=90, ctr_end=80),  # reversed
    _port(proto="sctp"),
    _port(proto="tcp; flush ruleset"),
    _port(host_ip="1.2.3.4; flush ruleset"),
    _port(host_ip="::1"),
    _port(ctr_ip="10.1.0.256"),
    _port(bridge="br-x y"),
    _port(container='x" ; flush ruleset'),
    _port(host_start=True, host_end=True),
])
def test_bad_port_specs(port):
    with pytest.raises(InvalidArgument):
        render([_net()], [port])


def test_overlapping_published_ports_conflict():
    with pytest.raises(Conflict):
        render([_net()], [_port(), _port(ctr_ip="10.1.0.3")])
    with pytest.raises(Conflict):  # a wildcard overlaps every address
        render([_net()], [_port(host_ip="127.0.0.1"), _port(host_start=70, host_end=90, ctr_start=70, ctr_end=90)])
    # same port on two different addresses, or tcp and udp: fine
    render([_net()], [_port(host_ip="127.0.0.1"), _port(host_ip="192.0.2.1"), _port(proto="udp")])


def test_duplicate_bridges_conflict():
    with pytest.raises(Conflict):
        render([_net(), _net(id="cd34", subnet="10.2.0.0/24", gateway="10.2.0.1")], [])


def test_missing_libnftables_says_what_to_install(monkeypatch):
    monkeypatch.setattr(nft, "_lib", None)
    monkeypatch.setattr(nft, "LIBRARY", "libnftables-does-not-exist.so.9")
    with pytest.raises(KernelError, match="install nftables"):
        nft.run("list tables")


def test_nft_rejects_bad_table_names_before_nft():
    with pytest.raises(InvalidArgument):
        nft.ruleset_json("ip", "x; flush ruleset")
    with pytest.raises(InvalidArgument):
        nft.ruleset_json("nosuchfamily", "netdiag")
