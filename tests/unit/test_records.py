"""A corrupt or unreadable state file breaks only its own object: read_json names the file, a
container record lists as a dead container, a network record as an unreadable network."""
import json

import pytest

from runtime import state as store
from runtime.errors import NetdiagError

BAD = {"truncated": b'{"Name": "vic', "empty": b"", "array": b"[1, 2]", "string": b'"x"', "null": b"null",
       "binary": b"\xff\xfe\x00"}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path / "nd"))
    return tmp_path / "nd"


@pytest.mark.parametrize("content", BAD.values(), ids=BAD.keys())
def test_read_json_names_the_file_and_never_lets_corruption_pass(tmp_path, content):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    with pytest.raises(store.CorruptRecord) as e:
        store.read_json(p, expect=dict)
    assert str(p) in str(e.value) and isinstance(e.value, NetdiagError) and isinstance(e.value, ValueError)
    assert store.read_json(tmp_path / "missing.json", {"d": 1}, expect=dict) == {"d": 1}


def _container(name: str) -> str:
    from runtime.containers import model

    cfg = {"Image": "", "ImageRef": "busybox", "Path": "true", "Args": [], "Config": {"Hostname": name},
           "HostConfig": {"NetworkMode": "none"}, "NetworkSettings": {"Networks": {}}}
    return model.create_record(cfg, name).id


@pytest.mark.parametrize("which", ["config.json", "state.json"])
@pytest.mark.parametrize("content", BAD.values(), ids=BAD.keys())
def test_a_corrupt_container_record_is_a_dead_container(root, which, content):
    from runtime.containers import model

    good, bad = _container("good"), _container("victim")
    (model.paths.containers_dir() / bad / which).write_bytes(content)
    every = {c.id: c for c in model.list_all()}
    assert set(every) == {good, bad}
    dead = every[bad]
    assert dead.status == model.DEAD and which in dead.broken and which in dead.state["Error"]
    assert every[good].status == model.CREATED and not every[good].broken
    assert model.get(bad[:10]).id == bad and model.get("good").id == good
    if which == "state.json":  # the config survives: the name still finds it
        assert model.get("victim").id == bad
    with pytest.raises(NetdiagError):
        model.create_record({"Config": {}, "HostConfig": {}}, "good")  # names still checked


def test_a_config_missing_its_parts_is_corrupt_too(root):
    from runtime.containers import model

    bad = _container("victim")
    (model.paths.containers_dir() / bad / "config.json").write_text(json.dumps({"Name": "victim", "Config": []}))
    assert "lacks Config, HostConfig" in model.get(bad).broken


@pytest.mark.parametrize("content", [*BAD.values(), json.dumps({"Name": "back", "Id": "x"}).encode(),
                                     json.dumps({"Name": "back", "Id": "x", "Driver": "bridge", "IPAM": {"Config": []},
                                                 "Options": {}, "Labels": {}, "Containers": {}, "netdiag": {}}).encode()],
                         ids=[*BAD.keys(), "lacking", "bridge-without-subnet"])
def test_a_corrupt_network_record_is_listed_apart_from_the_bridges(root, content):
    from runtime.networks import model

    ok = model.new_record("front", "bridge", subnet="10.9.0.0/24", gateway="10.9.0.1")
    ok["netdiag"] = {"Bridge": "br-front"}
    model.save(ok)
    broken_id = "ab" * 32
    (model.nets_dir() / f"{broken_id}.json").write_bytes(content)
    every = {n["Id"]: n for n in model.list_all()}
    assert set(every) == {ok["Id"], broken_id}
    bad = every[broken_id]
    assert bad["Driver"] == model.UNREADABLE and bad["Name"] == broken_id[:12] and f"{broken_id}.json" in bad["Error"]
    assert bad["netdiag"]["Bridge"] == f"br-{broken_id[:12]}"
    assert [n["Id"] for n in model.bridges()] == [ok["Id"]]
    assert model.get("front")["Id"] == ok["Id"] and model.get(broken_id[:12])["Id"] == broken_id
    assert model.find("back") is None


def test_the_default_docker_socket_is_this_hosts_only_when_a_dockerd_runs_in_this_namespace(monkeypatch):
    """A lab (a namespace playing another host) must not list the machine's Docker containers as
    its own: the demo's trace did. DOCKER_HOST, when given, is trusted."""
    import os

    from netdiag.observe import docker_api

    mine = os.stat("/proc/self/ns/net").st_ino
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(docker_api.os.path, "exists", lambda p: p == docker_api.DEFAULT_SOCKET)
    for engines, expect in (([mine + 1], None), ([], None), ([mine + 1, mine], docker_api.DEFAULT_SOCKET),
                            ([None], docker_api.DEFAULT_SOCKET)):
        monkeypatch.setattr(docker_api, "_dockerd_netns", lambda e=engines: e)
        assert docker_api.socket_path() == expect, engines
    monkeypatch.setenv("DOCKER_HOST", f"unix://{docker_api.DEFAULT_SOCKET}")
    monkeypatch.setattr(docker_api, "_dockerd_netns", lambda: [])
    assert docker_api.socket_path() == docker_api.DEFAULT_SOCKET
