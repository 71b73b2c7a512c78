"""Every kind of world of netdiag.worlds' interface, for real: built, something run in it as its
host would run it, destroyed, and nothing left (leaks(): namespaces, links, mounts, cgroups, nft
tables, processes, and no change to the root namespace); also when the build fails half-way."""
from __future__ import annotations

import shutil

import pytest

from netdiag.worlds import HOST_IP, OUTSIDE_IP, ClusterLab, DockerLab, Lab, host

pytestmark = pytest.mark.integration


def built_and_gone(world, use) -> None:
    """create, `use(world)`, destroy, and check that nothing is left."""
    world.create()
    try:
        use(world)
    finally:
        world.destroy()
    assert world.leaks() == []


def test_a_host_lab(tmp_path):
    def use(lab):
        assert lab.netdiag("ps").returncode == 0
        assert f"inet {OUTSIDE_IP}/24" in lab.run_in("outside", ["ip", "-o", "-4", "addr", "show", "eth0"]).stdout
        assert lab.run_in(None, ["ping", "-c", "1", "-W", "2", OUTSIDE_IP]).returncode == 0
    built_and_gone(Lab(state_dir=tmp_path / "lab"), use)


def test_a_process_left_in_a_labs_namespace_is_a_leak_even_when_the_name_is_gone(tmp_path):
    """A server's forked child (busybox httpd's, serving a hung connection) outlives its parent
    and keeps the outside namespace alive after `ip netns del`: leaks() names it; a process in
    a later namespace that got the freed one's inode number is not the lab's."""
    import os
    import signal
    import subprocess

    lab = Lab(state_dir=tmp_path / "lab").create()
    stray = subprocess.Popen(["sleep", "600"], preexec_fn=lab.enter("outside"), start_new_session=True)
    try:
        lab.destroy()
        left = lab.leaks()
        assert len(left) == 1 and f"process {stray.pid} in the world's namespace: sleep 600" in left[0], left
    finally:
        os.killpg(stray.pid, signal.SIGKILL)
        stray.wait()
    assert lab.leaks() == []


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")
def test_a_cluster_with_etcd(tmp_path):
    def use(cl):
        assert "inet 198.51.100.2/24" in cl.run_in("h2", ["ip", "-o", "-4", "addr", "show", "eth0"]).stdout
        assert cl.run_in("h1", ["ping", "-c", "1", "-W", "2", "198.51.100.254"]).returncode == 0  # the store
        cl.join_all()
        p = cl.netdiag("cluster", "ls", where="h2")
        assert p.returncode == 0, p.stderr
    built_and_gone(ClusterLab(hosts=2, state_dir=tmp_path / "cl"), use)


@pytest.mark.skipif(shutil.which("dockerd") is None, reason="no Docker engine installed")
def test_a_lab_with_its_own_dockerd(tmp_path):
    def use(lab):
        assert lab.docker("run", "--rm", lab.image, "true").returncode == 0
        p = lab.netdiag("inspect", "--net", "host", "--json")  # netdiag sees the lab's engine (DOCKER_HOST)
        assert p.returncode == 0 and "docker0" in p.stdout, p.stderr
    built_and_gone(DockerLab(state_dir=tmp_path / "dl"), use)


def test_a_scenario_world(tmp_path, monkeypatch):
    from netdiag.scenario import library
    from netdiag.scenario.session import Session

    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path / "root"))
    s = Session.start(library.load("07"))
    try:
        assert s.containers() == ["monitor", "worker"]
        assert s.run_in("outside", ["ip", "-o", "-4", "addr", "show", "eth0"]).returncode == 0
        assert s.diagnose()["ok"]
    finally:
        left = s.destroy()
    assert left == [] and s.leaks() == []


def test_a_replica_of_a_snapshot():
    import json
    import secrets
    from pathlib import Path

    from netdiag.scenario.replay import Replica

    snap = json.loads((Path(__file__).parents[1] / "fixtures" / "lab_snapshot.json").read_text())

    def use(r):
        assert r.namespace() == f"/run/netns/{r.record['host']}" and r.record["pids"]  # stand-ins run
        links = r.run_in(None, ["ip", "-o", "link"]).stdout
        assert "eth0" in links, links
        p = r.netdiag("inspect", "--net", "host", "--json")
        assert p.returncode == 0, p.stderr
    built_and_gone(Replica(snap, f"wr{secrets.token_hex(2)}"), use)


def test_a_fault_world(tmp_path):
    from netdiag.faults.world import World

    def use(w):
        assert w.connects() and w.connects(w.control_port)
        assert w.netdiag("trace", f"ns:{w.client}", w.server_ip, "--port", str(w.port), "--json").returncode == 0
    built_and_gone(World(4242, "chain"), use)


def test_a_lab_that_fails_half_way_is_removed(tmp_path, monkeypatch):
    real, calls = host.fresh_sysctls, []

    def second_fails(path):
        calls.append(path)
        if len(calls) == 2:  # both namespaces exist, the outside one half set up
            raise OSError("injected failure")
        real(path)

    monkeypatch.setattr(host, "fresh_sysctls", second_fails)
    lab = Lab(state_dir=tmp_path / "lab")
    with pytest.raises(OSError, match="injected"):
        lab.create()
    assert len(calls) == 2 and lab.leaks() == []


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")
def test_a_cluster_whose_store_does_not_start_is_removed(tmp_path, monkeypatch):
    def no_store(self, timeout=20.0):
        raise RuntimeError("etcd did not listen")

    monkeypatch.setattr(ClusterLab, "start_store", no_store)
    cl = ClusterLab(hosts=2, state_dir=tmp_path / "cl")
    with pytest.raises(RuntimeError, match="etcd"):
        cl.create()
    assert cl.leaks() == []


def test_the_host_lab_is_the_host_its_netdiag_sees(tmp_path):
    def use(lab):
        p = lab.netdiag("inspect", "--net", "host", "--json")
        assert p.returncode == 0 and HOST_IP in p.stdout, p.stderr
    built_and_gone(Lab(state_dir=tmp_path / "lab"), use)
