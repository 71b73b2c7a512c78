"""Planning a replay (pure, no root): which namespaces and names, which veth pairs and bridge ports,
what the firewall loads with which tool, what is validated away or stubbed, and why."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.scenario.replay_plan import plan
from runtime.errors import InvalidArgument

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


def snap():
    return copy.deepcopy(FIXTURE)


def space(p, name):
    return next(s for s in p["spaces"] if s["name"] == name)


def link(s, name):
    return next(x for x in s["links"] if x["name"] == name)


def host_of(d):
    return d["namespaces"][d["host"]]


def test_one_namespace_per_reachable_snapshot_namespace_with_short_names():
    p = plan(snap(), "rp1")
    assert p["host"] == "rp1-host"
    assert sorted(p["namespaces"].values()) == ["rp1-api", "rp1-db", "rp1-host", "rp1-out", "rp1-web"]  # the lab's -out is "out"
    assert p["namespaces"][FIXTURE["host"]] == "rp1-host" and p["stubs"] == {}
    assert any("ns:plain-" in s and "not joined" in s for s in p["skipped"])  # an unconnected namespace is not rebuilt
    assert all(len(n) <= 15 for n in p["namespaces"].values())


def test_veth_pairs_cross_namespaces_once_and_ports_keep_their_bridge():
    p = plan(snap(), "rp1")
    pairs = {(v["a"]["ns"], v["a"]["name"], v["b"]["ns"], v["b"]["name"]) for v in p["veths"]}
    assert pairs == {("rp1-host", "eth0", "rp1-out", "eth0"), ("rp1-host", "veth45a9c08", "rp1-web", "eth0"),
                     ("rp1-host", "veth44faa61", "rp1-api", "eth0"), ("rp1-host", "veth6f813bc", "rp1-db", "eth0")}
    host = space(p, "rp1-host")
    assert link(host, "docker0")["kind"] == "bridge"
    port = link(host, "veth45a9c08")
    assert (port["master"], port["hairpin"], port["mac"]) == ("docker0", True, "32:8f:2b:16:bc:9f")
    assert next(v for v in p["veths"] if v["a"]["name"] == "veth45a9c08")["b"]["mac"] == "02:42:ac:11:00:02"


def test_layer3_sysctls_and_stand_ins():
    p = plan(snap(), "rp1")
    host = space(p, "rp1-host")
    assert {"dev": "docker0", "address": "172.17.0.1", "prefixlen": 16} in host["addresses"]
    assert any(r["dst"] == "default" and r["gateway"] == "203.0.113.1" and r["dev"] == "eth0" for r in host["routes"])
    assert host["sysctls"][0] == ["net.ipv4.ip_forward", "net/ipv4/ip_forward", "1"]  # first: it resets per-interface forwarding
    api = space(p, "rp1-api")
    assert {"proto": "tcp", "local": "127.0.0.1", "port": 9000, "process": "httpd"} in api["servers"]
    assert host["nft"] and all("metainfo" not in item for item in host["nft"])
    assert any("stand-in" in s for s in p["skipped"]) and any("conntrack" in s for s in p["skipped"])


def test_an_interface_whose_far_side_is_missing_becomes_a_veth_to_a_stub_that_answers_for_the_gateway():
    d = snap()
    eth0 = link(host_of(d), "eth0")
    eth0.update(kind="device", peer={"ns": None, "index": None})
    p = plan(d, "rp1")
    assert "rp1-out" not in p["namespaces"].values()  # reached only through that veth
    (stub, where), = p["stubs"].items()
    assert (stub, where) == ("rp1-u1", "rp1-host/eth0")
    assert ("rp1-host", "eth0", "rp1-u1", "eth0") in {(v["a"]["ns"], v["a"]["name"], v["b"]["ns"], v["b"]["name"]) for v in p["veths"]}
    assert space(p, "rp1-u1")["addresses"] == [{"dev": "eth0", "address": "203.0.113.1", "prefixlen": 24}]
    assert space(p, "rp1-u1")["routes"] is None
    assert any("eth0: a physical device" in s and "rp1-u1" in s for s in p["skipped"])


def test_what_does_not_validate_never_reaches_the_plan():
    d = snap()
    h = host_of(d)
    h["links"].append({"index": 99, "name": "bad/name", "kind": "bridge", "mtu": 1500, "flags": [], "up": True, "master": None})
    h["addresses"].append({"ifname": "docker0", "address": "999.1.1.1", "local": None, "prefixlen": 24, "scope": "global"})
    h["routes"].append({"table": 254, "dst": "10.99.0.0/16", "gateway": None, "dev": "nosuchdev", "type": "unicast"})
    h["routes"].append({"table": 254, "dst": "10.98.0.0/16", "gateway": None, "dev": None, "type": "unicast"})
    h["sysctls"]["net.ipv4.conf.docker0.rp_filter"] = "1; reboot"
    h["sysctls"]["kernel.panic"] = "1"
    h["sockets"].append({"proto": "tcp", "local": "not-an-ip", "port": 1, "loopback_only": False})
    p = plan(d, "rp1")
    host = space(p, "rp1-host")
    assert "bad/name" not in {x["name"] for x in host["links"]}
    assert not any(a["address"] == "999.1.1.1" for a in host["addresses"])
    assert not any(r["dst"] in ("10.99.0.0/16", "10.98.0.0/16") for r in host["routes"])
    assert not any(k in ("net.ipv4.conf.docker0.rp_filter", "kernel.panic") for k, _, _ in host["sysctls"])
    text = "\n".join(p["skipped"])
    for why in ("'bad/name': not a valid interface name", "999.1.1.1", "device nosuchdev is not rebuilt",
                "multipath route", "not-an-ip"):
        assert why in text, why


def test_iptables_nft_tables_load_from_their_save_text_and_xt_rules_are_never_fed_to_nft():
    d = snap()
    h = host_of(d)
    xt = {"xt": {"type": "match", "name": "conntrack"}}
    h["nftables"]["nftables"] += [{"table": {"family": "ip", "name": "filter"}},
                                  {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "expr": [xt, {"drop": None}]}},
                                  {"table": {"family": "ip", "name": "raw2"}},
                                  {"rule": {"family": "ip", "table": "raw2", "chain": "PRE", "handle": 7, "expr": [xt, {"drop": None}]}}]
    h["iptables_save"] = {"ip": "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n"}
    host = space(plan(d, "rp1"), "rp1-host")
    assert host["iptables"] == h["iptables_save"]
    tables = {(body.get("family"), body.get("table", body.get("name"))) for item in host["nft"] for body in item.values()}
    assert ("ip", "filter") not in tables and ("ip", "raw2") in tables
    assert not any("xt" in e for item in host["nft"] for e in item.get("rule", {}).get("expr", []))
    assert any("raw2" in s and "xt" in s for s in plan(d, "rp1")["skipped"])


def test_sysctl_paths_of_interfaces_with_dots():
    d = snap()
    h = host_of(d)
    h["links"].append({"index": 50, "name": "eth0.100", "kind": "bridge", "mtu": 1500, "flags": [], "up": True, "master": None})
    h["sysctls"]["net.ipv4.conf.eth0.100.rp_filter"] = "2"
    host = space(plan(d, "rp1"), "rp1-host")
    assert ["net.ipv4.conf.eth0.100.rp_filter", "net/ipv4/conf/eth0.100/rp_filter", "2"] in host["sysctls"]
    assert [k for k, _, _ in host["sysctls"]].index("net.ipv4.ip_forward") == 0


def test_long_and_clashing_labels_stay_short_and_unique():
    d = snap()
    for ns in d["namespaces"].values():
        if ns["kind"] == "container":
            ns["name"] = "a-very-long-container-name"
    names = list(plan(d, "rp1234")["namespaces"].values())
    assert len(set(names)) == len(names) and all(len(n) <= 15 and n.startswith("rp1234-") for n in names)


@pytest.mark.parametrize("prefix", ["", "Rp", "rp/x", "rp 1", "a" * 11, "-rp"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(InvalidArgument):
        plan(snap(), prefix)


def test_a_document_that_is_not_a_snapshot_is_refused():
    for bad in ({}, {"namespaces": {}, "host": "ns-1"}, {"namespaces": {"ns-1": []}, "host": "ns-1"}, []):
        with pytest.raises(InvalidArgument):
            plan(bad, "rp1")


def test_vxlan_keeps_its_underlay_and_its_default_forwarding_entry():
    d = snap()
    h = host_of(d)
    h["links"].append({"index": 60, "name": "vx42", "kind": "vxlan", "mtu": 1450, "flags": [], "up": True, "master": None,
                       "mac": "02:00:00:00:00:42", "vxlan": {"vni": 42, "local": "203.0.113.2", "group": None, "port": 4789,
                                                             "dev": "eth0", "learning": False}})
    h["fdb"] += [{"ifname": "vx42", "lladdr": "00:00:00:00:00:00", "dst": "203.0.113.9", "vni": None, "state": "PERMANENT", "self": True},
                 {"ifname": "docker0", "lladdr": "32:8f:2b:16:bc:9f", "dst": None, "state": "PERMANENT", "self": False}]
    host = space(plan(d, "rp1"), "rp1-host")
    assert link(host, "vx42")["vxlan"] == {"vni": 42, "port": 4789, "local": "203.0.113.2", "group": None,
                                           "learning": False, "dev": "eth0"}
    assert host["fdb"] == [{"dev": "vx42", "lladdr": "00:00:00:00:00:00", "dst": "203.0.113.9", "vni": None}]
