"""`netdiag exec` as a hostile container would meet it: the caller runs `exec` from a root shell on
a real terminal, with stdout redirected to a host file. Nothing of the caller's may reach the
container: not its terminal (TIOCSTI would type commands into the caller's shell), not its
descriptors (reopened through /proc/self/fd they read or truncate the host file)."""
import fcntl
import os
import shutil
import subprocess
import sys
import termios
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent.parent / "fixtures" / "hostile" / "tiocsti.c"


@pytest.fixture(scope="module")
def injector(tmp_path_factory) -> Path:
    """A static TIOCSTI injector (gcc and libc6-dev come from scripts/setup)."""
    out = tmp_path_factory.mktemp("inj") / "inject"
    subprocess.run(["gcc", "-static", "-O", "-o", str(out), str(FIXTURE)], check=True, capture_output=True)
    return out


def _on_terminal(slave: int, also=None):
    """preexec_fn: a new session whose controlling terminal is `slave`, as a login shell has."""
    def pre():
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        if also:
            also()
    return pre


def _typed(slave: int) -> bytes:
    """What is waiting in the terminal's input queue: what the caller's shell would read next."""
    flags = fcntl.fcntl(slave, fcntl.F_GETFL)
    fcntl.fcntl(slave, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        return os.read(slave, 4096)
    except BlockingIOError:
        return b""
    finally:
        fcntl.fcntl(slave, fcntl.F_SETFL, flags)


def _cli(lab, *args):
    return [sys.executable, "-m", "netdiag", *args]


def test_exec_gives_no_terminal_to_type_into(lab, injector):
    lab.ok("run", "-d", "--name", "target", "busybox", "sleep", "600")
    shutil.copy(injector, f"/proc/{lab.inspect('target')['State']['Pid']}/root/inject")
    master, slave = os.openpty()
    try:
        # control: on a terminal it may reach, the injector does type into it (so this test can fail)
        subprocess.run([str(injector), "echo CONTROL\n"], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                       preexec_fn=_on_terminal(slave), timeout=10)
        assert b"CONTROL" in _typed(slave)
        for tty_flags in ([], ["-t"], ["-i"], ["-i", "-t"]):
            p = subprocess.run(_cli(lab, "exec", *tty_flags, "target", "/inject", "echo PWNED\n"), env=lab.env,
                               stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                               preexec_fn=_on_terminal(slave, lab.enter()))
            assert b"PWNED" not in _typed(slave), f"exec {tty_flags} let the container type into the caller's terminal"
            said = (p.stdout + p.stderr).decode()
            if "-t" in tty_flags:  # a pty of the container's own: the program may type into that one
                assert p.returncode == 0 and "injected via /dev/tty" in said
            else:
                assert p.returncode == 1 and "no terminal to inject into" in said
    finally:
        os.close(master)
        os.close(slave)


def test_exec_never_hands_the_callers_descriptors_in(lab, tmp_path):
    lab.ok("run", "-d", "--name", "fd", "busybox", "sleep", "600")
    host_file = tmp_path / "caller-output"
    host_file.write_text("HOST-SECRET\n")
    script = ("for n in 0 1 2; do readlink /proc/self/fd/$n; done >&2; "
              "test -f /proc/self/fd/1 && cat /proc/self/fd/1 >&2; "
              ": > /proc/self/fd/1; : > /proc/self/fd/2; echo done")
    with open(host_file, "a") as out, open(host_file, "a") as err_file, open(host_file) as inp:
        for flags in ([], ["-i"]):
            p = subprocess.run(_cli(lab, "exec", *flags, "fd", "sh", "-c", script), env=lab.env, stdin=inp,
                               stdout=out, stderr=subprocess.PIPE, timeout=30, preexec_fn=lab.enter())
            assert p.returncode == 0, p.stderr
            links = p.stderr.decode().split()
            assert len(links) == 3 and all(link.startswith("pipe:") for link in links), links
        # stderr to the host file as well: the container still sees only a pipe
        p = subprocess.run(_cli(lab, "exec", "fd", "sh", "-c", ": > /proc/self/fd/2; readlink /proc/self/fd/2"),
                           env=lab.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_file,
                           timeout=30, preexec_fn=lab.enter())
        assert p.stdout.decode().startswith("pipe:")
    assert host_file.read_text() == "HOST-SECRET\ndone\ndone\n"


def test_exec_process_has_no_session_of_the_callers(lab):
    lab.ok("run", "-d", "--name", "sess", "busybox", "sleep", "600")
    # /proc/self/stat: pid (comm) state ppid pgrp session tty_nr ...
    fields = lab.ok("exec", "sess", "cat", "/proc/self/stat").split(") ")[1].split()
    pid_session, tty_nr = int(fields[3]), int(fields[4])
    assert tty_nr == 0 and pid_session != 0
    # its own session: the exec'd process leads it (session id == its pid in the container)
    out = lab.ok("exec", "sess", "sh", "-c", "cut -d' ' -f6 /proc/$$/stat; echo $$")
    session, me = out.split()
    assert session == me


def test_ctrl_c_and_exit_codes_reach_through_the_relay(lab):
    import signal
    import time

    lab.ok("run", "-d", "--name", "sig", "busybox", "sleep", "600")
    p = lab.popen("exec", "sig", "sh", "-c", "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 0.1; done",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 9 and b"got-int" in out, err
    assert lab.run("exec", "sig", "sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def test_a_signal_that_reaches_the_command_before_its_exec_kills_it_like_after(lab):
    """The command is forked from the relay, which is forked from the CLI: a Ctrl-C forwarded in the
    few ms before its exec used to meet the CLI's Python handler (KeyboardInterrupt, reported as
    "Cannot exec"). Signalled as soon as it exists, it dies of the signal: exit 130, no error."""
    import signal

    lab.ok("run", "-d", "--name", "sig", "busybox", "sleep", "600")
    for _ in range(15):
        p = lab.popen("exec", "sig", "sleep", "60", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            cmd = []
            while not cmd and p.poll() is None:
                cmd = [c for relay in _children(p.pid) for c in _children(relay)]
            os.kill(cmd[0], signal.SIGINT)
            err = p.communicate(timeout=20)[1].decode()
        finally:
            p.kill()
            p.wait()
        assert p.returncode == 128 + signal.SIGINT and "Cannot exec" not in err, (p.returncode, err)


def test_a_health_check_runs_inside_the_containers_pid_namespace(lab):
    """A health check is the container's process, not the host's: /proc/self exists in the
    container's /proc only for a process of its PID namespace (else it could signal host PIDs)."""
    from tests.labkit import wait_for

    lab.ok("run", "-d", "--name", "hp", "--health-cmd", "test -r /proc/self/stat && test $$ -lt 100",
           "--health-interval", "0.2", "--health-retries", "1", "busybox", "sleep", "60")
    state = lambda: lab.inspect("hp")["State"].get("Health", {})  # noqa: E731
    assert wait_for(lambda: state().get("Status") in ("healthy", "unhealthy")), state()
    assert state()["Status"] == "healthy", state()["Log"]


def test_exec_into_a_container_at_its_pids_limit_says_so(lab):
    lab.ok("run", "-d", "--name", "full", "--pids-limit", "2", "busybox", "sh", "-c", "sleep 600 & exec sleep 600")
    p = lab.run("exec", "full", "true")
    assert p.returncode != 0 and "--pids-limit" in p.stderr, p.stderr
    assert "exists in the image" not in p.stderr and "Traceback" not in p.stderr


def test_run_interactive_hands_the_container_a_pipe_not_the_callers_stdin(lab, tmp_path):
    host_file = tmp_path / "caller-input"
    host_file.write_text("HOST-INPUT\n")
    with open(host_file) as inp:
        p = subprocess.run(_cli(lab, "run", "--rm", "-i", "busybox", "sh", "-c",
                                "readlink /proc/self/fd/0; : > /proc/self/fd/0 2>/dev/null; cat"),
                           env=lab.env, stdin=inp, capture_output=True, text=True, timeout=60, preexec_fn=lab.enter())
    assert p.returncode == 0, p.stderr
    link, data = p.stdout.split("\n", 1)
    assert link.startswith("pipe:") and data == "HOST-INPUT\n"
    assert host_file.read_text() == "HOST-INPUT\n"
