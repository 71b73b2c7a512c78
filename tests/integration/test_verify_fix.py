"""`--verify-fix`: a printed fix proven on a throwaway replica, never on the real host.

A fault world (netdiag/faults: client -- lab host -- server, routed) gets a firewall drop in the
lab host's forward hook. `netdiag trace --verify-fix --json` and `netdiag health --verify-fix`
rebuild its namespaces as fresh ones, apply the printed fix there and probe: `fix_verified.replica`
is true, and the real world is exactly as it was (the fault in place, the ruleset and routes
unchanged, no replica namespace left). A fix known to be wrong (a deterministic no-op, injected at
the unit level over a snapshot of the same world) is false; a command at netdiag's level is not
run and says why; an interrupted verification leaves nothing behind."""
import dataclasses
import json
import os
import random
import subprocess
import sys

import pytest

from netdiag import verify
from netdiag.faults.catalogue import KINDS
from netdiag.faults.world import build
from runtime.kernel.ns import enter

pytestmark = pytest.mark.integration

SEED = 4242


def _replicas() -> set[str]:
    return {n for n in os.listdir("/run/netns") if n.startswith("vf")}


def _state(w) -> dict:
    """What the real world holds: the lab host's ruleset, routes and links, and every namespace's routes."""
    out = {"nft": w.run(None, "nft", "list", "ruleset").stdout, "links": w.ip(None, "-br", "link"),
           "routes": w.ip(None, "route", "show", "table", "all")}
    for ns in (w.client, w.server):
        out[f"{ns} routes"] = w.ip(ns, "route")
        out[f"{ns} nft"] = w.run(ns, "nft", "list", "ruleset").stdout
    return out


@pytest.fixture(scope="module")
def world():
    w = build(SEED, "routed")
    try:
        exp = KINDS["nft-inet-forward-drop"].plant(w, random.Random(SEED))
        assert exp.at is None and not w.connects()  # the drop is in the lab host, and the flow fails
        yield w, exp
    finally:
        w.destroy()


def _netdiag(w, *argv: str) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "netdiag", *argv, "--json"], capture_output=True, text=True, timeout=180,
                       env=w.lab.env, preexec_fn=enter(w.ns_path(None)))
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


def test_trace_verifies_the_printed_fix_on_a_replica_and_leaves_the_host_alone(world):
    w, exp = world
    before = _state(w)
    code, r = _netdiag(w, "trace", *exp.flow.argv(), "--verify-fix")
    assert code == 1 and r["cause"] == "FIREWALL_DROP", r["summary"]
    v = r["fix_verified"]
    assert v["replica"] is True, v
    assert v["probe"]["before"]["ok"] is False and v["probe"]["after"]["ok"] is True  # the replica had the fault
    assert v["applied"] and all(a["command"].startswith("ip netns exec vf") for a in v["applied"])
    assert "verified on a replica" in r["fix_proof"] and "checked on the model (both directions)" in r["fix_proof"]
    # the real host: nothing changed, the fault still there, no replica namespace left
    assert _state(w) == before
    assert not w.connects()
    # its own replica is gone (other replicas may come and go meanwhile: other runs on the machine)
    assert not [n for n in os.listdir("/run/netns") if n.startswith(v["replica_world"]["prefix"] + "-")]
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    schema = json.loads((Path(__file__).parents[2] / "netdiag" / "schemas" / "trace.schema.json").read_text())
    jsonschema.validate(r, schema)


def test_health_verifies_the_fix_on_a_replica(world):
    w, exp = world
    code, r = _netdiag(w, "health", f"{w.server_ip}:{w.port}", "--from", f"ns:{w.client}", "--tcp", "--timeout", "1",
                       "--verify-fix")
    assert code == 1 and r["cause"] == "FIREWALL_DROP", r["summary"]
    assert r["fix_verified"]["replica"] is True, r["fix_verified"]
    assert "verified on a replica" in r["fix_proof"]
    assert not w.connects()


@pytest.fixture(scope="module")
def snapshot(world, tmp_path_factory):
    """The same world as a snapshot file: verification needs the model, not the live host. The
    replay registry of the verifications run in this process is the lab's, not the machine's."""
    from netdiag.diagnose import diagnose
    from netdiag.snapshot_model import Model

    w, exp = world
    saved = os.environ.get("NETDIAG_ROOT")
    os.environ["NETDIAG_ROOT"] = w.lab.env["NETDIAG_ROOT"]
    path = tmp_path_factory.mktemp("verify") / "snap.json"
    subprocess.run([sys.executable, "-m", "netdiag", "snapshot", "-o", str(path)], check=True, env=w.lab.env,
                   preexec_fn=enter(w.ns_path(None)), capture_output=True, timeout=120)
    model = Model.load(str(path))
    result = diagnose(model, exp.flow.src, exp.flow.dst, proto=exp.flow.proto, port=exp.flow.port, live=False)
    assert result.cause == "FIREWALL_DROP" and result.fix.command
    try:
        yield model, result
    finally:
        if saved is None:
            os.environ.pop("NETDIAG_ROOT", None)
        else:
            os.environ["NETDIAG_ROOT"] = saved


