"""Pods that a kubelet's runtime wired with the real CNI plugins (bridge + host-local, portmap,
firewall), not netdiag: namespaces /run/netns/cni-<uuid> ADDed through runtime.networks.cni.sandbox
in a lab host (netdiag.worlds.kubelet), their results in the lab's CNI cache. netdiag finds them as
endpoints `cni:ID` (and by namespace name), and names what the plugins' chains lack after a flush:
the firewall plugin's accept, the bridge plugin's masquerade, and a hostPort two pods claim.

One lab and its pods for the whole module (each test puts back what it breaks); nothing is left,
and the machine's /var/lib/cni is untouched."""
import json
import os
import re
from pathlib import Path

import pytest

from netdiag.worlds.kubelet import KubeletPods
from tests.labkit import World

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="containernetworking-plugins not installed")]

NET = "k8s-pod-network"
MACHINE_CNI = Path("/var/lib/cni")


class Node:
    """The lab host playing a Kubernetes node, its pods `web` (hostPort 8080 -> 80) and `client`."""

    def __init__(self, lab: World, pods: KubeletPods):
        self.lab, self.pods = lab, pods
        self.web = pods.add(NET, ports=["8080:80"], serve="web-v1")
        self.client = pods.add(NET)

    def trace(self, *args: str) -> tuple[int, dict]:
        p = self.lab.run("trace", *args, "--json", timeout=120)
        assert p.stdout, p.stderr
        return p.returncode, json.loads(p.stdout)

    def client_get(self, url: str) -> str | None:
        p = self.lab.run_in(self.client.netns, ["timeout", "3", "busybox", "wget", "-qO-", url], timeout=10)
        return p.stdout if p.returncode == 0 else None

    def apply(self, result: dict) -> None:
        """The printed fix, run as printed on the node, after netdiag checked it on the model."""
        assert result["fix_command"], result["fix"]
        assert result["fix_check"]["checked"] and result["fix_check"]["delivers"], result["fix_check"]
        p = self.lab.run_in("host", ["sh", "-c", result["fix_command"]], timeout=30)
        assert p.returncode == 0, (result["fix_command"], p.stderr)

    def saved(self, table: str) -> str:
        return self.lab.in_lab("iptables-save", "-t", table).stdout

    def restore(self, table: str, text: str) -> None:
        assert self.lab.run_in("host", ["iptables-restore"], input=text, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    machine_before = MACHINE_CNI.exists()
    lab = World(state_dir=tmp_path_factory.mktemp("cnipods") / "ndroot")
    pods = KubeletPods(lab)
    lab.create()
    try:
        lab.env["NETDIAG_CNI_CONF_DIR"] = str(lab.root / "net.d")
        (lab.root / "net.d").mkdir()
        (lab.root / "net.d" / "10-k8s.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": NET, "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(lab.root / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"}]}))
        lab.outside_server(lab.root, 80, "outside\n")
        yield Node(lab, pods)
    finally:
        pods.destroy()
        lab.destroy()
    assert not pods.leaks() and not lab.leaks(), pods.leaks() + lab.leaks()
    assert MACHINE_CNI.exists() == machine_before, "a plugin wrote the machine's /var/lib/cni"


