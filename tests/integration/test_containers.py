"""The runtime core, driven through the CLI in a lab namespace: isolation, limits, lifecycle truth."""
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.labkit import wait_for

pytestmark = pytest.mark.integration




def test_run_prints_output_and_exit_code_and_rm_leaves_nothing(lab):
    p = lab.run("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    assert lab.ok("ps", "-a", "-q") == ""
    assert not any((lab.root / "containers").iterdir())


def test_files_are_isolated_and_never_reach_the_image(lab):
    lab.ok("run", "-d", "--name", "ca", "busybox", "sleep", "60")
    lab.ok("run", "-d", "--name", "cb", "busybox", "sleep", "60")
    lab.ok("exec", "ca", "sh", "-c", "echo secret > /etc/only-a; rm /bin/ls")
    assert lab.ok("exec", "ca", "cat", "/etc/only-a") == "secret\n"
    p = lab.run("exec", "cb", "cat", "/etc/only-a")
    assert p.returncode != 0 and "No such file" in p.stderr
    assert lab.run("exec", "cb", "ls", "/bin/ls").returncode == 0
    # a fresh container of the image sees neither change
    assert lab.run("run", "--rm", "busybox", "ls", "/etc/only-a").returncode != 0
    assert lab.run("run", "--rm", "busybox", "ls", "/bin/ls").returncode == 0
    # nothing is mounted on the host side: the overlay lives in the container's mount namespace
    assert str(lab.root) not in Path("/proc/mounts").read_text()


def test_pid_uts_ipc_and_network_namespaces(lab):
    lab.ok("run", "-d", "--name", "iso", "--network", "none", "--hostname", "box1", "busybox", "sleep", "60")
    info = lab.inspect("iso")
    host_pid = info["State"]["Pid"]
    assert host_pid > 1 and Path(f"/proc/{host_pid}").exists()
    ps = lab.ok("exec", "iso", "ps", "-o", "pid,comm")
    first = ps.splitlines()[1].split()
    assert first == ["1", "sleep"], ps          # the command is PID 1 inside
    assert str(host_pid) not in ps.split()      # host pids are invisible
    assert lab.ok("exec", "iso", "hostname") == "box1\n"
    assert os.uname().nodename != "box1"
    for ns in ("pid", "uts", "ipc", "net", "mnt"):
        assert os.readlink(f"/proc/{host_pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    # --network none: only lo, up, no routes
    links = lab.ok("exec", "iso", "ip", "-o", "link")
    assert [ln.split(":")[1].strip() for ln in links.splitlines()] == ["lo"]
    assert "UP" in links
    assert lab.ok("exec", "iso", "ip", "route") == ""
    assert lab.ok("exec", "iso", "ip", "-o", "addr", "show", "lo").count("127.0.0.1") == 1


def test_default_hostname_is_the_short_id(lab):
    cid = lab.ok("run", "-d", "busybox", "sleep", "30").strip()
    assert lab.ok("exec", cid[:12], "hostname") == cid[:12] + "\n"


def test_host_network_shares_the_labs_interfaces(lab):
    out = lab.ok("run", "--rm", "--network", "host", "busybox", "ip", "-o", "addr")
    assert "203.0.113.2" in out   # the lab host's eth0, not the machine's


def test_only_fds_0_to_2_reach_the_container(lab):
    out = lab.ok("run", "--rm", "busybox", "sh", "-c", "ls /proc/1/fd; true")  # PID 1 stays sh
    assert out.split() == ["0", "1", "2"]


def test_memory_limit_kills_an_over_allocating_process(lab):
    p = lab.run("run", "--name", "hog", "-m", "16m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    assert p.returncode == 137, p.stderr
    state = lab.inspect("hog")["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    # the same allocation under the limit's headroom succeeds
    assert lab.run("run", "--rm", "-m", "128m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=16M", "count=1").returncode == 0


def test_pids_and_cpu_limits_are_applied(lab):
    out = lab.run("run", "--rm", "--pids-limit", "4", "busybox", "sh", "-c",
                  "for i in 1 2 3 4 5 6; do sleep 2 & done; wait")
    assert "can't fork" in out.stderr or "Resource temporarily unavailable" in out.stderr
    lab.ok("run", "-d", "--name", "cpu", "--cpus", "0.5", "busybox", "sleep", "30")
    cid = lab.inspect("cpu")["Id"]
    from runtime.containers import cgroups

    if cgroups.is_v2():
        value = (Path("/sys/fs/cgroup") / lab.cgroup_parent / cid[:12] / "cpu.max").read_text().split()[0]
    else:
        value = (Path("/sys/fs/cgroup/cpu") / lab.cgroup_parent / cid[:12] / "cpu.cfs_quota_us").read_text().strip()
    assert value == "50000"


def test_detached_container_outlives_the_cli_and_ps_tells_the_truth(lab):
    cid = lab.ok("run", "-d", "--name", "bg", "busybox", "sh", "-c", "echo started; exec sleep 60").strip()
    assert len(cid) == 64
    rows = [json.loads(x) for x in lab.ok("ps", "--format", "json").splitlines()]
    assert [(r["Names"], r["State"]) for r in rows] == [("bg", "running")]
    pid = lab.inspect("bg")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)  # killed behind netdiag's back
    assert wait_for(lambda: lab.inspect("bg")["State"]["Status"] == "exited")
    st = lab.inspect("bg")["State"]
    assert st["ExitCode"] == 137 and not st["Running"]
    assert lab.ok("ps", "-q") == ""
    assert "Exited (137)" in lab.ok("ps", "-a")
    assert lab.ok("logs", "bg") == "started\n"


def test_ps_is_truthful_when_the_monitor_itself_was_killed(lab):
    lab.ok("run", "-d", "--name", "orphan", "busybox", "sleep", "60")
    st = lab.inspect("orphan")["State"]
    info = json.loads((lab.root / "containers" / lab.inspect("orphan")["Id"] / "state.json").read_text())
    os.kill(info["MonitorPid"], signal.SIGKILL)
    os.kill(st["Pid"], signal.SIGKILL)
    assert wait_for(lambda: lab.inspect("orphan")["State"]["Status"] == "exited")
    assert "monitor" in lab.inspect("orphan")["State"]["Error"]


def _monitor_pid(lab, name: str) -> int:
    return json.loads((lab.root / "containers" / lab.inspect(name)["Id"] / "state.json").read_text())["MonitorPid"]


def _alive(pid: int) -> bool:
    """Running (a zombie is not: the host's init reaps a double-forked monitor in its own time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _ticks(lab, name: str) -> list[int]:
    return [int(x.split()[1]) for x in lab.ok("logs", name).splitlines() if x.startswith("tick ")]


TICKER = "trap '' PIPE; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"


def test_a_container_whose_monitor_died_is_unsupervised_until_repair_adopts_it(lab):
    lab.ok("run", "-d", "--name", "svc", "--health-cmd", "true", "--health-interval", "300ms", "busybox", "sh", "-c", TICKER)
    assert wait_for(lambda: (lab.inspect("svc")["State"].get("Health") or {}).get("Status") == "healthy", 10)
    old = _monitor_pid(lab, "svc")
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: not _alive(old))
    row = json.loads(lab.ok("ps", "--format", "json"))
    assert row["State"] == "running"  # it is: the kernel runs it, only nobody watches it
    assert row["Status"].endswith("(unsupervised: monitor died; run 'netdiag system repair')"), row
    st = lab.inspect("svc")["State"]
    assert st["Running"] and "monitor died" in st["Error"] and "system repair" in st["Error"]
    p = lab.run("logs", "svc")
    assert "stops where its monitor died" in p.stderr

    out = lab.ok("system", "repair")
    assert "New monitor for 1 container(s) whose monitor had died: svc" in out
    new = _monitor_pid(lab, "svc")
    assert new != old and _alive(new)
    assert "unsupervised" not in lab.ok("ps") and lab.inspect("svc")["State"]["Error"] == ""
    assert "New monitor" not in lab.ok("system", "repair")  # adopted once, not again
    before = max(_ticks(lab, "svc"))
    assert wait_for(lambda: max(_ticks(lab, "svc")) >= before + 3, 10)  # its output is logged again
    repaired = time.time()
    assert wait_for(lambda: _newest_check(lab, "svc") > repaired, 10)  # health checks run again

    lab.ok("stop", "-t", "1", "svc")  # the new monitor records the exit and cleans up
    st = lab.inspect("svc")["State"]
    assert st["Status"] == "exited" and st["ExitCode"] == 255 and "exit code unknown" in st["Error"], st
    assert "repair" in st["Error"]
    assert wait_for(lambda: not _alive(new), 10)  # the supervisor leaves with its last container, right after recording it
    assert json.loads(lab.ok("network", "inspect", "bridge"))[0]["Containers"] == {}


def _newest_check(lab, name: str) -> float:
    from runtime.containers.container_records import parse_iso

    log = (lab.inspect(name)["State"].get("Health") or {}).get("Log") or []
    return max((parse_iso(e["Start"]) for e in log), default=0.0)


def test_stopping_an_unsupervised_container_does_its_dead_monitors_cleanup(lab):
    lab.ok("run", "-d", "--name", "unsup", "busybox", "sleep", "60")
    cid = lab.inspect("unsup")["Id"]
    os.kill(_monitor_pid(lab, "unsup"), signal.SIGKILL)
    assert wait_for(lambda: "unsupervised" in lab.ok("ps"))
    lab.ok("stop", "-t", "1", "unsup")
    st = lab.inspect("unsup")["State"]
    assert (st["Status"], st["ExitCode"]) == ("exited", 255) and "stopped while its monitor was dead" in st["Error"]
    assert json.loads(lab.ok("network", "inspect", "bridge"))[0]["Containers"] == {}  # its endpoint is gone
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{lab.cgroup_parent}/{cid[:12]}"))
    assert not (Path("/sys/fs/cgroup") / lab.cgroup_parent / cid[:12]).exists()
    lab.ok("start", "unsup")  # and it starts again under a monitor of its own
    assert lab.inspect("unsup")["State"]["Running"] and "unsupervised" not in lab.ok("ps")


def test_stop_escalates_to_kill_and_start_restarts(lab):
    lab.ok("run", "-d", "--name", "sl", "busybox", "sleep", "60")
    t = time.monotonic()
    lab.ok("stop", "-t", "1", "sl")  # PID 1 ignores SIGTERM without a handler: KILL after 1 s
    assert time.monotonic() - t < 8
    assert lab.inspect("sl")["State"]["ExitCode"] == 137
    lab.ok("start", "sl")
    assert lab.inspect("sl")["State"]["Running"]
    lab.ok("restart", "-t", "0", "sl")
    assert lab.inspect("sl")["State"]["Running"]
    lab.ok("run", "-d", "--name", "trap", "busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    lab.ok("stop", "-t", "5", "trap")
    assert lab.inspect("trap")["State"]["ExitCode"] == 0


def test_logs_keep_streams_apart_and_follow(lab):
    lab.ok("run", "-d", "--name", "talk", "busybox", "sh", "-c", "echo one; echo two >&2; sleep 1; echo three")
    p = lab.popen("logs", "-f", "talk", stdout=-1, stderr=-1, text=True)
    out, err = p.communicate(timeout=15)
    assert (p.returncode, out, err) == (0, "one\nthree\n", "two\n")
    assert lab.ok("logs", "--tail", "1", "talk") == "three\n"


def test_exec_runs_in_the_container_with_env_workdir_and_user(lab):
    lab.ok("run", "-d", "--name", "ex", "-e", "MODE=prod", "-w", "/tmp", "busybox", "sleep", "60")
    assert lab.ok("exec", "ex", "sh", "-c", "echo $MODE $PWD") == "prod /tmp\n"
    assert lab.ok("exec", "-e", "MODE=dev", "-u", "nobody", "ex", "sh", "-c", "echo $MODE; id -u") == "dev\n65534\n"
    p = lab.run("exec", "ex", "nosuch")
    assert p.returncode != 0 and "executable file not found" in p.stderr
    assert lab.run("exec", "ex", "sh", "-c", "exit 7").returncode == 7


def test_names_ids_and_removal_rules(lab):
    cid = lab.ok("run", "-d", "--name", "dup", "busybox", "sleep", "60").strip()
    p = lab.run("run", "-d", "--name", "dup", "busybox", "true")
    assert p.returncode != 0 and "already in use" in p.stderr
    assert lab.ok("inspect", cid[:6])  # id prefix
    assert lab.inspect("/dup")["Id"] == cid
    p = lab.run("rm", "dup")
    assert p.returncode != 0 and "Stop it first" in p.stderr
    lab.ok("rm", "-f", "dup")
    assert lab.ok("ps", "-a", "-q") == ""
    p = lab.run("inspect", "dup")
    assert p.returncode != 0 and "No such" in p.stderr


@pytest.mark.parametrize("args,code,words", [  # docker run's codes: 125 run itself failed, 127 no such command
    (["run", "--rm", "nosuchimage"], 125, "No such image"),
    (["run", "--rm", "-m", "lots", "busybox", "true"], 125, "Invalid memory size"),
    (["run", "--rm", "--cpus", "-1", "busybox", "true"], 125, "Invalid --cpus"),
    (["run", "--rm", "--name", "bad name", "busybox", "true"], 125, "Invalid container name"),
    (["run", "--rm", "--name", "a", "busybox", "true"], 125, "Invalid container name (a), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
    (["run", "--rm", "busybox", "/no/such/program"], 127, "executable file not found"),
    (["run", "--rm", "--network", "none", "-p", "80:80", "busybox", "true"], 125, "Cannot publish"),
    (["run", "--rm", "--network", "host", "-p", "80:80", "busybox", "true"], 125, "Cannot publish"),
])
def test_bad_input_is_a_clear_error_and_creates_nothing(lab, args, code, words):
    p = lab.run(*args)
    assert p.returncode == code, p.stderr
    assert words in p.stderr and "Traceback" not in p.stderr
    assert lab.ok("ps", "-a", "-q") == ""


def test_image_in_use_cannot_be_removed(lab):
    lab.ok("run", "-d", "--name", "user", "busybox", "sleep", "30")
    p = lab.run("image", "rm", "busybox")
    assert p.returncode != 0 and "in use by container(s) user" in p.stderr
    lab.ok("rm", "-f", "user")
    assert "Deleted" in lab.ok("image", "rm", "busybox")
    assert not any((lab.root / "images" / "blobs" / "sha256").iterdir())


def test_health_cmd_reports_healthy_then_unhealthy(lab):
    lab.ok("run", "-d", "--name", "hc", "--health-cmd", "test -f /tmp/ok", "--health-interval", "0.2",
           "--health-retries", "1", "busybox", "sh", "-c", "touch /tmp/ok; sleep 60")
    health = lambda: lab.inspect("hc")["State"].get("Health", {}).get("Status")  # noqa: E731
    assert wait_for(lambda: health() == "healthy")
    lab.ok("exec", "hc", "rm", "/tmp/ok")
    assert wait_for(lambda: health() == "unhealthy")
    assert "(unhealthy)" in lab.ok("ps")


def test_health_checks_run_on_time_for_a_chatty_container_and_one_that_closed_its_output(lab):
    # the checks used to run only after a whole interval without output, and stopped with the output
    lab.ok("run", "-d", "--name", "chatty", "--health-cmd", "true", "--health-interval", "0.3",
           "busybox", "sh", "-c", "while true; do echo x; sleep 0.1; done")
    lab.ok("run", "-d", "--name", "quiet", "--health-cmd", "true", "--health-interval", "0.3",
           "busybox", "sh", "-c", "exec >&- 2>&-; sleep 60")
    for name in ("chatty", "quiet"):
        assert wait_for(lambda: (lab.inspect(name)["State"].get("Health") or {}).get("Status") == "healthy", 10), name
        assert "(healthy)" in [line for line in lab.ok("ps").splitlines() if line.endswith(name)][0]


def test_exec_with_a_terminal(lab):
    lab.ok("run", "-d", "--name", "term", "busybox", "sleep", "60")
    out = lab.ok("exec", "-t", "term", "sh", "-c", "tty; test -t 0 && echo interactive")
    assert out.replace("\r", "").split("\n")[:2] == ["/dev/pts/0", "interactive"]
    p = lab.run("exec", "-i", "-t", "term", "sh", input="echo hi-from-stdin; exit 3\n")
    assert p.returncode == 3 and "hi-from-stdin" in p.stdout
