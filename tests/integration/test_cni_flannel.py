"""Two Kubernetes-like nodes with flannel's vxlan layout (netdiag.worlds.flannel: cni0 per node, a
/24 each of 10.244.0.0/16, flannel.1 with static FDB/ARP entries and routes), pods made by
`netdiag run --network cni:cbr0` through the real bridge/host-local/portmap plugins: pod to pod
across nodes, `netdiag trace` across the VXLAN, and flannel's everyday faults named."""
import contextlib
import json
import os

import pytest

from netdiag.worlds.flannel import FlannelLab, vtep_mac

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="containernetworking-plugins not installed")]

WEB = "10.244.1.2"  # the first pod of node1's /24
CLIENT = "10.244.2.2"  # the first pod of node2's /24


@contextlib.contextmanager
def flannel_nodes(**kw):
    """A FlannelLab with pod `web` (httpd, hostPort 8080 through portmap) on node1 and pod `client` on node2;
    nothing left after."""
    w = FlannelLab(**kw)
    w.create()
    try:
        assert w.netdiag("run", "-d", "--name", "web", "--network", "cni:cbr0", "-p", "8080:80", "busybox", "sh", "-c",
                         "echo node1 > /i.html; exec httpd -f -p 80 -h /", where="node1").returncode == 0
        assert w.netdiag("run", "-d", "--name", "client", "--network", "cni:cbr0", "busybox", "sleep", "600",
                         where="node2").returncode == 0
        yield w
    finally:
        for node, name in (("node1", "web"), ("node2", "client")):
            w.netdiag("rm", "-f", name, where=node)
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"


@pytest.fixture
def nodes():
    with flannel_nodes() as w:
        yield w


def _trace(w, *extra):
    p = w.netdiag("trace", "client", WEB, "--port", "80", "--json", *extra, where="node2", timeout=120)
    return p.returncode, json.loads(p.stdout)


def _get(w):
    return w.netdiag("exec", "client", "timeout", "3", "wget", "-qO-", f"http://{WEB}/i.html", where="node2")


def _both_ways(w) -> bool:
    """client -> web over HTTP, and web -> client (ping): the pod-to-pod path across flannel.1 in both directions."""
    back = w.netdiag("exec", "web", "ping", "-c", "1", "-W", "2", CLIENT, where="node1")
    return _get(w).returncode == 0 and back.returncode == 0


def _apply_fix(w, result, where="node2"):
    """The printed fix_command, run as printed through a shell on the node, after netdiag checked it on the model."""
    assert result["fix_command"], result["fix"]
    assert result["fix_check"]["checked"] and result["fix_check"]["delivers"], result["fix_check"]
    p = w.run_in(where, ["sh", "-c", result["fix_command"]], env=w.user_env(where), timeout=60)
    assert p.returncode == 0, (result["fix_command"], p.stderr)


def test_a_pod_reaches_a_pod_on_the_other_node_and_trace_follows_it_through_flannel(nodes):
    w = nodes
    assert w.netdiag("inspect", "web", where="node1").returncode == 0
    p = _get(w)
    assert p.returncode == 0 and p.stdout == "node1\n", p.stderr
    assert _both_ways(w)
    # the pod's interface got flannel's MTU from the conflist, its routes from host-local
    assert "mtu 1450" in w.netdiag("exec", "client", "ip", "link", "show", "eth0", where="node2").stdout
    code, result = _trace(w)
    assert code == 0 and result["verdict"] == "delivered", result["summary"]
    # the pod on the other node by its container name and where it runs, not as pid:N (httpd)
    assert result["hops"][-1]["label"] == f"web (netdiag container on ns:{os.path.basename(w.namespace('node1'))})", result["hops"][-1]
    vx = [(h["namespace"], h["direction"]) for h in result["hops"] if h["interface"] == "flannel.1"]
    ns_id = {n: f"ns-{os.stat(w.namespace(n)).st_ino}" for n in ("node1", "node2")}
    assert vx == [(ns_id["node2"], "egress"), (ns_id["node1"], "ingress")], vx  # encapsulated, then decapsulated
    assert any(e["kind"] == "vxlan" and "198.51.100.1:8472" in e["detail"] for e in result["evidence"])


