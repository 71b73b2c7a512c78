"""The CNI driver's pure parts: finding and checking conflists (libcni's rules), the stdin each
plugin gets (name, cniVersion, prevResult, runtimeConfig filtered by capabilities), the order of
ADD/CHECK/DEL over a list and the result cache (libcni's cniCacheV1 file), endpoints from results."""
import base64
import json

import pytest

from runtime.errors import InvalidArgument, NotFound
from runtime.networks.cni import conflist, driver, invoke

BRIDGE = {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24",
                                                                                          "gateway": "10.88.0.1"}]]}}
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}}
FIREWALL = {"type": "firewall", "capabilities": {"bandwidth": False}}


@pytest.fixture
def confdir(tmp_path, monkeypatch):
    d = tmp_path / "net.d"
    d.mkdir()
    monkeypatch.setenv("NETDIAG_CNI_CONF_DIR", str(d))
    monkeypatch.setenv("NETDIAG_CNI_CACHE_DIR", str(tmp_path / "cache"))
    return d


def write(d, file, doc):
    (d / file).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_a_conflist_is_found_by_its_name_and_conflists_come_before_single_confs(confdir):
    write(confdir, "05-pods.conf", {"cniVersion": "0.4.0", "name": "pods", "type": "ptp"})
    write(confdir, "10-other.conflist", {"cniVersion": "1.0.0", "name": "other", "plugins": [BRIDGE]})
    write(confdir, "20-pods.conflist", {"cniVersion": "1.0.0", "name": "pods", "plugins": [BRIDGE, PORTMAP, FIREWALL]})
    conf = conflist.load("pods")
    assert conf.source.endswith("20-pods.conflist") and [p["type"] for p in conf.plugins] == ["bridge", "portmap", "firewall"]
    assert conf.raw == (confdir / "20-pods.conflist").read_bytes()  # cached as the file's bytes
    assert conf.capabilities == {"portMappings"} and conf.bridge_device() == "cni0"
    assert conf.ipam_range() == ("10.88.0.0/24", "10.88.0.1")


def test_a_single_conf_becomes_a_list_of_one(confdir):
    write(confdir, "05-flat.conf", {"cniVersion": "0.4.0", "name": "flat", "type": "ptp", "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}})
    conf = conflist.load("flat")
    assert conf.cni_version == "0.4.0" and [p["type"] for p in conf.plugins] == ["ptp"]
    assert conf.bridge_device() == "" and conf.ipam_range() == ("10.9.0.0/24", "")


def test_an_unknown_name_lists_what_is_there_and_a_broken_neighbour_does_not_hide_it(confdir):
    write(confdir, "01-broken.conflist", "{not json")
    write(confdir, "10-pods.conflist", {"cniVersion": "1.0.0", "name": "pods", "plugins": [BRIDGE]})
    assert conflist.load("pods").name == "pods"
    with pytest.raises(NotFound) as e:
        conflist.load("nodes")
    assert "pods" in str(e.value) and "01-broken.conflist" in str(e.value)


@pytest.mark.parametrize("doc,says", [
    ({"cniVersion": "1.0.0", "name": "pods", "plugins": []}, "non-empty list"),
    ({"cniVersion": "1.0.0", "name": "pods", "plugins": [{"bridge": "cni0"}]}, "no \"type\""),
    ({"cniVersion": "1.0.0", "name": "pods", "plugins": [{"type": "../../bin/sh"}]}, "not a plain name"),
    ({"cniVersion": "latest", "name": "pods", "plugins": [BRIDGE]}, "is not a version"),
    ({"cniVersion": "1.0.0", "name": "pods", "plugins": [dict(BRIDGE, capabilities=["portMappings"])]}, "capabilities"),
])
def test_a_bad_conflist_is_refused_before_any_plugin_runs(confdir, doc, says):
    write(confdir, "10-pods.conflist", doc)
    with pytest.raises(InvalidArgument) as e:
        conflist.load("pods")
    assert says in str(e.value) and "10-pods.conflist" in str(e.value)


def test_a_missing_configuration_directory_says_where_to_put_conflists(monkeypatch, tmp_path):
    monkeypatch.setenv("NETDIAG_CNI_CONF_DIR", str(tmp_path / "absent"))
    with pytest.raises(NotFound) as e:
        conflist.load("pods")
    assert str(tmp_path / "absent") in str(e.value) and "NETDIAG_CNI_CONF_DIR" in str(e.value)


def test_a_plugin_is_looked_up_in_cni_path_only_as_an_executable(monkeypatch, tmp_path):
    (tmp_path / "bridge").write_text("#!/bin/sh\n")
    monkeypatch.setenv("CNI_PATH", str(tmp_path))
    with pytest.raises(NotFound):  # there, but not executable
        conflist.find_plugin("bridge")
    (tmp_path / "bridge").chmod(0o755)
    assert conflist.find_plugin("bridge") == str(tmp_path / "bridge")


def test_names_follow_libcni(confdir):
    for bad in ("", "-x", "a/b", "a b"):
        with pytest.raises(InvalidArgument):
            conflist.check_name(bad)
    assert conflist.check_name("k8s-pod-network.v1") == "k8s-pod-network.v1"


def test_the_cache_lives_in_a_private_state_root_and_else_where_libcni_keeps_it(monkeypatch, tmp_path):
    monkeypatch.delenv("NETDIAG_CNI_CACHE_DIR", raising=False)
    monkeypatch.delenv("NETDIAG_ROOT", raising=False)
    assert str(conflist.cache_dir()) == "/var/lib/cni"
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path))
    assert conflist.cache_dir() == tmp_path / "cni"
    monkeypatch.setenv("CNI_PATH", "/a:/b")
    assert conflist.plugin_dirs() == ["/a", "/b"]


