"""CNI pods of another runtime, the pure parts: libcni's cache files read the way a kubelet's
runtime writes them (Go's base64 for the conflist bytes; no `netns` field in libcni before 1.1,
so the result's sandbox names the namespace), netdiag's own attachments told apart, and a pod found
in a model by cni:ID (any length from 3 hex digits) or by its namespace's name."""
import base64
import json

from netdiag.reason.cni_plugins import masquerade_chain
from netdiag.snapshot_model import SCHEMA, Model
from runtime import records

CID = "4f1c" + "0" * 60
CONFLIST = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": True}},
    {"type": "firewall", "iptablesAdminChainName": "MY-ADMIN"}]}
RESULT = {"cniVersion": "1.0.0", "interfaces": [
    {"name": "cni0", "mac": "aa:aa:aa:aa:aa:01"}, {"name": "veth1234", "mac": "aa:aa:aa:aa:aa:02"},
    {"name": "eth0", "mac": "aa:aa:aa:aa:aa:03", "sandbox": "/var/run/netns/cni-1111"}],
    "ips": [{"interface": 2, "address": "10.88.0.7/24", "gateway": "10.88.0.1"}]}


def _cache(tmp_path, monkeypatch, name: str, doc) -> None:
    monkeypatch.setenv("NETDIAG_CNI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path / "root"))
    d = tmp_path / "cache" / "results"
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_a_kubelets_cache_file_names_its_pod_namespace_address_ports_and_rule_writers(tmp_path, monkeypatch):
    doc = {"kind": "cniCacheV1", "containerId": CID, "config": base64.b64encode(json.dumps(CONFLIST).encode()).decode(),
           "ifName": "eth0", "networkName": "k8s-pod-network", "result": RESULT,
           "capabilityArgs": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}
    _cache(tmp_path, monkeypatch, f"k8s-pod-network-{CID}-eth0", doc)
    _cache(tmp_path, monkeypatch, "garbage", "{not json")
    _cache(tmp_path, monkeypatch, "other-kind", {"kind": "somethingElse", "result": {}})
    [a] = records.cni_attachments()
    assert (a["network"], a["container_id"], a["ifname"]) == ("k8s-pod-network", CID, "eth0")
    assert a["netns"] == "/var/run/netns/cni-1111" and not a["own"]  # no netns field: the result's sandbox
    assert a["endpoint"] == {"IPv4Address": "10.88.0.7/24", "Gateway": "10.88.0.1", "MacAddress": "aa:aa:aa:aa:aa:03",
                             "HostVeth": "veth1234"}
    assert a["port_mappings"] == [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    assert (a["bridge"], a["subnet"], a["plugins"]) == ("cni0", "10.88.0.0/24", ["bridge", "portmap", "firewall"])
    assert a["ip_masq"] is True and a["firewall_admin_chain"] == "MY-ADMIN"


def test_netdiags_own_attachments_are_marked_by_their_pinned_namespace(tmp_path, monkeypatch):
    pinned = str(tmp_path / "root" / "cni" / "netns" / f"{CID[:12]}-eth0")
    doc = {"kind": "cniCacheV1", "containerId": CID, "config": base64.b64encode(b"{}").decode(), "ifName": "eth0",
           "networkName": "pods", "netns": pinned, "result": {"ips": []}}
    _cache(tmp_path, monkeypatch, f"pods-{CID}-eth0", doc)
    [a] = records.cni_attachments()
    assert a["own"] and a["netns"] == pinned and a["plugins"] == [] and a["firewall_admin_chain"] == ""


def test_a_pod_is_found_by_cni_id_and_by_its_namespace_name():
    pod = {"runtime": "cni", "id": CID, "name": f"cni:{CID[:12]}", "pid": 0, "networks": {}, "ports": [],
           "netns_names": ["cni-1111"]}
    model = Model({"schema": SCHEMA, "host": "ns-1", "namespaces": {}, "containers": [pod]})
    for ref in (f"cni:{CID[:12]}", f"cni:{CID}", "cni:4f1c0", "cni-1111"):
        assert model.container(ref) is pod, ref
    assert model.container("cni:4f") is None and model.container("cni-2222") is None


def test_the_bridge_plugins_masquerade_chain_is_libcnis_name():
    chain = masquerade_chain("k8s-pod-network", CID)
    assert len(chain) == 28 and chain.startswith("CNI-") and chain != masquerade_chain("k8s-pod-network", CID[::-1])


# -- what the plugins' chains lack (netdiag.reason.cni_plugins), on iptables-nft-save text as the plugins leave it --
POD_IP, NET = "10.88.0.3", "k8s-pod-network"
FILTER = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:CNI-ADMIN - [0:0]
:CNI-FORWARD - [0:0]
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
-A CNI-FORWARD -d {POD_IP}/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A CNI-FORWARD -s {POD_IP}/32 -j ACCEPT
COMMIT
"""


def _model(filter_text: str, nat_text: str = "") -> Model:
    pod = {"runtime": "cni", "id": CID, "name": f"cni:{CID[:12]}", "pid": 0, "ports": [], "networks": {NET: {
        "ip": POD_IP, "prefix": 24, "ip_masq": True, "firewall_admin_chain": "CNI-ADMIN"}}}
    host = {"id": "ns-1", "kind": "host", "label": "host", "netns_names": [], "iptables_save": {"ip": filter_text + nat_text}}
    return Model({"schema": SCHEMA, "host": "ns-1", "namespaces": {"ns-1": host}, "containers": [pod]})


def _forward_drop(model: Model):
    from netdiag.reason import cni_plugins
    from netdiag.reason.nftables import Packet, Step

    step = Step("ip", "filter", "FORWARD", None, "policy drop", "", "policy drop")
    return cni_plugins.firewall_stop(model, model.host, "forward", Packet(POD_IP, "203.0.113.1", "tcp", 40000, 80), step,
                                     "ip filter FORWARD", [], True)


def test_the_firewall_plugins_rules_all_there_name_nothing_and_a_flushed_chain_gets_exactly_the_missing_ones():
    assert _forward_drop(_model(FILTER)) is None  # the drop is someone else's: not this cause
    flushed = "\n".join(line for line in FILTER.splitlines() if not line.startswith("-A CNI-FORWARD")) + "\n"
    stop = _forward_drop(_model(flushed))
    assert stop.cause == "FIREWALL_DROP" and f"cni:{CID[:12]} ({POD_IP}, network {NET})" in stop.summary
    assert stop.fix.command == (
        "iptables -t filter -I CNI-FORWARD 1 -m comment --comment 'CNI firewall plugin admin overrides' -j CNI-ADMIN && "
        f"iptables -t filter -A CNI-FORWARD -d {POD_IP} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT && "
        f"iptables -t filter -A CNI-FORWARD -s {POD_IP} -j ACCEPT")
    gone = "\n".join(line for line in FILTER.splitlines() if "CNI-FORWARD" not in line) + "\n"  # chain and jump deleted
    assert _forward_drop(_model(gone)).fix.command.startswith(
        "iptables -t filter -N CNI-FORWARD && iptables -t filter -I FORWARD 1 -m comment --comment 'CNI firewall plugin rules'")


def test_the_bridge_plugins_masquerade_comes_back_with_its_chain_name_and_comment():
    from netdiag.reason import cni_plugins

    chain = masquerade_chain(NET, CID)
    nat = f"""*nat
:POSTROUTING ACCEPT [0:0]
:{chain} - [0:0]
-A POSTROUTING -s {POD_IP}/32 -m comment --comment "name: \\"{NET}\\" id: \\"{CID}\\"" -j {chain}
COMMIT
"""
    fix, what = cni_plugins.masquerade_fix(_model(FILTER, nat), _model(FILTER, nat).host, POD_IP)
    assert f"chain {chain} is empty" in what
    comment = f"'name: \"{NET}\" id: \"{CID}\"'"
    assert fix.command == (f"iptables -t nat -A {chain} -d 10.88.0.0/24 -j ACCEPT -m comment --comment {comment} && "
                           f"iptables -t nat -A {chain} '!' -d 224.0.0.0/4 -j MASQUERADE -m comment --comment {comment}")


def test_netdiags_own_cni_container_carries_its_conflists_rule_writers(monkeypatch):
    """netdiag's `run --network cni:NET` container is no pod, yet its plugins wrote the same rules:
    its endpoint (record network `cni:NET`) gets them from its cache entry, so pods_at finds it."""
    from netdiag.observe import cni_pods
    from netdiag.reason import cni_plugins

    mine = {"runtime": "netdiag", "id": CID, "name": "own", "networks": {
        f"cni:{NET}": {"ip": POD_IP, "prefix": 24, "interface": "eth0"}, "bridge": {"ip": "172.17.0.2", "prefix": 16}}}
    attachment = {"own": True, "container_id": CID, "network": NET, "ifname": "eth0", "netns": "/pinned",
                  "plugins": ["bridge", "firewall"], "ip_masq": True, "firewall_admin_chain": "CNI-ADMIN"}
    monkeypatch.setattr(records, "cni_attachments", lambda: [attachment])
    containers = [mine]
    assert cni_pods.add_pods({}, containers, set(), []) == [] and containers == [mine]  # no pod made of it
    e = mine["networks"][f"cni:{NET}"]
    assert (e["cni_network"], e["ip_masq"], e["firewall_admin_chain"]) == (NET, True, "CNI-ADMIN")
    assert "cni_network" not in mine["networks"]["bridge"]

    class M:
        def containers(self):
            return containers

    assert cni_plugins.pods_at(M(), POD_IP) == [(mine, NET, e)]  # the conflist's name: libcni's chain name uses it
    assert cni_plugins.pods_at(M(), "172.17.0.2") == []
