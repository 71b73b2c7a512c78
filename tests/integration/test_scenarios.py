"""Every scenario, for real: start it; the learner's diagnosis command names the planted cause at
the right hop; the grader (`netdiag check`) fails; the reference solution is applied; the grader
passes; stop leaves nothing behind. And the `netdiag scenario` commands as a learner uses them."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from netdiag.scenario import library, registry
from netdiag.scenario.common import alive, netns_inodes
from netdiag.worlds.leftovers import pids_in
from netdiag.scenario.session import Session

pytestmark = pytest.mark.integration


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A NETDIAG_ROOT of the test's own: its scenario registry and every world's state."""
    root = tmp_path / "root"
    monkeypatch.setenv("NETDIAG_ROOT", str(root))
    yield root
    for rec in registry.running():  # a failed test must not leave a world running
        Session.attach(library.load(rec["name"])).destroy()


def grade_until(session: Session, fixed: bool, timeout: float) -> list[dict]:
    """Grade until the verdict is `fixed` (a load balancer needs a check or two to notice)."""
    deadline = time.monotonic() + timeout
    while True:
        graded = session.grade()
        if all(c["passed"] for c in graded) == fixed or time.monotonic() > deadline:
            return graded
        time.sleep(0.5)


@pytest.mark.parametrize("name", library.names())
def test_scenario_from_broken_to_fixed(name, state):
    s = library.load(name)
    session = Session.start(s)
    try:
        assert registry.get(s.name)["lab"] == session.lab.name
        names = session.namespaces()  # the lab host and its outside, or a cluster's hosts, underlay and store
        assert names and all(os.path.exists(f"/run/netns/{ns}") for ns in names), names
        pids = pids_in(netns_inodes(names))  # monitors, HAProxy, servers, etcd, the hosts' agents
        d = session.diagnose()
        assert d["ok"], f"netdiag named {d['named']}, the scenario expects {d['expected']}: {d['result'].get('summary')}"
        graded = session.grade()
        assert not all(c["passed"] for c in graded), f"the grader passes a broken world: {graded}"
        paste_the_printed_solution(s.slug)
        graded = grade_until(session, True, 20)
        assert all(c["passed"] for c in graded), [c for c in graded if not c["passed"]]
    finally:
        left = session.destroy()
    assert left == [], left
    assert registry.get(s.name) is None
    running = [p for p in pids if alive(p)]
    assert not running, f"processes of the world still run: {running}"


def cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netdiag", *args], capture_output=True, text=True, timeout=timeout, **kw)


