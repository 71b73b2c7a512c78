"""Replay: a world built with netdiag's own runtime in a lab (a network, a container with a published
port, one whose server listens on 127.0.0.1 only, an nftables drop rule, an iptables-nft rule with
an xt match) is snapshotted and destroyed; the snapshot is rebuilt in fresh namespaces, and the
live `netdiag trace` there reaches the verdict and cause the static trace of the snapshot reaches.
Then everything the replay made is removed, processes included."""
import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from netdiag.scenario import replay
from netdiag.scenario.common import alive
from runtime.errors import Conflict, KernelError
from tests.labkit import World

pytestmark = pytest.mark.integration

# (what, source, destination, port, expected verdict and cause) in the original's names; "OUT" is
# the lab's outside namespace, "WEB"/"DB" the containers (ns:PREFIX-web ... in the replay)
CASES = [
    ("published port", "OUT", "203.0.113.2", "8080", ("delivered", None), "connected"),
    ("listener on 127.0.0.1", "WEB", "DB", "5432", ("blocked", "LISTENER_LOOPBACK_ONLY"), "refused"),
    ("firewall drop", "OUT", "203.0.113.2", "6380", ("blocked", "FIREWALL_DROP"), "timeout"),
]


def _trace(argv: list[str], env: dict, netns: str | None = None) -> dict:
    from runtime.kernel.ns import enter

    p = subprocess.run([sys.executable, "-m", "netdiag", "trace", *argv, "--json"], capture_output=True, text=True,
                       timeout=120, env=env, preexec_fn=enter(f"/run/netns/{netns}") if netns else None)
    assert p.returncode in (0, 1), (argv, p.stdout, p.stderr)
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The original world, snapshotted and destroyed; then its replay (removed at the end)."""
    tmp = tmp_path_factory.mktemp("replay")
    lab = World(state_dir=tmp / "ndroot")
    snap = tmp / "snapshot.json"
    try:
        lab.create()
        lab.ok("network", "create", "--subnet", "10.61.0.0/24", "appnet")
        lab.ok("run", "-d", "--name", "web", "--network", "appnet", "-p", "8080:80", "busybox", "httpd", "-f", "-p", "80")
        lab.ok("run", "-d", "--name", "db", "--network", "appnet", "-p", "6380:6379", "busybox", "sh", "-c",
               "httpd -p 127.0.0.1:5432 && exec httpd -f -p 6379")
        db_ip = json.loads(lab.ok("inspect", "db"))[0]["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
        for argv in (["nft", "add", "table", "inet", "user"],
                     ["nft", "add", "chain", "inet", "user", "guard", "{ type filter hook forward priority 0 ; }"],
                     ["nft", "add", "rule", "inet", "user", "guard", "ip", "daddr", db_ip, "tcp", "dport", "6379", "counter", "drop"],
                     ["iptables-nft", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
                     # the rest of what a host may hold: VXLAN and its FDB, policy routing, ARP, sysctls
                     ["ip", "link", "add", "vx42", "type", "vxlan", "id", "42", "local", "203.0.113.2", "dev", "eth0",
                      "dstport", "4789", "nolearning"],
                     ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx42", "dst", "203.0.113.9"],
                     ["ip", "addr", "add", "10.42.0.1/24", "dev", "vx42"], ["ip", "link", "set", "vx42", "up"],
                     ["ip", "rule", "add", "from", "10.61.0.0/24", "lookup", "100", "priority", "100"],
                     ["ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.1", "table", "100"],
                     ["ip", "neigh", "add", "203.0.113.77", "lladdr", "02:00:00:00:00:77", "dev", "eth0", "nud", "permanent"],
                     ["sysctl", "-w", "net.ipv4.conf.eth0.rp_filter=2"]):
            assert lab.in_lab(*argv).returncode == 0, argv
        lab.ok("snapshot", "-o", str(snap))
    finally:
        lab.destroy()
    assert not lab.leaks(), lab.leaks()

    prefix = f"rp{secrets.token_hex(2)}"
    said = []
    start = time.monotonic()
    record = replay.rebuild(json.loads(snap.read_text()), prefix, say=said.append)
    built = time.monotonic() - start
    env = {**os.environ, "NETDIAG_ROOT": str(tmp / "replay-root")}  # no records: only what the kernel shows
    names = {"OUT": f"ns:{lab.outside}", "WEB": "web", "DB": "db"}
    replayed = {"OUT": f"ns:{prefix}-out", "WEB": f"ns:{prefix}-web", "DB": f"ns:{prefix}-db"}
    try:
        yield {"snap": snap, "record": record, "env": env, "prefix": prefix, "names": names, "replayed": replayed,
               "said": said, "built": built}
    finally:
        assert replay.remove(record) == []


def test_the_replay_is_the_snapshots_world(world):
    record, prefix = world["record"], world["prefix"]
    assert record["host"] == f"{prefix}-host" and world["built"] < 10, world["built"]
    assert {f"{prefix}-host", f"{prefix}-web", f"{prefix}-db", f"{prefix}-out"} <= set(record["namespaces"].values())
    assert all(len(n) <= 15 for n in record["namespaces"].values())
    assert record["pids"] and any("stand-in" in s for s in record["skipped"]), record["skipped"]

    def inside(ns, *argv):
        return subprocess.run(["ip", "netns", "exec", f"{prefix}-{ns}", *argv], capture_output=True, text=True).stdout

    assert "10.61.0.3/24" in inside("db", "ip", "-br", "addr") and "default via 10.61.0.1" in inside("db", "ip", "route")
    assert "127.0.0.1:5432" in inside("db", "ss", "-ltn")                              # the stand-in listens there only
    assert "tcp dport 8080 dnat to 10.61.0.2:80" in inside("host", "nft", "list", "ruleset")
    assert "--ctstate INVALID -j DROP" in inside("host", "iptables-nft-save")          # the iptables-nft table loaded
    assert "vxlan id 42 local 203.0.113.2 dev eth0" in inside("host", "ip", "-d", "link", "show", "vx42")
    assert "00:00:00:00:00:00 dst 203.0.113.9 self permanent" in inside("host", "bridge", "fdb", "show", "dev", "vx42")
    assert "100:\tfrom 10.61.0.0/24 lookup 100" in inside("host", "ip", "rule")
    assert "192.0.2.0/24 via 203.0.113.1 dev eth0" in inside("host", "ip", "route", "show", "table", "100")
    assert "203.0.113.77 dev eth0 lladdr 02:00:00:00:00:77 PERMANENT" in inside("host", "ip", "neigh")
    assert inside("host", "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter", "net.ipv4.ip_forward").split() == ["2", "1"]
    out = subprocess.run(["ip", "netns", "exec", f"{prefix}-out", "timeout", "5", "busybox", "wget", "-q", "-O", "-",
                          "http://203.0.113.2:8080/"], capture_output=True, text=True)
    assert "stand-in for httpd" in out.stdout, out                                     # through the replayed DNAT


@pytest.mark.parametrize("what,src,dst,port,expected,outcome", CASES, ids=[c[0] for c in CASES])
def test_live_trace_in_the_replay_agrees_with_the_snapshot(world, what, src, dst, port, expected, outcome):
    names, replayed = world["names"], world["replayed"]
    static = _trace([names.get(src, src), names.get(dst, dst), "--port", port, "--snapshot", str(world["snap"])],
                    world["env"])
    assert (static["verdict"], static["cause"]) == expected, static["summary"]
    live = _trace([replayed.get(src, src), replayed.get(dst, dst), "--port", port], world["env"], world["record"]["host"])
    assert (live["verdict"], live["cause"]) == expected, (live["summary"], live.get("live"))
    assert live["live"]["outcome"] == outcome  # a real packet went through the replayed world


def test_remove_leaves_nothing(world):
    record, prefix = world["record"], world["prefix"]
    assert replay.remove(record) == []
    assert not [n for n in os.listdir("/run/netns") if n.startswith(prefix + "-")]
    # killed; one whose parent is the host's init may stay a zombie until init reaps it (CI saw it)
    assert not [p for p in record["pids"] if alive(p)]


def _fixture_snapshot() -> dict:
    from pathlib import Path

    return json.loads((Path(__file__).parents[1] / "fixtures" / "lab_snapshot.json").read_text())


def test_a_failed_rebuild_removes_what_it_built_and_nothing_else():
    snap = _fixture_snapshot()
    host = snap["namespaces"][snap["host"]]
    host["nftables"] = {"nftables": [{"table": {"family": "ip", "name": "bad"}},
                                     {"chain": {"family": "ip", "table": "bad", "name": "c", "type": "filter", "hook": "input",
                                                "prio": 0, "policy": "accept"}},
                                     {"rule": {"family": "ip", "table": "bad", "chain": "c", "expr": [{"no_such_statement": 1}]}}]}
    prefix = f"rp{secrets.token_hex(2)}"
    with pytest.raises(KernelError, match="firewall"):
        replay.rebuild(snap, prefix)
    assert not [n for n in os.listdir("/run/netns") if n.startswith(prefix + "-")]

    from runtime.kernel import ns

    ns.create(f"{prefix}-host")  # somebody else's namespace with the name the replay wants
    try:
        with pytest.raises(Conflict):
            replay.rebuild(_fixture_snapshot(), prefix)
        assert os.path.exists(f"/run/netns/{prefix}-host")  # refused, and theirs left alone
    finally:
        ns.remove(f"{prefix}-host")