def test_a_missing_fdb_entry_is_overlay_peer_unknown(nodes):
    w = nodes
    w.run_in("node2", ["bridge", "fdb", "del", vtep_mac(1), "dev", "flannel.1", "dst", "198.51.100.1"])
    assert _get(w).returncode != 0
    code, result = _trace(w)
    assert code == 1 and result["cause"] == "OVERLAY_PEER_UNKNOWN", result["summary"]
    assert vtep_mac(1) in result["summary"]
    # flannel.1 carries an address and sits on no bridge: the VTEP is the peer device that owns the next hop
    assert result["fix_command"] == f"bridge fdb append {vtep_mac(1)} dev flannel.1 dst 198.51.100.1", result["fix"]
    _apply_fix(w, result)
    assert _both_ways(w)


def test_a_missing_route_to_the_other_nodes_pod_subnet_is_no_route(nodes):
    w = nodes
    w.run_in("node2", ["ip", "route", "del", "10.244.1.0/24"])
    assert _get(w).returncode != 0
    code, result = _trace(w)
    assert code == 1 and result["cause"] == "NO_ROUTE", result["summary"]
    # flannel's own route to the other node's pod /24, not a default route into the underlay
    assert result["fix_command"] == "ip route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink", result["fix"]
    _apply_fix(w, result)
    assert _both_ways(w)


def test_pods_with_an_mtu_larger_than_flannels_vxlan_are_an_mtu_blackhole_for_icmp_and_pmtud_for_tcp():
    with flannel_nodes(pod_mtu=1500) as w:  # the conflist gives pods 1500 while flannel.1 carries 1450
        assert "mtu 1500" in w.netdiag("exec", "client", "ip", "link", "show", "eth0", where="node2").stdout
        p = w.netdiag("trace", "client", WEB, "--proto", "icmp", "--size", "1472", "--json", where="node2", timeout=120)
        result = json.loads(p.stdout)
        assert p.returncode == 1 and result["cause"] == "MTU_BLACKHOLE", result["summary"]
        small = w.netdiag("trace", "client", WEB, "--proto", "icmp", "--size", "1000", "--json", where="node2", timeout=120)
        assert small.returncode == 0, small.stdout
        # TCP is not black-holed here: node2 routes the pod's segments into flannel.1 and answers the
        # too-big ones with ICMP 'fragmentation needed', so TCP learns the path MTU (a 64 KiB body gets through)
        w.netdiag("exec", "web", "sh", "-c", "dd if=/dev/zero bs=1k count=64 > /big", where="node1")
        body = w.netdiag("exec", "client", "sh", "-c", f"timeout 5 wget -qO- http://{WEB}/big | wc -c", where="node2")
        assert body.stdout.strip() == "65536", body
        p = w.netdiag("trace", "client", WEB, "--port", "80", "--size", "1472", "--json", where="node2", timeout=120)
        result = json.loads(p.stdout)
        assert p.returncode == 0 and result["verdict"] == "delivered", result["summary"]
        assert result["reconciled"].startswith("static and live agree once path MTU discovery is counted"), result["reconciled"]
        mtu = [e["detail"] for e in result["evidence"] if e["kind"] == "mtu"]
        # the step is flannel.1 on node2 (not the pod's own eth0, where TCP segments to fit), with the conflist's fix
        assert any(d.startswith("path MTU discovery at host flannel.1") and '"mtu": 1450 in the bridge plugin of the CNI '
                   "conflist cbr0" in d for d in mtu), mtu


def test_a_flushed_hostport_chain_is_an_unhooked_published_port_and_its_jump_comes_back(nodes):
    w = nodes
    node1 = "198.51.100.1"
    hostport = ["timeout", "3", "wget", "-qO-", f"http://{node1}:8080/i.html"]
    assert w.run_in("node2", hostport).stdout == "node1\n"
    w.run_in("node1", ["iptables", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT"])  # portmap's entry chain
    assert w.run_in("node2", hostport).returncode != 0
    p = w.netdiag("trace", "host", node1, "--port", "8080", "--json", where="node2", timeout=120)
    result = json.loads(p.stdout)
    # not a missing server: portmap's per-pod DNAT chain is still there, nothing jumps to it
    assert p.returncode == 1 and result["cause"] == "PORT_NOT_PUBLISHED", result["summary"]
    assert "10.244.1.2:80" in result["summary"], result["summary"]
    assert " iptables -t nat -I CNI-HOSTPORT-DNAT -p tcp -m multiport --dports 8080 -j CNI-DN-" in result["fix_command"]
    _apply_fix(w, result)
    assert w.run_in("node2", hostport).stdout == "node1\n"
    assert w.netdiag("exec", "client", *hostport, where="node2").stdout == "node1\n"