def test_a_wrong_fix_is_not_verified(world, snapshot):
    w, _ = world
    model, result = snapshot
    replicas = _replicas()
    wrong = f"ip netns exec {w.server} ip link set lo up"  # runs fine, fixes nothing
    v = verify.verify(model, result, command=wrong, timeout=1)
    assert v["replica"] is False and "still fails" in v["detail"], v
    assert v["applied"] == [{"command": v["applied"][0]["command"], "returncode": 0, "output": ""}]
    assert v["applied"][0]["command"].startswith("ip netns exec vf") and w.server not in v["applied"][0]["command"]
    assert verify.proof(dataclasses.replace(result.fix, verified=v)).endswith(f"(not on a replica: {v['detail']})")
    failing = verify.verify(model, result, command="ip route add 10.255.255.0/24 via 10.255.255.1", timeout=1)
    assert failing["replica"] is False and "the fix failed on the replica" in failing["detail"], failing
    assert _replicas() == replicas and not w.connects()


def test_the_right_fix_from_a_snapshot_is_verified(world, snapshot):
    model, result = snapshot
    v = verify.verify(model, result, timeout=1)
    assert v["replica"] is True, v


def test_a_command_at_netdiags_level_is_not_run(world, snapshot):
    model, result = snapshot
    replicas = _replicas()
    v = verify.verify(model, result, command="netdiag network connect appnet web")
    assert v["replica"] is None and v["detail"].startswith("not verifiable on a replica: 'netdiag ...' acts through netdiag's state")
    assert _replicas() == replicas


def test_an_interrupted_verification_leaves_nothing_behind(world, snapshot, monkeypatch):
    from netdiag.scenario import registry

    model, result = snapshot
    replicas = _replicas()

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "probe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        verify.verify(model, result, timeout=1)
    assert _replicas() == replicas
    assert not [r for r in registry.replays() if r.get("purpose") == "verify-fix"]


def test_check_verifies_a_failed_reach_checks_fix(world, tmp_path):
    w, exp = world
    suite = tmp_path / "checks.yaml"
    suite.write_text(f"checks:\n  - name: the client reaches the server\n"
                     f"    reach: {{from: 'ns:{w.client}', to: {w.server_ip}, port: {w.port}, timeout: 1s}}\n")
    p = subprocess.run([sys.executable, "-m", "netdiag", "check", str(suite), "--format", "json", "--verify-fix"],
                       capture_output=True, text=True, timeout=180, env=w.lab.env, preexec_fn=enter(w.ns_path(None)))
    assert p.returncode == 1, p.stderr
    r, = json.loads(p.stdout)["checks"]
    assert r["status"] == "failed" and r["cause"] == "FIREWALL_DROP"
    assert r["fix_verified"]["replica"] is True, r["fix_verified"]
    assert "verified on a replica" in r["fix_proof"] and not w.connects()
    text = subprocess.run([sys.executable, "-m", "netdiag", "check", str(suite), "--verify-fix"], capture_output=True, text=True,
                          timeout=180, env=w.lab.env, preexec_fn=enter(w.ns_path(None))).stdout
    assert "verified on a replica ✓" in text and "proof: checked on the model (both directions) and verified on a replica" in text


@pytest.mark.parametrize("kind,shape", [("iptables-input-reject-at-server", "chain"), ("no-route-at-client", "routed"),
                                        ("blackhole-route", "routed"), ("port-not-published", "netdiag")])
def test_the_replica_agrees_with_the_real_world(kind, shape):
    """Fault cases traced with --verify-fix, then the fix applied for real: where the replica gave a
    verdict it is the real world's (whether that fix is right or wrong today); a command at
    netdiag's level gives none."""
    from netdiag.faults import case as cases

    r = cases.run(cases.Case(7, kind, shape), verify_fix=True)
    assert r.fix_command, r.explain()
    if r.fix_command.startswith("netdiag "):
        assert r.replica is None and "not verifiable on a replica" in r.replica_detail
    else:
        assert r.replica is not None and r.replica == r.fix_works, r.explain() + f"\n  replica: {r.replica_detail}"


def test_a_fix_runs_where_no_namespace_name_reaches_a_real_namespace(world):
    """The fix runs in a private mount namespace whose /run/netns is empty: even a command that got
    past the rewriting could not enter a real namespace by name; the machine's /run/netns is intact."""
    w, _ = world
    listed = verify._run(verify.Step("", w.lab.name, ["ip", "netns", "list"]))
    assert listed.returncode == 0 and listed.stdout.strip() == ""
    entered = verify._run(verify.Step("", w.lab.name, ["ip", "netns", "exec", w.server, "ip", "link"]))
    assert entered.returncode != 0
    assert {w.lab.name, w.server, w.client} <= set(os.listdir("/run/netns"))


def test_a_fix_in_a_containers_namespace_lands_in_its_replica():
    """netdiag's containers: a drop inside the server container's own namespace gets a fix through
    `nsenter -t PID -n`; on the replica it runs in that container's replica, and works; the real
    container keeps its rule."""
    from netdiag.faults import containers

    w = containers.build(5)
    try:
        w.start_server("--network", w.network)
        w.start_client("--network", w.network)
        pid = json.loads(w.netdiag("inspect", "web").stdout)[0]["State"]["Pid"]
        subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "add table inet g; add chain inet g input { type filter hook "
                        f"input priority 0; }}; add rule inet g input tcp dport {w.port} drop"], check=True)
        assert not w.connects()
        p = w.lab.netdiag("trace", "cli", w.server_ip, "--port", str(w.port), "--json", "--verify-fix", "--timeout", "1", timeout=200)
        r = json.loads(p.stdout)
        assert r["cause"] == "FIREWALL_DROP" and r["fix_command"].startswith(f"nsenter -t {pid} -n nft delete rule inet g input")
        v = r["fix_verified"]
        assert v["replica"] is True and v["applied"][0]["command"].startswith(f"ip netns exec {v['replica_world']['prefix']}-web "), v
        assert not w.connects()
    finally:
        w.destroy()
