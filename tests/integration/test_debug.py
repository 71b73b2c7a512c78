"""`run --network container:X` and `netdiag debug X`: a container in another's network namespace, and a
toolbox there with the host's ip, tcpdump, nft and iperf3, removed when its command ends. In a lab
(the fixture checks nothing is left: namespaces, mounts, cgroups, processes)."""
import json
import shutil

import pytest

pytestmark = pytest.mark.integration


def _eth0(lab, name):
    return json.loads(lab.ok("inspect", name))[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]


def test_run_network_container_shares_the_namespace_its_names_and_refuses_what_belongs_to_it(lab):
    lab.ok("network", "create", "back")
    lab.ok("run", "-d", "--name", "web", "--network", "back", "busybox", "sh", "-c",
           "mkdir -p /w && echo from-web > /w/index.html && exec httpd -f -p 127.0.0.1:80 -h /w")
    web = json.loads(lab.ok("inspect", "web"))[0]
    ip = web["NetworkSettings"]["Networks"]["back"]["IPAddress"]
    p = lab.run("run", "--rm", "--network", "container:web", "busybox", "sh", "-c",
                "ip -4 -o addr show eth0; wget -qO- http://127.0.0.1/; hostname; cat /etc/resolv.conf")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert f"inet {ip}/" in lines[0]
    assert "from-web" in lines  # web's loopback-only server: the same namespace
    assert web["Config"]["Hostname"] in lines  # Docker gives it the owner's hostname
    assert any(line.startswith("nameserver ") and line.split()[1] == web["NetworkSettings"]["Networks"]["back"]["Gateway"]
               for line in lines)  # and the owner's resolver
    assert lab.ok("ps", "-a", "--format", "{{.Names}}").split() == ["web"]  # --rm
    for flags in (["-p", "8080:80"], ["--ip", "10.1.2.3"], ["--hostname", "x"], ["--dns", "1.1.1.1"]):
        p = lab.run("run", "--rm", "--network", "container:web", *flags, "busybox", "true")
        assert p.returncode == 125 and "Conflicting options" in p.stderr, p.stderr
    p = lab.run("run", "--rm", "--network", "container:nope", "busybox", "true")
    assert p.returncode == 125 and "No such container: nope" in p.stderr, p.stderr
    lab.ok("stop", "-t", "1", "web")
    p = lab.run("run", "--rm", "--network", "container:web", "busybox", "true")
    assert p.returncode == 125 and "Cannot join the network namespace of container web" in p.stderr, p.stderr
    assert lab.ok("ps", "-a", "--format", "{{.Names}}").split() == ["web"]


def test_debug_runs_the_hosts_tools_in_the_targets_namespace_and_leaves_nothing(lab):
    lab.ok("run", "-d", "--name", "web", "busybox", "sleep", "600")
    ip = _eth0(lab, "web")
    p = lab.run("debug", "web", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert p.returncode == 0, p.stderr
    assert f"inet {ip}/" in p.stdout
    assert "/host/usr/" in lab.ok("debug", "web", "--", "sh", "-c", "cat /host/bin/ip")  # the host's ip, not busybox's
    if shutil.which("tcpdump"):
        p = lab.run("debug", "web", "--", "tcpdump", "-D")
        assert p.returncode == 0 and "eth0" in p.stdout, p.stdout + p.stderr
    if shutil.which("nft"):
        p = lab.run("debug", "web", "--", "nft", "list", "ruleset")  # NET_ADMIN in the target's namespace: empty
        assert p.returncode == 0 and p.stdout.strip() == "", p.stdout + p.stderr
    # the command's own exit code; the toolbox is gone afterwards
    assert lab.run("debug", "web", "--", "sh", "-c", "exit 7").returncode == 7
    assert lab.ok("ps", "-a", "--format", "{{.Names}}").split() == ["web"]


def test_debug_refuses_a_missing_or_stopped_target_with_125_and_makes_nothing(lab):
    p = lab.run("debug", "nope", "--", "true")
    assert p.returncode == 125 and "No such container: nope" in p.stderr, p.stderr
    lab.ok("run", "--name", "done", "busybox", "true")
    p = lab.run("debug", "done", "--", "true")
    assert p.returncode == 125 and "Container done is not running" in p.stderr and "netdiag start done" in p.stderr, p.stderr
    lab.ok("run", "-d", "--name", "web", "busybox", "sleep", "600")
    p = lab.run("debug", "web", "--image", "nosuchimage", "--", "true")
    assert p.returncode == 125, p.stderr
    assert sorted(lab.ok("ps", "-a", "--format", "{{.Names}}").split()) == ["done", "web"]


def _holds_keeper(pid: int) -> bool:
    import os

    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith("debug-keeper") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_a_killed_debug_leaves_no_toolbox_behind(lab, tmp_path):
    """The toolbox's keeper reads a FIFO whose one writer is the CLI: SIGKILL cannot skip its removal."""
    import os
    import signal
    import subprocess

    from tests.labkit import wait_for

    lab.ok("run", "-d", "--name", "web", "busybox", "sleep", "600")
    names = lambda: sorted(lab.ok("ps", "-a", "--format", "{{.Names}}").split())  # noqa: E731
    for sig in (signal.SIGKILL, signal.SIGTERM):
        err = tmp_path / f"stderr-{sig}"
        with open(err, "w") as f:
            cli = lab.popen("debug", "web", "--", "sleep", "60", stdout=subprocess.DEVNULL, stderr=f)
        try:
            # once the CLI holds the keeper's FIFO (a few ms after the toolbox is listed: a kill
            # inside that window leaves the toolbox until `rm -f`, as README says)
            assert wait_for(lambda: len(names()) == 2 and _holds_keeper(cli.pid), 15), names()
            os.kill(cli.pid, sig)
            assert cli.wait(10) == (-sig if sig == signal.SIGKILL else 128 + sig), err.read_text()
        finally:
            cli.kill()
            cli.wait()
        assert wait_for(lambda: names() == ["web"], 15), f"{signal.Signals(sig).name}: the toolbox stayed: {names()}"
