"""Listing many containers reads each shared record once (issue 24, scale): a network record holds
every endpoint on it, so reading it again per container makes a listing of N containers on one
network cost N reads of N endpoints."""
import os

import pytest


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path / "nd"))
    return tmp_path / "nd"


def _running_on(net: dict, name: str, ip: str, ports: list[dict]) -> str:
    """A container record that says it runs (as this test's own pid) with an endpoint on net."""
    from runtime.containers import container_records

    cfg = {"Image": "", "ImageRef": "busybox", "Path": "sleep", "Args": ["600"], "Config": {"Hostname": name},
           "HostConfig": {"NetworkMode": net["Name"]}, "NetworkSettings": {"Networks": {net["Name"]: {}}}}
    c = container_records.create_record(cfg, name)
    c.save_state(Status="running", Pid=os.getpid(), MonitorPid=os.getpid())
    net["Containers"][c.id] = {"Name": name, "IPv4Address": f"{ip}/24", "Ports": ports}
    return c.id


def test_ps_reads_the_network_records_once_and_still_shows_each_containers_ports(root, monkeypatch):
    from runtime.api import containers
    from runtime.networks import network_records

    net = network_records.new_record("front", "bridge", subnet="10.9.0.0/24", gateway="10.9.0.1")
    net["netdiag"]["Bridge"] = "br-front"
    web = _running_on(net, "web", "10.9.0.2", [{"host_ip": "", "host_start": 8080, "host_end": 8080, "ctr_start": 80,
                                                  "ctr_end": 80, "proto": "tcp"}])
    others = [_running_on(net, f"c{i}", f"10.9.0.{i + 3}", []) for i in range(5)]
    network_records.save(net)
    reads = []
    real = network_records.list_all
    monkeypatch.setattr(network_records, "list_all", lambda: reads.append(1) or real())

    rows = {r["Names"]: r for r in containers.listing()}

    assert len(reads) == 1
    assert set(rows) == {"web"} | {f"c{i}" for i in range(5)} and len(others) == 5
    assert "8080->80/tcp" in rows["web"]["Ports"] and rows["c0"]["Ports"] == ""
    assert all(r["Networks"] == "front" and r["State"] == "running" for r in rows.values()) and web


def test_a_new_name_is_checked_against_every_record_without_reading_states_or_processes(root, monkeypatch):
    from runtime import state
    from runtime.containers import container_records
    from runtime.errors import Conflict

    net = {"Name": "front", "Containers": {}}
    running = _running_on(net, "web", "10.9.0.2", [])
    dead_state = _running_on(net, "db", "10.9.0.3", [])
    (container_records.paths.containers_dir() / dead_state / "state.json").write_bytes(b"{broken")
    half_made = container_records.paths.containers_dir() / ("f" * 64)
    half_made.mkdir()  # a killed `run` left a directory without its config: no name reserved
    real_read = state.read_json
    monkeypatch.setattr(state, "read_json", lambda p, *a, **k: (_ for _ in ()).throw(AssertionError(p))
                        if p.name == "state.json" else real_read(p, *a, **k))
    monkeypatch.setattr(container_records, "pid_alive", lambda *a: (_ for _ in ()).throw(AssertionError("/proc")))

    assert container_records._names_in_use() == {"web": running, "db": dead_state}
    for taken in ("web", "db"):
        with pytest.raises(Conflict):
            container_records.create_record({"Config": {}, "HostConfig": {}}, taken)
    assert container_records.create_record({"Config": {}, "HostConfig": {}}, "cache").name == "cache"
