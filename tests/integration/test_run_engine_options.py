"""`netdiag run`'s options for what Compose files ask of Docker (--add-host, --tmpfs, --read-only,
--sysctl, --init, -t without -i, --stop-signal, --stop-timeout, --expose, --ulimit), as the container's own
process sees them, and a bad one refused with Docker's 125 before anything exists."""
import time

import pytest

pytestmark = pytest.mark.integration


def test_run_options_reach_the_container_and_stop_uses_its_signal(lab):
    p = lab.run("run", "-d", "-t", "--name", "box", "--init", "--add-host", "db.local:10.9.8.7", "--tmpfs", "/scratch:size=2m",
                "--read-only", "--sysctl", "net.ipv4.conf.all.forwarding=1", "--expose", "7000-7001/udp",
                "--stop-signal", "SIGUSR1", "--stop-timeout", "30", "--ulimit", "nofile=512:1024", "busybox")
    assert p.returncode == 0, p.stderr
    info = lab.inspect("box")
    assert info["State"]["Status"] == "running"  # -t keeps the image's shell waiting, as Docker's run -dt does
    assert (info["Config"]["StopSignal"], info["Config"]["StopTimeout"]) == ("SIGUSR1", 30)
    assert {"7000/udp", "7001/udp"} <= set(info["Config"]["ExposedPorts"])
    sh = lambda script: lab.run("exec", "box", "sh", "-c", script)  # noqa: E731
    assert "10.9.8.7\tdb.local\n" in sh("cat /etc/hosts").stdout
    assert sh("cat /proc/sys/net/ipv4/conf/all/forwarding").stdout == "1\n"
    assert sh("grep 'Max open files' /proc/1/limits").stdout.split()[3:5] == ["512", "1024"]
    assert sh("ulimit -n").stdout == "512\n"  # an exec gets them too
    assert sh("touch /x").returncode != 0 and sh("touch /scratch/x && echo ok").stdout == "ok\n"
    started = time.monotonic()  # SIGUSR1, forwarded by the init, ends the shell at once (SIGTERM would not)
    lab.ok("stop", "box", timeout=60)
    assert time.monotonic() - started < 15
    assert lab.inspect("box")["State"]["ExitCode"] == 128 + 10


def test_a_sysctl_outside_net_is_refused_before_anything_exists(lab):
    p = lab.run("run", "-d", "--sysctl", "kernel.shmmax=1", "busybox")
    assert p.returncode == 125 and "Only net.* keys are namespaced per container" in p.stderr
    assert lab.ok("ps", "-a", "--format", "{{.Names}}") == ""


def test_a_ulimit_above_the_hosts_hard_limit_fails_the_start_saying_why(lab):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here to exceed")
    p = lab.run("run", "--rm", "--ulimit", f"nofile={hard + 1}", "busybox", "true")
    assert p.returncode == 125 and f"Cannot set ulimit nofile={hard + 1}:{hard + 1}" in p.stderr, p.stderr
    assert f"the hard limit here is {hard}" in p.stderr
    assert lab.ok("ps", "-a", "--format", "{{.Names}}") == ""


def test_a_read_only_root_still_gets_its_working_directory(lab):
    p = lab.run("run", "--rm", "--read-only", "-w", "/made/for/me", "busybox", "sh", "-c", "pwd; touch x || echo refused")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "/made/for/me" and p.stdout.splitlines()[-1] == "refused"
