"""A full disk, simulated: the log writer drops whole lines and says so, a record with a spare lands
without new space, and the error names the state directory. (The real thing, on a tmpfs, is
tests/integration/test_full_disk.py.)"""
import errno
import json
import os

import pytest


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_writer_drops_whole_lines_when_the_disk_is_full_then_says_how_many(tmp_path, monkeypatch):
    from runtime.containers import stdio

    seen = []
    w = stdio.LogWriter(tmp_path / "log", on_notice=seen.append)
    w.write("stdout", b"one\n")
    real, calls = os.write, []

    def full_disk(fd, data):  # like the kernel: part of the first write lands, then ENOSPC
        if fd != w.fd:
            return real(fd, data)
        calls.append(len(data))
        if len(calls) % 2:
            return real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stdio.os, "write", full_disk)
    w.write("stdout", b"two\nthree\n")
    w.write("stderr", b"four\n")
    assert [r["log"] for r in _records(tmp_path / "log")] == ["one\n"]  # no half record was kept
    assert (w.dropped, w.dropped_total, seen) == (3, 3, [])
    monkeypatch.setattr(stdio.os, "write", real)
    w.write("stdout", b"five\n")
    w.close()
    got = _records(tmp_path / "log")
    assert [r["log"] for r in got][0] == "one\n" and [r["log"] for r in got][2] == "five\n"
    assert got[1]["stream"] == "stderr"
    assert got[1]["log"] == "netdiag: 3 line(s) of output were dropped: the log could not be written (No space left on device)\n"
    assert seen == [3]


def test_log_writer_splits_a_line_without_end_so_the_monitor_memory_stays_bounded(tmp_path):
    from runtime.containers.stdio import LogWriter

    w = LogWriter(tmp_path / "log")
    w.write("stdout", b"x" * 40000)
    assert len(w.partial["stdout"]) < LogWriter.MAX_LINE
    w.close()
    assert [len(r["log"]) for r in _records(tmp_path / "log")] == [16384, 16384, 40000 - 2 * 16384]


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


def _no_space(*_a, **_kw):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_removes_its_temp_file_and_names_the_state_directory(root, monkeypatch):
    from runtime import state

    state.write_json(root / "rec.json", {"v": 1})
    monkeypatch.setattr(state.os, "replace", _no_space)
    with pytest.raises(state.DiskFull) as e:
        state.write_json(root / "rec.json", {"v": 2})
    assert sorted(p.name for p in root.iterdir()) == ["rec.json"]  # no temp file left
    assert json.loads((root / "rec.json").read_text()) == {"v": 1}
    assert str(e.value).startswith(f"Cannot write rec.json. The filesystem of the state directory {root} (NETDIAG_ROOT) ran out of space")
    assert e.value.exit_code == 1
    with pytest.raises(state.DiskFull) as e:
        with state.space_for("import x.tar"):  # the user's operation, not the file, is named
            state.write_json(root / "rec.json", {"v": 3})
    assert str(e.value).startswith("Cannot import x.tar. ")


def test_a_record_with_a_spare_lands_on_a_full_disk_and_one_without_says_so(root, monkeypatch):
    from runtime import state

    rec = root / "state.json"
    state.write_json(rec, {"Status": "running"})
    assert state.reserve(rec)
    monkeypatch.setattr(state, "_write_atomic", lambda path, data: (_ for _ in ()).throw(state.DiskFull("write", path)))
    state.write_json_reserved(rec, {"Status": "exited", "ExitCode": 3})
    assert json.loads(rec.read_text()) == {"ExitCode": 3, "Status": "exited"}
    assert (root / ".state.json.spare").stat().st_size == state.SPARE  # made again where room allows
    (root / ".state.json.spare").unlink()
    with pytest.raises(state.DiskFull):
        state.write_json_reserved(rec, {"Status": "exited", "ExitCode": 4})
    assert json.loads(rec.read_text())["ExitCode"] == 3
