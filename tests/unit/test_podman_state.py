"""Podman's containers and networks read from its files (netdiag.observe.podman_state over the
bolt reader netdiag.observe.boltdb), on a state database Podman 4.3 wrote in a lab: `web` running
on appnet with 8080->80 published, `plain` running on the default network, `stopped` only created.
Its containers' pids are long gone, which is itself a case: the database still says running."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from netdiag.observe import boltdb, podman_state

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "podman" / "bolt_state.db.gz"


@pytest.fixture
def db(tmp_path) -> str:
    path = tmp_path / "bolt_state.db"
    path.write_bytes(gzip.decompress(FIXTURE.read_bytes()))
    return str(path)


def test_bolt_reader_walks_buckets_and_values(db):
    with boltdb.BoltDB(db) as bolt:
        names = {k.decode(): v.decode() for k, v, _ in bolt.root.bucket(b"name-registry").items()}
        assert set(names) == {"web", "plain", "stopped"}
        web = bolt.root.bucket(b"ctr").bucket(names["web"].encode())
        assert json.loads(web.get(b"config"))["name"] == "web"
        assert [k for k, _ in web.buckets()] == [b"dependencies", b"networks"]
        assert bolt.root.get(b"no-such-key") is None


def test_not_a_bolt_file_is_an_error(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\0" * 8192)
    with pytest.raises(boltdb.BoltError):
        boltdb.BoltDB(str(junk))


def test_running_containers_in_inspects_shape(db, monkeypatch):
    monkeypatch.setattr(podman_state, "_alive", lambda pid, conmon: True)
    got = {c["name"]: c for c in podman_state.containers(db)}
    assert set(got) == {"web", "plain"}  # `stopped` was only created
    web = got["web"]
    assert web["runtime"] == "podman" and web["image"] == "localhost/bbox:latest" and web["command"] == ["sleep", "6000"]
    assert web["networks"] == {"appnet": {"ip": "10.89.7.2", "prefix": 24, "mac": "8e:6d:e7:0a:04:89", "gateway": "10.89.7.1",
                                          "network_id": "appnet", "aliases": ["e5e8a6a35974"]}}
    assert web["ports"] == [{"proto": "tcp", "ctr_port": 80, "host_ip": "", "host_port": 8080}]
    assert web["network_mode"] == "appnet" and web["pid"] and web["monitor_pid"]
    assert got["plain"]["network_mode"] == "podman" and got["plain"]["networks"]["podman"]["ip"].startswith("10.88.")


def test_a_dead_or_reused_pid_is_not_running(db, monkeypatch):
    """The database says running until podman next looks: a container whose pid is gone, or is
    now another process's (its parent not the container's conmon), is not running."""
    from runtime.kernel import procs

    monkeypatch.setattr(procs, "stat_fields", lambda pid: None)
    assert podman_state.containers(db) == []
    monkeypatch.setattr(procs, "stat_fields", lambda pid: ["S", "1"])
    assert podman_state.containers(db) == []


def test_port_ranges_and_protocol_lists_one_port_each():
    got = podman_state._ports([{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 2, "protocol": "tcp,udp"}])
    assert [(p["proto"], p["host_port"], p["ctr_port"]) for p in got] == \
        [("tcp", 8080, 80), ("tcp", 8081, 81), ("udp", 8080, 80), ("udp", 8081, 81)]


def test_networks_from_netavark_files_and_the_default(tmp_path, monkeypatch):
    conf = tmp_path / "containers.conf"
    conf.write_text('[network]\ndefault_subnet = "10.77.0.0/16"\n')
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    default = podman_state._default_network()
    assert default["subnets"] == [{"subnet": "10.77.0.0/16", "gateway": "10.77.0.1"}] and default["name"] == "podman"


POD_FIXTURE = FIXTURE.with_name("bolt_state_pod.db.gz")  # `web`, and pod `mypod` on appnet (9090->80): infra, m1, m2


def test_a_pods_members_share_its_infra_containers_networks_and_the_pod_is_one_endpoint(tmp_path, monkeypatch):
    from netdiag.observe.discover import NsRef
    from netdiag.views.topo.graph import _containers_by_ns, _ns_name

    path = tmp_path / "pod.db"
    path.write_bytes(gzip.decompress(POD_FIXTURE.read_bytes()))
    monkeypatch.setattr(podman_state, "_alive", lambda pid, conmon: True)
    got = {c["name"]: c for c in podman_state.containers(str(path))}
    infra = next(c for c in got.values() if c["infra"])
    assert infra["pod"] == "mypod" and infra["name"].endswith("-infra") and not got["web"]["infra"] and got["web"]["pod"] == ""
    for m in ("m1", "m2"):  # as `podman inspect` shows a member: the infra's networks and ports
        assert got[m]["pod"] == "mypod" and not got[m]["infra"] and got[m]["network_mode"] == f"container:{infra['id']}"
        assert got[m]["networks"] == infra["networks"] and got[m]["ports"] == [
            {"proto": "tcp", "ctr_port": 80, "host_ip": "", "host_port": 9090}]
    for c in got.values():
        c["ns"] = "ns-7" if c["pod"] else "ns-8"
    ref = NsRef(7, "/proc/1/ns/net", kind="container", name=infra["name"], runtime="podman", container=infra)
    podman_state.name_pods({7: ref}, list(got.values()))
    assert ref.label() == "mypod (podman pod: m1, m2)"
    by_ns = _containers_by_ns({"containers": [got["m1"], infra, got["m2"]]})
    assert by_ns["ns-7"] is infra and _ns_name({"id": "ns-7"}, infra) == "mypod"  # topo draws the pod, not a member


def test_the_database_is_found_under_storage_confs_graph_root(tmp_path, monkeypatch):
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{tmp_path / "graph"}"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    assert podman_state.database() is None  # no database: discovery asks the podman CLI
    (tmp_path / "graph" / "libpod").mkdir(parents=True)
    (tmp_path / "graph" / "libpod" / "bolt_state.db").write_bytes(b"")
    assert podman_state.database() == str(tmp_path / "graph" / "libpod" / "bolt_state.db")


def test_a_podman_on_the_cni_backend_is_asked_through_its_cli(tmp_path, monkeypatch):
    conf = tmp_path / "containers.conf"
    conf.write_text('[network]\nnetwork_backend = "cni"\n')
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    assert podman_state.cni_backend()
    conf.write_text('[network]\nnetwork_backend = "netavark"\n')
    assert not podman_state.cni_backend()