def paste_the_printed_solution(slug: str) -> None:
    """What a learner does: `netdiag scenario solution`, then each block's lines pasted, exactly as
    printed, into a bash in the shell the block names (its command, as printed, too)."""
    printed = cli("scenario", "solution", slug)
    assert printed.returncode == 0, printed.stderr
    blocks = re.findall(r"^Run in `(netdiag scenario shell [^`]+)`:\n((?:    .*\n?)+)", printed.stdout, re.M)
    assert blocks and "${" not in printed.stdout, printed.stdout
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    for shell, body in blocks:
        pasted = "set -e\n" + "".join(line[4:] + "\n" for line in body.splitlines())
        p = subprocess.run(["bash", "-c", f"{shell} -c {shlex.quote(pasted)}"], capture_output=True, text=True,
                           timeout=120, env=env, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"{shell}:\n{pasted}\n{p.stdout}{p.stderr}"


def test_the_scenario_commands_as_a_learner_uses_them(state, tmp_path):
    assert cli("scenario", "status").stdout.startswith("No scenario is running")
    p = cli("scenario", "start", "1")
    assert p.returncode == 0, p.stderr
    assert "The web server nobody can reach" in p.stdout and "netdiag scenario shell port_not_published" in p.stdout
    again = cli("scenario", "start", "port_not_published")
    assert again.returncode != 0 and "already running" in again.stderr and "Traceback" not in again.stderr
    second = cli("scenario", "start", "02")  # two different scenarios at once
    assert second.returncode == 0, second.stderr
    planted = [f["say"] for f in library.load("02").spec["faults"] if f.get("say")]
    assert planted and not any(say in second.stdout + second.stderr for say in planted)  # the start never tells the fault
    assert "bound to 127.0.0.1" not in second.stderr
    running = json.loads(cli("scenario", "status", "--json").stdout)
    lab2 = next(r["lab"] for r in running if r["name"] == "02_loopback_listener")
    assert f"outside namespace ns:{lab2}-out (203.0.113.1)" in second.stdout  # the trace "from the internet" starts there
    assert {r["name"]: r["containers"] for r in running} == {"01_port_not_published": ["web"], "02_loopback_listener": ["web"]}
    assert len({r["lab"] for r in running}) == 2
    amb = cli("scenario", "hint")
    assert amb.returncode == 2 and "Several scenarios are running" in amb.stderr

    # the lab shell: netdiag acts on the scenario's world
    p = cli("scenario", "shell", "1", "-c", "netdiag ps --format json")
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[0])["Names"] == "web"
    hints = [cli("scenario", "hint", "1").stdout for _ in range(4)]
    assert hints[0].startswith("Hint 1/3") and hints[2].startswith("Hint 3/3") and hints[3].startswith("No more hints")
    assert registry.get("01_port_not_published")["hints"] == 3

    # inside a scenario's shell the scenario commands still find it; a hint carries this run's values
    inside = [cli("scenario", "shell", "2", "-c", "netdiag scenario hint").stdout for _ in range(3)]
    web_ip = json.loads(cli("scenario", "shell", "2", "-c", "netdiag inspect web").stdout)[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert inside[0].startswith("Hint 1/3") and f"eth0 address ({web_ip})" in inside[2], inside
    assert "nsenter -t " in inside[1] and "${" not in "".join(inside), inside

    p = cli("scenario", "check", "1", "--json", "--verify-fix")
    assert p.returncode == 1 and json.loads(p.stdout)["fixed"] is False
    failed = [c for c in json.loads(p.stdout)["checks"] if c["passed"] is False and c.get("fix_command")]
    assert failed and all("fix_verified" in c and c.get("fix_proof") for c in failed), failed  # which proof was made
    assert cli("scenario", "solution", "1", "--apply").returncode == 0
    p = cli("scenario", "check", "1")
    assert p.returncode == 0 and "Fixed" in p.stdout, p.stdout + p.stderr
    done = {r["name"]: r for r in json.loads(cli("scenario", "list", "--json").stdout)}
    assert done["01_port_not_published"]["done"] and done["01_port_not_published"]["hints_used"] == 3
    assert not done["02_loopback_listener"]["done"] and done["02_loopback_listener"]["running"]

    # record: the broken world and its live probe; the diagnosis replays offline, without privileges
    rec = tmp_path / "broken.json"
    p = cli("scenario", "record", "2", "-o", str(rec))
    assert p.returncode == 0, p.stderr
    snap = json.loads(rec.read_text())
    argv = snap["recorded"]["argv"]
    assert snap["recorded"]["live"]["cause"] == "LISTENER_LOOPBACK_ONLY" and snap["probes"][0]["live"]["outcome"] == "refused"
    # root's uid without a single capability (what an unprivileged CI runner has): no namespace
    # can be entered, no probe sent; everything comes from the file
    nobody = subprocess.run(["setpriv", "--bounding-set", "-all", sys.executable, "-m", "netdiag", "trace", "--snapshot", str(rec),
                             *argv, "--json"], capture_output=True, text=True, timeout=120, cwd="/")
    assert nobody.returncode == 1, nobody.stderr
    offline = json.loads(nobody.stdout)
    assert offline["cause"] == "LISTENER_LOOPBACK_ONLY" and offline["live"]["outcome"] == "refused"
    assert offline["live"]["recorded_at"] == snap["captured_at"] and offline["reconciled"] == "static and live agree"

    # reset: broken again; stop: everything gone
    assert cli("scenario", "solution", "2", "--apply").returncode == 0
    assert cli("scenario", "reset", "2").returncode == 0
    assert cli("scenario", "check", "2").returncode == 1
    labs = [r["lab"] for r in json.loads(cli("scenario", "status", "--json").stdout)]
    p = cli("scenario", "stop", "--all")
    assert p.returncode == 0 and p.stdout.split() == ["stopped", "01_port_not_published", "stopped", "02_loopback_listener"]
    assert not any(os.path.exists(f"/run/netns/{lab}") for lab in labs)
    assert cli("scenario", "status", "--json").stdout.strip() == "[]"
    assert not (state / "scenarios" / "01_port_not_published").exists()


def test_a_scenario_on_two_hosts_from_the_cli(state):
    """A cluster world from the learner's side: shells on each host and in a container on the
    other host, the grader, the solution, and `stop` from another process removing etcd, the
    agents, the hosts and their cgroups."""
    from pathlib import Path

    from netdiag.scenario.cluster import make_lab

    p = cli("scenario", "start", "16", "--json")
    assert p.returncode == 0, p.stderr
    world = json.loads(p.stdout)
    assert world["hosts"] == ["h1", "h2"] and "waiting for the agents" in p.stderr
    status = json.loads(cli("scenario", "status", "--json").stdout)
    assert status[0]["containers"] == ["api (h2)", "cache (h2)", "frontend (h1)"] and status[0]["lab"] == world["lab"]
    p = cli("scenario", "shell", "16", "-c", "netdiag cluster ls --json; netdiag ps --format json")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and {m["name"] for m in lines[:2]} == {"h1", "h2"} and lines[2]["Names"] == "frontend", p.stdout
    p = cli("scenario", "shell", "16", "h2", "-c", "netdiag ps --format json")
    assert sorted(json.loads(line)["Names"] for line in p.stdout.splitlines()) == ["api", "cache"]
    p = cli("scenario", "shell", "16", "api", "-c", "cat /www/index.html")
    assert p.returncode == 0 and p.stdout == "api ok\n", p.stderr
    p = cli("scenario", "check", "16", "--json")
    assert p.returncode == 1 and [c["cause"] for c in json.loads(p.stdout)["checks"] if not c["passed"]] == ["OVERLAY_PEER_UNKNOWN"] * 3
    p = cli("scenario", "solution", "16", "--apply")
    assert p.returncode == 0 and re.search(r"^Run in `netdiag scenario shell overlay_fdb_missing h1`:\n"
                                           r"    bridge fdb append 02:42(:[0-9a-f]{2}){4} dev vx-[0-9a-f]+ dst 198\.51\.100\.2$", p.stdout, re.M), p.stdout
    p = cli("scenario", "check", "16")
    assert p.returncode == 0 and "Fixed" in p.stdout, p.stdout + p.stderr
    p = cli("scenario", "stop")
    assert p.returncode == 0 and p.stdout.strip() == "stopped 16_overlay_fdb_missing", p.stderr
    lab = make_lab(world["lab"], Path(world["state_dir"]), world["hosts"])
    assert lab.leaks() == [] and not (state / "scenarios" / "16_overlay_fdb_missing").exists()
    assert not [n for n in os.listdir("/run/netns") if n.startswith(world["lab"])]


def test_bad_names_and_stopped_scenarios_are_clear_errors(state):
    p = cli("scenario", "start", "nope")
    assert p.returncode == 1 and "No scenario 'nope'" in p.stderr and "netdiag scenario list" in p.stderr
    p = cli("scenario", "check", "1")
    assert p.returncode == 1 and "is not running" in p.stderr and "netdiag scenario start port_not_published" in p.stderr
    p = cli("scenario", "stop")
    assert p.returncode == 1 and "No scenario is running" in p.stderr


def test_a_snapshot_of_a_broken_world_replays_as_a_lab_from_the_cli(state, tmp_path):
    snap = tmp_path / "incident.json"
    assert cli("scenario", "start", "loopback_listener").returncode == 0
    assert cli("scenario", "shell", "2", "-c", f"netdiag snapshot -o {snap}").returncode == 0
    assert cli("scenario", "stop").returncode == 0
    prefix = f"t{os.getpid() % 10000}"
    p = cli("scenario", "replay", str(snap), "--prefix", prefix)
    try:
        assert p.returncode == 0, p.stderr
        assert f"ip netns exec {prefix}-host netdiag trace" in p.stdout and "Not reproduced" in p.stdout
        again = cli("scenario", "replay", str(snap), "--prefix", prefix)
        assert again.returncode == 1 and "is running" in again.stderr
        assert any(r.get("replay") == prefix for r in json.loads(cli("scenario", "status", "--json").stdout))
        from runtime.kernel.ns import enter

        t = subprocess.run([sys.executable, "-m", "netdiag", "trace", f"ns:{prefix}-out", "203.0.113.2", "--port", "8080", "--json"],
                           capture_output=True, text=True, timeout=120, preexec_fn=enter(f"/run/netns/{prefix}-host"))
        r = json.loads(t.stdout)
        assert r["cause"] == "LISTENER_LOOPBACK_ONLY" and r["live"]["outcome"] == "refused", r["summary"]
    finally:
        stopped = cli("scenario", "stop", prefix)
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"stopped replay {prefix}"
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"{prefix}-")]


def test_a_registry_world_keeps_its_trust_and_credentials_and_refuses_the_insecure_workaround(state):
    """The world's image is only in its registry; the CA and Docker config the host uses are the
    world's (never /etc/docker/certs.d or ~/.docker); turning verification off makes the pull
    work but not the grader pass."""
    s = library.load("registry_unknown_ca")
    session = Session.start(s)
    try:
        env = session.env()
        root = str(session.root)
        assert env["NETDIAG_CERTS_D"].startswith(root) and env["DOCKER_CONFIG"].startswith(root), env
        assert "team/app" not in session.run(["netdiag", "images"]).stdout  # pushed, then removed: a pull must fetch it
        (session.lab.state_dir / "daemon.json").write_text(json.dumps({"insecure-registries": [session.expand("${registry}")]}))
        graded = {c["name"]: c["passed"] for c in session.grade()}
        assert graded == {"the image pulls from the team's registry": True,
                          "the CA this host trusts for the registry verifies its certificate (no insecure workaround)": False}, graded
    finally:
        left = session.destroy()
    assert left == [], left
