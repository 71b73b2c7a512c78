"""Detached containers share one supervisor per host (issue 24: ~1 MiB PSS per container at 10):
it reaps them, so their exit codes are recorded, keeps their logs, exits with the last one, and
the next one adopts what a crashed one left (exit code then unknown, and said)."""
import json
import os
import signal
from pathlib import Path

import pytest

from tests.labkit import wait_for

pytestmark = pytest.mark.integration


def _state(lab, name: str) -> dict:
    return json.loads((lab.root / "containers" / lab.inspect(name)["Id"] / "state.json").read_text())


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_detached_containers_share_one_supervisor_that_records_exits_and_leaves_with_the_last(lab):
    lab.ok("run", "-d", "--name", "s1", "--network", "none", "busybox", "sh", "-c", "echo one; sleep 60")
    lab.ok("run", "-d", "--name", "s2", "--network", "none", "busybox", "sh", "-c", "echo two >&2; sleep 1; exit 7")
    sup = _state(lab, "s1")["MonitorPid"]
    assert _state(lab, "s2")["MonitorPid"] == sup and _alive(sup)  # one process for both
    assert wait_for(lambda: lab.inspect("s2")["State"]["Status"] == "exited", 10)
    assert lab.inspect("s2")["State"]["ExitCode"] == 7  # reaped by the supervisor: the code is known
    p = lab.run("logs", "s2")
    assert (p.stdout, p.stderr) == ("", "two\n")
    assert _alive(sup)  # s1 still runs
    lab.ok("run", "-d", "--name", "s3", "--network", "none", "--restart", "on-failure:1", "busybox", "sh", "-c", "exit 3")
    assert wait_for(lambda: _state(lab, "s3").get("RestartCount") == 1
                    and lab.inspect("s3")["State"]["Status"] == "exited", 10)  # restarted once by a timer
    assert _state(lab, "s3")["ExitCode"] == 3 and _alive(sup), _state(lab, "s3")
    os.kill(lab.inspect("s1")["State"]["Pid"], signal.SIGKILL)
    assert wait_for(lambda: lab.inspect("s1")["State"]["ExitCode"] == 137, 10)
    assert lab.ok("logs", "s1") == "one\n"
    assert wait_for(lambda: not _alive(sup), 10)  # nothing left to supervise: it went
    assert not (lab.root / "supervisor.sock").exists()
    lab.ok("start", "s1")  # and the next start brings one up again
    sup2 = _state(lab, "s1")["MonitorPid"]
    assert lab.inspect("s1")["State"]["Running"] and sup2 != sup

    os.kill(sup2, signal.SIGKILL)  # a supervisor crash: s1 runs on, unsupervised
    assert wait_for(lambda: "unsupervised" in lab.ok("ps"), 10)
    lab.ok("run", "-d", "--name", "s4", "--network", "none", "busybox", "sleep", "60")
    sup3 = _state(lab, "s4")["MonitorPid"]
    assert _state(lab, "s1")["MonitorPid"] == sup3 != sup2  # the next supervisor adopted it
    assert "unsupervised" not in lab.ok("ps")
    os.kill(lab.inspect("s1")["State"]["Pid"], signal.SIGKILL)
    assert wait_for(lambda: lab.inspect("s1")["State"]["Status"] == "exited", 10)
    st = lab.inspect("s1")["State"]
    assert st["ExitCode"] == 255 and "exit code unknown" in st["Error"], st  # the loss is said
    lab.ok("rm", "-f", "s1", "s4")
    assert wait_for(lambda: not _alive(sup3), 10)


def test_repair_asks_the_running_supervisor_to_adopt_a_container_whose_own_monitor_died(lab):
    """An attached run keeps a monitor of its own; killed (with its CLI), its container runs on
    unsupervised. `system repair` hands it to the supervisor already running for a detached one."""
    import subprocess

    lab.ok("run", "-d", "--name", "keep", "--network", "none", "busybox", "sleep", "60")
    sup = _state(lab, "keep")["MonitorPid"]
    cli = lab.popen("run", "--name", "fg", "--network", "none", "busybox", "sh", "-c", "echo up; exec sleep 60",
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert cli.stdout.readline() == b"up\n"
        own = _state(lab, "fg")["MonitorPid"]
        assert own != sup
        os.kill(own, signal.SIGKILL)
        cli.kill()
        cli.wait()
        assert wait_for(lambda: "unsupervised" in lab.ok("ps"), 10)
        out = lab.ok("system", "repair")
        assert "fg" in out and "keep" not in out.split(":")[-1], out
        assert _state(lab, "fg")["MonitorPid"] == sup and "unsupervised" not in lab.ok("ps")
        os.kill(lab.inspect("fg")["State"]["Pid"], signal.SIGKILL)  # its exit is the supervisor's to record now
        assert wait_for(lambda: lab.inspect("fg")["State"]["Status"] == "exited", 10)
        st = lab.inspect("fg")["State"]
        assert st["ExitCode"] == 255 and "exit code unknown" in st["Error"], st
    finally:
        cli.kill()
        cli.wait()
    lab.ok("rm", "-f", "fg", "keep")
    assert wait_for(lambda: not _alive(sup), 10)


def test_a_state_directory_deeper_than_a_socket_path_may_be_still_gets_its_supervisor(tmp_path):
    """An AF_UNIX path is at most 107 bytes; a scenario's state directory under pytest's is longer
    (every scenario failed: 'Cannot start the container supervisor')."""
    from tests.labkit import World

    w = World(state_dir=tmp_path / ("d" * 60) / ("e" * 60) / "root")
    assert len(str(w.state_dir / "supervisor.sock")) > 108
    w.create()
    try:
        w.ok("run", "-d", "--name", "deep", "--network", "none", "busybox", "sleep", "60")
        assert _state(w, "deep")["MonitorPid"] and w.inspect("deep")["State"]["Running"]
        w.ok("rm", "-f", "deep")
    finally:
        w.destroy()
    assert w.leaks() == []
