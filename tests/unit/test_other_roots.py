"""Containers of another netdiag state root on this machine (a lab's next node), read without
changing that root: what names a pod of the other node instead of pid:N."""
import json

from runtime import records


def _record(root, cid, name, status, pid, config_ok=True):
    d = root / "containers" / cid
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"Name": name, "Config": {}, "HostConfig": {}}) if config_ok else "{broken")
    (d / "state.json").write_text(json.dumps({"Status": status, "Pid": pid}))


def test_only_running_readable_records_are_listed_and_nothing_is_written(tmp_path):
    _record(tmp_path, "a" * 64, "web", "running", 4242)
    _record(tmp_path, "b" * 64, "old", "exited", 0)
    _record(tmp_path, "c" * 64, "bad", "running", 4343, config_ok=False)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert records.containers_at(tmp_path) == [{"id": "a" * 64, "name": "web", "pid": 4242}]
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_a_root_without_containers_lists_none(tmp_path):
    assert records.containers_at(tmp_path / "nothing") == []