def _list(version="1.0.0"):
    doc = {"cniVersion": version, "name": "pods", "plugins": [BRIDGE, PORTMAP, FIREWALL]}
    return conflist.from_doc(doc, json.dumps(doc).encode(), "test")


RESULT = {"cniVersion": "1.0.0", "interfaces": [{"name": "cni0", "mac": "aa:00:00:00:00:01"},
                                                {"name": "veth1234", "mac": "aa:00:00:00:00:02"},
                                                {"name": "eth0", "mac": "aa:00:00:00:00:03", "sandbox": "/pin"}],
          "ips": [{"address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 2}]}


@pytest.fixture
def plugins(monkeypatch, confdir):
    """The plugins as a recorder: each call's command, type and stdin; ADD answers with its prevResult
    grown by one interface, so chaining is visible."""
    calls = []

    def run(kind, command, stdin, rt):
        calls.append((command, kind, stdin, rt))
        if command == "ADD":
            prev = stdin.get("prevResult") or {"cniVersion": "1.0.0", "interfaces": [], "ips": []}
            return dict(prev, interfaces=prev["interfaces"] + [{"name": kind}])
        return None

    monkeypatch.setattr(invoke, "run_plugin", run)
    return calls


def test_add_chains_prev_results_and_passes_only_declared_capabilities(plugins):
    rt = invoke.RuntimeConf("c1", "/pin", "eth0", {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                                                  "bandwidth": {"ingressRate": 1}})
    result = invoke.add(_list(), rt)
    assert [(c, k) for c, k, _, _ in plugins] == [("ADD", "bridge"), ("ADD", "portmap"), ("ADD", "firewall")]
    first, second, third = (s for _, _, s, _ in plugins)
    assert "prevResult" not in first and [i["name"] for i in third["prevResult"]["interfaces"]] == ["bridge", "portmap"]
    assert all(s["name"] == "pods" and s["cniVersion"] == "1.0.0" for s in (first, second, third))
    assert "runtimeConfig" not in first and "runtimeConfig" not in third  # firewall declares bandwidth: false
    assert second["runtimeConfig"] == {"portMappings": rt.capability_args["portMappings"]}
    cached = json.loads(invoke.cache_path("pods", "c1", "eth0").read_text())
    assert cached["kind"] == "cniCacheV1" and cached["result"] == result and cached["netns"] == "/pin"
    assert base64.b64decode(cached["config"]) == _list().raw and cached["capabilityArgs"] == rt.capability_args
    assert invoke.cached_conf("pods", "c1", "eth0").plugins == _list().plugins


def test_check_and_del_get_the_cached_result_del_runs_backwards_and_drops_the_cache(plugins):
    rt = invoke.RuntimeConf("c1", "/pin", "eth0")
    result = invoke.add(_list(), rt)
    plugins.clear()
    invoke.check(_list(), rt)
    invoke.delete(_list(), rt)
    assert [(c, k) for c, k, _, _ in plugins] == [("CHECK", "bridge"), ("CHECK", "portmap"), ("CHECK", "firewall"),
                                                 ("DEL", "firewall"), ("DEL", "portmap"), ("DEL", "bridge")]
    assert all(s["prevResult"] == result for _, _, s, _ in plugins)
    assert not invoke.cache_path("pods", "c1", "eth0").exists()
    plugins.clear()
    invoke.delete(_list(), rt)  # again: no cache, no prevResult, still every plugin told
    assert [k for _, k, s, _ in plugins if "prevResult" not in s] == ["firewall", "portmap", "bridge"]


def test_a_failing_del_does_not_stop_the_others_and_keeps_the_cache(plugins, monkeypatch):
    rt = invoke.RuntimeConf("c1", "/pin", "eth0")
    invoke.add(_list(), rt)
    recorder = invoke.run_plugin

    def firewall_fails(kind, command, stdin, rt):
        recorder(kind, command, stdin, rt)
        if kind == "firewall":
            raise invoke.PluginError("CNI plugin firewall failed (DEL): unknown backend")

    monkeypatch.setattr(invoke, "run_plugin", firewall_fails)
    plugins.clear()
    with pytest.raises(invoke.PluginError, match="firewall"):
        invoke.delete(_list(), rt)
    assert [k for c, k, _, _ in plugins] == ["firewall", "portmap", "bridge"]
    assert invoke.cache_path("pods", "c1", "eth0").exists()  # kept: the next DEL gets the same prevResult


def test_check_needs_spec_0_4_and_respects_disable_check(plugins):
    with pytest.raises(invoke.PluginError):
        invoke.check(_list("0.3.1"), invoke.RuntimeConf("c1", "/pin", "eth0"))
    doc = {"cniVersion": "1.0.0", "name": "pods", "disableCheck": True, "plugins": [BRIDGE]}
    invoke.check(conflist.from_doc(doc, None, "test"), invoke.RuntimeConf("c1", "/pin", "eth0"))
    assert plugins == []


def test_a_plugin_error_object_is_quoted():
    out = json.dumps({"cniVersion": "1.0.0", "code": 7, "msg": "failed to load netconf", "details": "mtu"}).encode()
    e = invoke._failure("bridge", "ADD", out, b"")
    assert e.what == "CNI plugin bridge failed (ADD): failed to load netconf: mtu" and "code 7" in e.why


def test_an_endpoint_is_read_from_a_result():
    ep = driver.endpoint_from_result(RESULT, "eth0", "cni0")
    assert ep == {"IPv4Address": "10.88.0.2/24", "Gateway": "10.88.0.1", "MacAddress": "aa:00:00:00:00:03", "HostVeth": "veth1234"}
    old = {"cniVersion": "0.4.0", "interfaces": RESULT["interfaces"],
           "ips": [{"version": "4", "address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 2}]}
    assert driver.endpoint_from_result(old, "eth0", "cni0") == ep


def test_published_ranges_become_one_port_mapping_per_port():
    spec = {"proto": "udp", "host_ip": "127.0.0.1", "host_start": 5000, "host_end": 5001, "ctr_start": 53, "ctr_end": 54}
    assert driver.port_mappings([spec]) == [
        {"hostPort": 5000, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
        {"hostPort": 5001, "containerPort": 54, "protocol": "udp", "hostIP": "127.0.0.1"}]
