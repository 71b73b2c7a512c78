"""Seeing the network in a lab: discovery of netdiag containers and plain namespaces, veths matched
to the right container and bridge, inspect's network view, snapshots, and read-only-ness."""
import json
import subprocess

import jsonschema
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def populated(lab):
    lab.ok("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80")
    lab.ok("network", "create", "--subnet", "10.50.0.0/24", "back")
    lab.ok("run", "-d", "--name", "api", "--network", "back", "busybox", "sh", "-c",
           "httpd -p 127.0.0.1:9000 && exec httpd -f -p 80")
    plain = f"{lab.name}-plain"
    subprocess.run(["ip", "netns", "add", plain], check=True)
    try:
        # a plain namespace wired to the lab host by hand, the way people test things
        lab.in_lab("ip", "link", "add", "vplain", "type", "veth", "peer", "name", "inner", "netns", plain)
        lab.in_lab("ip", "addr", "add", "192.0.2.1/24", "dev", "vplain")
        lab.in_lab("ip", "link", "set", "vplain", "up")
        subprocess.run(["ip", "-n", plain, "addr", "add", "192.0.2.2/24", "dev", "inner"], check=True)
        subprocess.run(["ip", "-n", plain, "link", "set", "inner", "up"], check=True)
        yield lab, plain
    finally:
        subprocess.run(["ip", "netns", "del", plain])


def _state(lab):
    """What a read-only command must not change in the lab host: links (name, flags, master, mtu),
    addresses, routes, rules, sysctls. Operstate and bridge timers move by themselves; link-netnsid
    numbers are allocated by the kernel whenever anyone (ip included) asks about a veth peer."""
    links = sorted((x["ifname"], tuple(sorted(set(x["flags"]) - {"LOWER_UP", "NO-CARRIER"})), x.get("master"), x["mtu"])
                   for x in json.loads(lab.in_lab("ip", "-j", "link").stdout))
    addrs = sorted((x["ifname"], a["local"], a["prefixlen"]) for x in json.loads(lab.in_lab("ip", "-j", "-4", "addr").stdout)
                   for a in x["addr_info"])
    return [links, addrs] + [lab.in_lab(*cmd).stdout for cmd in (
        ["nft", "list", "ruleset"], ["ip", "-4", "route", "show", "table", "all"], ["ip", "rule"],
        ["sysctl", "-a", "--pattern", "^net.ipv4.(ip_forward|conf)"])]


def test_snapshot_matches_every_veth_to_its_container_and_bridge(populated, tmp_path):
    lab, plain = populated
    before = _state(lab)
    out = tmp_path / "snap.json"
    lab.ok("snapshot", "-o", str(out))
    snap = json.loads(out.read_text())
    from tests.unit.test_schemas import schema

    jsonschema.validate(snap, schema("snapshot"))  # what it writes is what the schema documents
    host = snap["namespaces"][snap["host"]]
    assert "ndlab" in host["netns_names"][0]
    by_name = {ns["name"]: ns for ns in snap["namespaces"].values() if ns["kind"] == "container"}
    networks = json.loads(lab.ok("network", "inspect", "bridge", "back"))
    for net in networks:
        for cid, ep in net["Containers"].items():
            ns = by_name[ep["Name"]]
            eth0 = next(link for link in ns["links"] if link["name"] == "eth0")
            assert eth0["peer"]["ns"] == snap["host"] and eth0["peer"]["name"] == ep["HostVeth"]
            host_end = next(link for link in host["links"] if link["name"] == ep["HostVeth"])
            assert host_end["master"] == net["Bridge"] and host_end["peer"]["ns"] == ns["id"]
    plain_ns = next(ns for ns in snap["namespaces"].values() if plain in ns["netns_names"])
    assert plain_ns["kind"] == "netns"
    inner = next(link for link in plain_ns["links"] if link["name"] == "inner")
    assert inner["peer"] == {"ns": snap["host"], "index": inner["peer"]["index"], "name": "vplain"}
    api = by_name["api"]
    assert {(s["local"], s["port"]) for s in api["sockets"] if s["proto"] == "tcp"} >= {("127.0.0.1", 9000)}
    assert any(r["chain"] == "published" for r in [i["rule"] for i in host["nftables"]["nftables"] if "rule" in i])
    assert _state(lab) == before  # observing changed nothing


def test_inspect_net_view_of_container_netns_and_host(populated):
    lab, plain = populated
    v = json.loads(lab.ok("inspect", "--net", "--json", "api"))
    assert v["container"]["name"] == "api"
    assert v["host_side"][0]["bridge"].startswith("br-")
    assert any("127.0.0.1:9000" in f for f in v["findings"])
    v = json.loads(lab.ok("inspect", "--json", f"ns:{plain}"))
    assert v["namespace"]["kind"] == "netns"
    assert v["interfaces"][-1]["peer"] == {"namespace": "host", "interface": "vplain", "up": True}
    text = lab.ok("inspect", "--net", "web")
    assert "docker0" in text and "published 0.0.0.0:8080 -> 80/tcp" in text
    assert "203.0.113.2/24" in lab.ok("inspect", "host")


def test_without_cap_sys_admin_it_says_what_is_missing(populated):
    lab, _ = populated
    cmd = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"]
    import sys

    p = subprocess.run(cmd + [sys.executable, "-m", "netdiag", "inspect", "--net", "host"], capture_output=True, text=True,
                       env=lab.env, preexec_fn=lab.enter(), timeout=60)
    assert p.returncode == 0, p.stderr
    assert "203.0.113.2/24" in p.stdout  # its own namespace needs no privilege
    p = subprocess.run(cmd + [sys.executable, "-m", "netdiag", "inspect", "--net", "web"], capture_output=True, text=True,
                       env=lab.env, preexec_fn=lab.enter(), timeout=60)
    assert p.returncode == 3 and "CAP_SYS_ADMIN" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(cmd + [sys.executable, "-m", "netdiag", "topo"], capture_output=True, text=True,
                       env=lab.env, preexec_fn=lab.enter(), timeout=60)
    assert p.returncode == 0 and "could not be entered without root" in p.stderr


def test_the_machines_own_namespace_is_outside_a_labs_world(populated, tmp_path):
    """Run in a lab, netdiag models the lab: the machine's own namespace (whose eth0 may hold the
    very address the lab gives its plain namespace: 192.0.2.2 on some VMs) is no part of it, so a
    trace never ends there and no fix is ever printed for it."""
    from netdiag.observe.discover import _machine_ns

    lab, plain = populated
    machine = f"ns-{_machine_ns()}"
    assert machine == f"ns-{__import__('os').stat('/proc/self/ns/net').st_ino}"  # the tests run in it
    out = tmp_path / "snap.json"
    lab.ok("snapshot", "-o", str(out))
    snap = json.loads(out.read_text())
    assert machine not in snap["namespaces"]
    assert any(plain in ns["netns_names"] for ns in snap["namespaces"].values())
    r = json.loads(lab.run("trace", "host", "192.0.2.2", "--port", "80", "--json", "--static").stdout)
    hops = {h["namespace"] for h in r["hops"]}
    assert machine not in hops and any(plain in snap["namespaces"][h]["netns_names"] for h in hops if h in snap["namespaces"]), r
