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

