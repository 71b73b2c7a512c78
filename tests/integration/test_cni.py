"""`netdiag run --network cni:NAME` with Debian's real CNI plugins (bridge + host-local, portmap,
firewall) inside a lab host: traffic between pods and through a published port, DEL on rm and
after a crash, and bad conflists refused with nothing left behind. Everything the plugins write
(bridge, veths, iptables chains, IPAM files, cached results) stays in the lab's namespace and
state directory; the machine's /var/lib/cni is checked untouched."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.labkit import wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="containernetworking-plugins not installed")]

SUBNET = "10.88.0.0/24"
MACHINE_CNI = Path("/var/lib/cni")


def conflist(lab, name="pods", *, plugins=None, version="1.0.0") -> Path:
    """A Kubernetes-node-like conflist whose IPAM state lives in the lab's state directory."""
    plugins = plugins if plugins is not None else [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(lab.root / "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
    ]
    d = lab.root / "net.d"
    d.mkdir(exist_ok=True)
    path = d / f"10-{name}.conflist"
    path.write_text(json.dumps({"cniVersion": version, "name": name, "plugins": plugins}))
    return path


@pytest.fixture
def cni_lab(lab):
    machine_before = MACHINE_CNI.exists()
    lab.env["NETDIAG_CNI_CONF_DIR"] = str(lab.root / "net.d")
    try:
        yield lab
    finally:
        for cid in lab.run("ps", "-aq").stdout.split():
            lab.run("rm", "-f", cid)
        lab.run("system", "prune")
        pins = lab.root / "cni" / "netns"
        for pin in (pins.iterdir() if pins.is_dir() else ()):  # a failed test's pins must not outlive the lab
            subprocess.run(["umount", "-l", str(pin)], capture_output=True)
    assert MACHINE_CNI.exists() == machine_before, "a plugin wrote the machine's /var/lib/cni"


def _endpoint(lab, name, net="cni:pods"):
    return lab.inspect(name)["NetworkSettings"]["Networks"][net]


def _web(lab, name, *extra):
    lab.ok("run", "-d", "--name", name, "--network", "cni:pods", *extra, "busybox", "sh", "-c",
           f"mkdir /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www")


def _reserved(lab, net="pods"):
    """host-local's reservations: one file per address, named by it."""
    d = lab.root / "ipam" / net
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.is_dir() else []


def _rules(lab) -> str:
    return lab.in_lab("iptables-nft-save").stdout


def _link_exists(lab, name) -> bool:
    return lab.in_lab("ip", "link", "show", name).returncode == 0


def test_two_containers_on_a_cni_bridge_reach_each_other_and_rm_runs_del(cni_lab):
    lab = cni_lab
    conflist(lab)
    _web(lab, "pa")
    lab.ok("run", "-d", "--name", "pb", "--network", "cni:pods", "busybox", "sleep", "300")
    a, b = _endpoint(lab, "pa"), _endpoint(lab, "pb")
    assert {a["IPAddress"], b["IPAddress"]} == {"10.88.0.2", "10.88.0.3"} and a["IPPrefixLen"] == 24
    assert a["Gateway"] == "10.88.0.1" and a["Interface"] == "eth0"
    # the bridge plugin's veth is on its cni0 in the lab host, the address is host-local's in the lab's dataDir
    assert "master cni0" in lab.in_lab("ip", "-o", "link", "show", a["HostVeth"]).stdout
    assert _reserved(lab) == ["10.88.0.2", "10.88.0.3"]
    cached = sorted(p.name for p in (lab.root / "cni" / "results").iterdir())
    ids = {n: lab.inspect(n)["Id"] for n in ("pa", "pb")}
    assert cached == sorted(f"pods-{cid}-eth0" for cid in ids.values())
    doc = json.loads((lab.root / "cni" / "results" / f"pods-{ids['pa']}-eth0").read_text())
    assert doc["kind"] == "cniCacheV1" and doc["result"]["ips"][0]["address"] == "10.88.0.2/24"

    p = lab.run("exec", "pb", "timeout", "3", "wget", "-qO-", f"http://{a['IPAddress']}/")
    assert p.returncode == 0 and p.stdout == "pa\n", p.stderr
    assert "default via 10.88.0.1" in lab.ok("exec", "pb", "ip", "route")
    # a snapshot carries the CNI network and its pods, and trace replays it offline
    snap = lab.root / "snap.json"
    lab.ok("snapshot", "-o", str(snap))
    offline = lab.run("trace", "--snapshot", str(snap), "pb", "pa", "--port", "80", "--json", timeout=120)
    assert offline.returncode == 0 and json.loads(offline.stdout)["verdict"] == "delivered", offline.stdout + offline.stderr
    nets = {n["name"]: n for n in json.loads(snap.read_text())["networks"]}
    assert nets["cni:pods"]["driver"] == "cni" and nets["cni:pods"]["bridge"] == "cni0"
    # CHECK of every attachment, through network inspect
    net = json.loads(lab.ok("network", "inspect", "cni:pods"))[0]
    assert net["Driver"] == "cni" and set(net["CNI"]["Check"].values()) == {"ok"}

    lab.ok("rm", "-f", "pa")
    assert not _link_exists(lab, a["HostVeth"]) and _link_exists(lab, b["HostVeth"])
    assert _reserved(lab) == ["10.88.0.3"]
    assert ids["pa"] not in _rules(lab) and ids["pb"] in _rules(lab)  # the masquerade chain, the firewall accepts
    assert not (lab.root / "cni" / "results" / f"pods-{ids['pa']}-eth0").exists()
    lab.ok("rm", "-f", "pb")
    assert _reserved(lab) == [] and "10.88.0." not in _rules(lab)
    assert list((lab.root / "cni" / "netns").iterdir()) == []
    assert lab.ok("network", "rm", "cni:pods").strip() == "cni:pods"


def test_a_port_published_through_portmap_is_reachable_from_outside(cni_lab):
    lab = cni_lab
    conflist(lab)
    _web(lab, "web", "-p", "8080:80")
    p = lab.outside_get("http://203.0.113.2:8080/")
    assert p.returncode == 0 and p.stdout == "web\n", p.stderr
    assert lab.inspect("web")["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
    cid = lab.inspect("web")["Id"]
    assert cid in _rules(lab)  # the masquerade chain's comment names it
    # trace follows the published port through portmap's DNAT onto cni0 and into the container
    t = lab.run("trace", f"ns:{lab.outside}", "203.0.113.2", "--port", "8080", "--json", timeout=120)
    result = json.loads(t.stdout)
    assert t.returncode == 0 and result["verdict"] == "delivered" and "10.88.0.2:80" in result["summary"], result["summary"]
    assert [h["interface"] for h in result["hops"] if h["kind"] == "bridge"] == ["cni0"]
    # someone flushes portmap's entry chain: the port is dead, and CHECK (network inspect) says which plugin
    lab.in_lab("iptables", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT")
    assert lab.outside_get("http://203.0.113.2:8080/", timeout=2).returncode != 0
    check = json.loads(lab.ok("network", "inspect", "cni:pods"))[0]["CNI"]["Check"][cid]
    assert check.startswith("CNI plugin portmap failed (CHECK)"), check
    lab.ok("stop", "-t", "1", "web")  # stopping DELs too: the port is closed, the address free
    assert lab.outside_get("http://203.0.113.2:8080/", timeout=2).returncode != 0
    assert _reserved(lab) == [] and cid not in _rules(lab)


def test_a_killed_container_is_deleted_by_prune_with_the_config_it_was_added_with(cni_lab):
    lab = cni_lab
    path = conflist(lab)
    _web(lab, "pk", "-p", "8081:80")
    ep, cid = _endpoint(lab, "pk"), lab.inspect("pk")["Id"]
    st = json.loads((lab.root / "containers" / cid / "state.json").read_text())
    os.kill(st["MonitorPid"], signal.SIGKILL)  # monitor and container gone: nobody ran DEL
    os.kill(st["Pid"], signal.SIGKILL)
    assert wait_for(lambda: lab.inspect("pk")["State"]["Status"] == "exited")
    # the pinned namespace keeps the attachment whole for DEL: veth, address, rules all still there
    assert _link_exists(lab, ep["HostVeth"]) and _reserved(lab) == ["10.88.0.2"] and cid in _rules(lab)
    path.unlink()  # the conflist is gone too: DEL uses the copy cached with the result, like libcni
    out = lab.ok("system", "prune")
    assert cid[:12] in out
    assert not _link_exists(lab, ep["HostVeth"]) and _reserved(lab) == [] and cid not in _rules(lab)
    assert list((lab.root / "cni" / "results").iterdir()) == [] and list((lab.root / "cni" / "netns").iterdir()) == []
    assert lab.ok("system", "prune") == lab.ok("system", "prune")  # DEL and prune are idempotent


@pytest.mark.parametrize("plugins,version,says", [
    ([{"type": "no-such-plugin"}], "1.0.0", "CNI plugin 'no-such-plugin' is not installed"),
    ([{"type": "bridge", "ipam": {"type": "host-local", "subnet": SUBNET}}], "9.9.9", "does not support cniVersion 9.9.9"),
    ([{"type": "bridge", "mtu": "wide", "ipam": {"type": "host-local", "subnet": SUBNET}}], "1.0.0", "CNI plugin bridge failed (ADD)"),
    ([{"type": "bridge", "ipam": {"type": "host-local", "subnet": SUBNET}}, {"type": "portmap", "snat": "yes"}],
     "1.0.0", "CNI plugin portmap failed (ADD)"),
], ids=["missing-plugin", "unsupported-version", "plugin-rejects-config", "second-plugin-fails"])
def test_a_bad_conflist_exits_125_and_leaves_nothing(cni_lab, plugins, version, says):
    lab = cni_lab
    conflist(lab, plugins=[dict(p, ipam=dict(p["ipam"], dataDir=str(lab.root / "ipam"))) if "ipam" in p else p
                           for p in plugins], version=version)
    p = lab.run("run", "--rm", "--name", "px", "--network", "cni:pods", "busybox", "true")
    assert p.returncode == 125 and says in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert lab.ok("ps", "-aq") == "" and _reserved(lab) == []
    assert not (lab.root / "cni" / "results").is_dir() or list((lab.root / "cni" / "results").iterdir()) == []
    assert not (lab.root / "cni" / "netns").is_dir() or list((lab.root / "cni" / "netns").iterdir()) == []
    assert [line for line in lab.in_lab("ip", "-o", "link").stdout.splitlines() if "veth" in line] == []


def test_an_unknown_cni_network_names_the_conflists_there(cni_lab):
    lab = cni_lab
    conflist(lab, "pods")
    p = lab.run("run", "--rm", "--network", "cni:nodes", "busybox", "true")
    assert p.returncode == 125 and "No CNI network 'nodes'" in p.stderr and "pods" in p.stderr, p.stderr
    assert "cni:" not in lab.ok("network", "ls")


def test_parallel_runs_get_distinct_addresses_and_a_restart_adds_again(cni_lab):
    from concurrent.futures import ThreadPoolExecutor

    lab = cni_lab
    conflist(lab)
    names = [f"p{i}" for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(lambda n: lab.run("run", "-d", "--name", n, "--network", "cni:pods", "busybox", "sleep", "300"), names))
    assert all(p.returncode == 0 for p in runs), [p.stderr for p in runs]
    ips = {n: _endpoint(lab, n)["IPAddress"] for n in names}
    assert len(set(ips.values())) == 6 and _reserved(lab) == sorted(ips.values())
    net = json.loads(lab.ok("network", "inspect", "cni:pods"))[0]
    assert sorted(e["Name"] for e in net["Containers"].values()) == names
    lab.ok("restart", "-t", "1", "p0")  # DEL at the stop, ADD at the start: the attachment is whole again
    ep = _endpoint(lab, "p0")
    assert ep["IPAddress"].startswith("10.88.0.") and _link_exists(lab, ep["HostVeth"])
    assert lab.run("exec", "p0", "ping", "-c", "1", "-W", "2", ips["p1"]).returncode == 0
    assert len(_reserved(lab)) == 6
    for n in names:
        lab.ok("rm", "-f", n)
    assert _reserved(lab) == [] and list((lab.root / "cni" / "netns").iterdir()) == []


def test_network_create_d_cni_records_a_conflist_and_prune_forgets_it(cni_lab):
    lab = cni_lab
    conflist(lab)
    bad = lab.run("network", "create", "-d", "cni", "--subnet", "10.9.0.0/24", "pods")
    assert bad.returncode == 2 and "conflist" in bad.stderr
    assert lab.ok("network", "create", "-d", "cni", "pods")
    rows = [json.loads(line) for line in lab.ok("network", "ls", "--format", "json").splitlines()]
    assert [(r["Name"], r["Driver"]) for r in rows if r["Name"].startswith("cni:")] == [("cni:pods", "cni")]
    assert "cni:pods" in lab.ok("network", "prune", "-f")
    assert "cni:" not in lab.ok("network", "ls")
    assert not _link_exists(lab, "cni0")  # recording a conflist runs no plugin: only ADD makes the bridge


def test_a_foreground_rm_run_is_added_and_deleted_by_its_monitor(cni_lab):
    """The monitor runs DEL after the container's init is gone, when nothing can be forked into the
    container's PID namespace any more: the plugins must be forked outside it."""
    lab = cni_lab
    conflist(lab)
    p = lab.run("run", "--rm", "--network", "cni:pods", "busybox", "sh", "-c", "ip -o -4 addr show eth0; ps")
    assert p.returncode == 0 and "10.88.0.2/24" in p.stdout, p.stderr
    assert "bridge" not in p.stdout and "portmap" not in p.stdout  # no plugin was a process of the container
    assert lab.ok("ps", "-aq") == "" and _reserved(lab) == [] and "10.88.0." not in _rules(lab)
    assert list((lab.root / "cni" / "results").iterdir()) == [] and list((lab.root / "cni" / "netns").iterdir()) == []