def test_a_kubelets_pods_are_endpoints_by_cni_id_and_by_namespace_name(node):
    lab, web, client = node.lab, node.web, node.client
    assert (lab.root / "cni" / "results" / f"{NET}-{web.id}-eth0").is_file()  # the lab's cache, written by the plugins' ADD
    assert "cni:" not in lab.ok("ps", "-a")  # not netdiag's containers
    view = json.loads(lab.ok("inspect", "--net", web.name, "--json"))
    assert view["namespace"]["label"] == f"{web.name} (CNI pod on {NET})" and view["namespace"]["kind"] == "container"
    assert view["container"]["runtime"] == "cni" and view["container"]["networks"] == [NET]
    assert [i["addresses"] for i in view["interfaces"] if i["name"] == "eth0"] == [[f"{web.ip}/24"]]
    assert view["host_side"][0]["bridge"] == "cni0", view["host_side"]
    for other in (f"ns:{web.netns_name}", web.netns_name, f"cni:{web.id}"):  # the same pod by its namespace and its full id
        assert json.loads(lab.ok("inspect", "--net", other, "--json"))["namespace"]["id"] == view["namespace"]["id"], other

    topo = json.loads(lab.ok("topo", "--json"))
    pods = {n["label"]: n for n in topo["nodes"] if n["kind"] == "namespace" and n["engine"] == "cni"}
    assert set(pods) == {web.name, client.name} and pods[web.name]["container"]["ports"][0]["host_port"] == 8080
    assert any(n.get("network", {}).get("name") == NET and n["network"]["engine"] == "cni" for n in topo["nodes"]), \
        [n.get("network") for n in topo["nodes"] if n["kind"] == "bridge"]

    code, result = node.trace(client.name, web.name, "--port", "80")
    assert code == 0 and result["verdict"] == "delivered", result["summary"]
    assert [h["label"] for h in result["hops"]][0] == f"{client.name} (CNI pod on {NET})"
    assert result["reconciled"] == "static and live agree"
    health = lab.run("health", f"{web.ip}:80", "--from", client.name, "--http", "/", "--json", timeout=60)
    assert health.returncode == 0 and json.loads(health.stdout)["healthy"], health.stdout + health.stderr
    checks = lab.root / "pods.yaml"
    checks.write_text(f"checks:\n  - reach: {{from: \"{client.name}\", to: \"{web.netns_name}\", port: 80}}\n"
                      f"  - published: {{target: \"{web.name}\", port: 80, host_port: 8080}}\n")
    p = lab.run("check", str(checks), timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr

    snap = lab.root / "pods.json"
    lab.ok("snapshot", "-o", str(snap))
    doc = json.loads(snap.read_text())
    mine = {c["name"]: c for c in doc["containers"] if c["runtime"] == "cni"}
    assert mine[web.name]["networks"][NET]["ip"] == web.ip and mine[web.name]["netns_names"] == [web.netns_name]
    assert mine[web.name]["ports"] == [{"proto": "tcp", "ctr_port": 80, "host_ip": "", "host_port": 8080}]
    assert [(n["name"], n["bridge"]) for n in doc["networks"] if n["runtime"] == "cni"] == [(NET, "cni0")]
    offline = lab.run("trace", "--snapshot", str(snap), client.name, web.name, "--port", "80", "--json", timeout=60)
    assert offline.returncode == 0 and json.loads(offline.stdout)["verdict"] == "delivered", offline.stdout


def test_a_cached_result_whose_namespace_is_gone_is_reported_not_named(node):
    results = node.lab.root / "cni" / "results"
    stale = results / f"{NET}-{'f' * 64}-eth0"
    doc = json.loads((results / f"{NET}-{node.web.id}-eth0").read_text())
    stale.write_text(json.dumps({**doc, "containerId": "f" * 64, "netns": "/run/netns/cni-gone"}))
    try:
        snap = node.lab.root / "stale.json"
        node.lab.ok("snapshot", "-o", str(snap))
        snapshot = json.loads(snap.read_text())
        assert f"cni:{'f' * 12}" not in {c["name"] for c in snapshot["containers"]}
        assert any("cni-gone" in e.get("error", "") and "DEL" in e["error"] for e in snapshot["errors"]), snapshot["errors"]
    finally:
        stale.unlink()


def test_a_flushed_firewall_plugin_chain_under_a_dropping_forward_is_put_back_as_the_plugin_writes_it(node):
    lab, client = node.lab, node.client
    before = node.saved("filter")
    try:
        lab.in_lab("iptables", "-P", "FORWARD", "DROP")  # a hardened node: the firewall plugin's accepts carry the pods
        assert node.client_get("http://203.0.113.1/") == "outside\n"
        lab.in_lab("iptables", "-F", "CNI-FORWARD")
        assert node.client_get("http://203.0.113.1/") is None
        code, result = node.trace(client.name, "203.0.113.1", "--port", "80", "--static")  # the wget is the live proof
        assert code == 1 and result["cause"] == "FIREWALL_DROP", result["summary"]
        assert f"the accept the CNI firewall plugin wrote for {client.name} ({client.ip}" in result["summary"]
        assert result["fix_command"] == (
            "iptables -t filter -I CNI-FORWARD 1 -m comment --comment 'CNI firewall plugin admin overrides' -j CNI-ADMIN && "
            f"iptables -t filter -A CNI-FORWARD -d {client.ip} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT && "
            f"iptables -t filter -A CNI-FORWARD -s {client.ip} -j ACCEPT"), result["fix_command"]
        node.apply(result)
        assert node.client_get("http://203.0.113.1/") == "outside\n"
        # exactly the plugin's own lines for that pod are back
        mine = [line for line in before.splitlines() if client.ip in line or "CNI-ADMIN" in line and line.startswith("-A")]
        assert [line for line in node.saved("filter").splitlines() if line in mine] == mine
    finally:
        node.restore("filter", before)


def test_a_flushed_masquerade_chain_of_the_bridge_plugin_is_no_nat_and_its_rules_come_back(node):
    from netdiag.reason.cni_plugins import masquerade_chain

    lab, client = node.lab, node.client
    chain = masquerade_chain(NET, client.id)
    before = node.saved("nat")
    mine = [line for line in before.splitlines() if line.startswith(f"-A {chain} ")]
    assert len(mine) == 2, before  # libcni's chain name, computed: the plugin's ACCEPT and MASQUERADE are in it
    try:
        lab.in_lab("iptables", "-t", "nat", "-F", chain)
        assert node.client_get("http://203.0.113.1/") is None
        code, result = node.trace(client.name, "203.0.113.1", "--port", "80", "--static")
        assert code == 1 and result["cause"] == "NO_NAT", result["summary"]
        assert f"the masquerade the CNI bridge plugin (ipMasq) wrote for {client.name}" in result["summary"]
        assert result["fix_command"].startswith(f"iptables -t nat -A {chain} -d 10.88.0.0/24 -j ACCEPT -m comment"), \
            result["fix_command"]
        node.apply(result)
        assert node.client_get("http://203.0.113.1/") == "outside\n"
        assert [line for line in node.saved("nat").splitlines() if line.startswith(f"-A {chain} ")] == mine
    finally:
        node.restore("nat", before)


def test_netdiags_own_cni_container_gets_the_plugins_causes_too(node):
    """`netdiag run --network cni:NET` on the kubelet's conflist: its plugins wrote the same rules
    for netdiag's container, so a flushed firewall chain or masquerade chain is named as the
    plugin's missing lines for it (read from the CNI cache, as for pods), and the fix works."""
    from netdiag.reason.cni_plugins import masquerade_chain

    lab = node.lab
    lab.ok("run", "-d", "--name", "own", "--network", f"cni:{NET}", "busybox", "sleep", "300")
    filter_before, nat_before = node.saved("filter"), node.saved("nat")
    try:
        own = json.loads(lab.ok("inspect", "own"))[0]
        cid, ip = own["Id"], own["NetworkSettings"]["Networks"][f"cni:{NET}"]["IPAddress"]

        def get() -> bool:
            return lab.ok("exec", "own", "sh", "-c", "timeout 3 wget -qO- http://203.0.113.1/ || true").strip() == "outside"

        assert get()
        lab.in_lab("iptables", "-P", "FORWARD", "DROP")
        lab.in_lab("iptables", "-F", "CNI-FORWARD")
        code, result = node.trace("own", "203.0.113.1", "--port", "80", "--static")
        assert code == 1 and result["cause"] == "FIREWALL_DROP", result["summary"]
        assert f"the accept the CNI firewall plugin wrote for own ({ip}, network {NET})" in result["summary"], result["summary"]
        assert "netdiag restart own" in result["fix"], result["fix"]
        node.apply(result)
        assert get()

        chain = masquerade_chain(NET, cid)
        lab.in_lab("iptables", "-t", "nat", "-F", chain)
        assert not get()
        code, result = node.trace("own", "203.0.113.1", "--port", "80", "--static")
        assert code == 1 and result["cause"] == "NO_NAT", result["summary"]
        assert "the masquerade the CNI bridge plugin (ipMasq) wrote for own" in result["summary"], result["summary"]
        assert result["fix_command"].startswith(f"iptables -t nat -A {chain} -d 10.88.0.0/24 -j ACCEPT"), result["fix_command"]
        node.apply(result)
        assert get()
    finally:
        node.restore("filter", filter_before)
        node.restore("nat", nat_before)
        lab.ok("rm", "-f", "own")


def test_two_pods_with_one_hostport_the_first_dnat_wins_and_the_named_pod_gets_it_after_the_fix(node):
    lab, web = node.lab, node.web
    before = node.saved("nat")
    web2 = node.pods.add(NET, ports=["8080:80"], serve="web-v2")
    try:
        assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web-v1\n"
        code, result = node.trace(f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
        assert code == 0 and f"reaches {web.name}" in result["summary"], result["summary"]
        conflict = [e["detail"] for e in result["evidence"] if e["kind"] == "hostport_conflict"]
        assert conflict and f"to {web.ip}:80 ({web.name}), wins; never reached: to {web2.ip}:80 ({web2.name})" in conflict[0], conflict
        loser = json.loads(lab.ok("inspect", "--net", web2.name, "--json"))["findings"]
        assert f"host port 8080/tcp is published by {web.name} too; the host's DNAT sends it to {web.name}: " \
               f"{web2.name} does not get it" in loser, loser
        # the pod that lost, by the hostPort it publishes: through the node, to the other pod
        code, result = node.trace(f"ns:{lab.outside}", web2.name, "--port", "8080")
        assert code == 1 and result["cause"] == "HOSTPORT_CONFLICT", result["summary"]
        assert f"{web2.name} and {web.name}" in result["summary"] and f"so {web.name} gets the traffic" in result["summary"]
        assert result["fix_command"].startswith("iptables -t nat -D CNI-HOSTPORT-DNAT -p tcp -m comment --comment "
                                                f"'dnat name: \"{NET}\" id: \"{web.id}\"'"), result["fix_command"]
        assert result["reconciled"].startswith("static and live agree"), result["reconciled"]
        node.apply(result)
        assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web-v2\n"
        code, result = node.trace(f"ns:{lab.outside}", web2.name, "--port", "8080", "--static")
        assert code == 0 and f"reaches {web2.name}" in result["summary"], result["summary"]
    finally:
        node.pods.remove(web2)
        node.restore("nat", before)
    assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web-v1\n"


def test_a_pod_is_a_health_target_by_cni_id_and_explained_as_a_kubelets_probe(node):
    """No resolver knows a pod: health resolves `cni:ID` from the model (a full id or its short
    name) and checks the pod's address; explain probes its ports from the host as a kubelet does."""
    lab, web, client = node.lab, node.web, node.client
    for name in (web.name, f"cni:{web.id}"):
        p = lab.run("health", f"{name}:80", "--from", client.name, "--http", "/", "--json", timeout=60)
        doc = json.loads(p.stdout)
        assert p.returncode == 0 and doc["healthy"] and doc["address"] == web.ip, p.stdout + p.stderr
        assert doc["target"] == f"http://{web.ip}:80/ ({web.name})" and doc["timings"]["dns"] is None, doc["target"]
    unknown = lab.run("health", "cni:0123456789ab:80", "--from", client.name, timeout=60)
    assert unknown.returncode == 2 and "No CNI pod" in unknown.stderr, unknown.stderr

    p = lab.run("explain", web.name, "--json", timeout=60)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["kind"] == "pod" and [c["port"] for c in doc["checks"]] == [80], p.stdout + p.stderr
    shown = lab.run("explain", web.name, timeout=60)
    assert shown.returncode == 0 and f"{web.name} (CNI pod): a kubelet's TCP probe" in shown.stdout, shown.stdout + shown.stderr
    silent = node.pods.add(NET, ports=["9091:81"])  # publishes a port nothing listens on
    try:
        p = lab.run("explain", f"cni:{silent.id}", "--json", timeout=60)
        doc = json.loads(p.stdout)
        assert p.returncode == 1 and doc["health"]["cause"] == "NO_LISTENER", p.stdout + p.stderr
        assert doc["summary"].startswith(f"a kubelet's TCP probe of {silent.name} from the host fails at port 81"), doc["summary"]
    finally:
        node.pods.remove(silent)


def test_del_of_a_kubelet_pod_takes_its_cache_entry_and_rules(node):
    lab = node.lab
    pod = node.pods.add(NET, ports=["9090:80"])
    cache = lab.root / "cni" / "results" / f"{NET}-{pod.id}-eth0"
    # the hostPort's rules by their port match: a chain name is a hash and may contain "9090" too
    dnat_9090 = lambda: [line for line in node.saved("nat").splitlines() if re.search(r"--dports? 9090\b", line)]
    assert cache.is_file() and dnat_9090()
    node.pods.remove(pod)
    assert not cache.exists() and dnat_9090() == [] and pod.id not in node.saved("filter") + node.saved("nat")
    assert pod.name not in lab.ok("topo")
