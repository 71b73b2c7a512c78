"""The kernel's own trace of a live probe (nftrace) in labs: the dropping rule named by handle (a
user's nft rule, Docker's iptables-nft rule), a delivered probe's accepts, no trace table left
behind however the probe ends, the root namespace untouched, and the probe's frames as a pcapng.

Rules are identified independently of netdiag: by `nft -a -j` run in the namespace."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from netdiag.worlds import HOST_IP
from runtime.kernel.ns import netns as inside
from netdiag.probe import nftrace, pcap
from netdiag.probe.live import Hop, probe
from tests.dockerkit import HAVE_DOCKER, IMAGE, docker_lab, root_netns_state
from tests.integration.test_live_probe import _children, _own_instances
from tests.labkit import fds_left, open_fds

pytestmark = pytest.mark.integration
PORT = 8080


def nft_in(ns_path: str | None, *args: str, input: str | None = None) -> str:
    """nft in the namespace at `ns_path` (None: the one the tests run in, the machine's)."""
    enter = ["nsenter", f"--net={ns_path}"] if ns_path else []
    p = subprocess.run([*enter, "nft", *args], capture_output=True, text=True, input=input, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def trace_tables(ns_path: str | None) -> list[str]:
    items = json.loads(nft_in(ns_path, "-j", "list", "tables") or '{"nftables": []}')["nftables"]
    return [f"{t['table']['family']} {t['table']['name']}" for t in items
            if "table" in t and t["table"]["name"].startswith("netdiag_trace_")]


def handle_of(ns_path: str, family: str, table: str, chain: str, pred) -> int:
    items = json.loads(nft_in(ns_path, "-a", "-j", "list", "chain", family, table, chain))["nftables"]
    found = [i["rule"]["handle"] for i in items if "rule" in i and pred(i["rule"])]
    assert len(found) == 1, items
    return found[0]


def has_verdict(rule: dict, verdict: str) -> bool:
    return any(verdict in e for e in rule["expr"])


@pytest.fixture
def world(lab):
    """The lab's host and outside namespaces; afterwards: no trace table in them, none in the root
    namespace, whose ruleset and links are unchanged; no child, tracefs instance or fd left."""
    root = root_netns_state()
    fds = open_fds()
    host, out = f"/run/netns/{lab.name}", f"/run/netns/{lab.outside}"
    socks: list[socket.socket] = []
    try:
        yield host, out, socks
        assert trace_tables(host) == [] and trace_tables(out) == [], "a trace table was left behind"
    finally:
        for s in socks:
            s.close()
    assert trace_tables(None) == []
    assert root_netns_state() == root, "the root namespace changed"
    assert _children() == [] and _own_instances() == []
    assert fds_left(fds) == {}, "an fd was left open"


def listen(ns_path: str, socks: list, port: int = PORT) -> None:
    with inside(ns_path):
        s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST_IP, port))
    s.listen(8)
    socks.append(s)


def hops(host: str, out: str) -> list[Hop]:
    return [Hop(out, "eth0", "outside eth0"), Hop(host, "eth0", "host eth0"), Hop(host, "lo", "host lo")]


def test_a_users_nft_drop_rule_is_named_by_table_chain_and_handle(world):
    host, out, _ = world
    nft_in(host, "-f", "-", input="table inet user_fw { chain input { type filter hook input priority 0; policy accept; "
                                  f"tcp dport {PORT} counter drop; }}; }}")
    handle = handle_of(host, "inet", "user_fw", "input", lambda r: has_verdict(r, "drop"))
    res = probe(out, HOST_IP, proto="tcp", dport=PORT, hops=hops(host, out), timeout=1.5, trace_ns=[out, host])
    assert res.outcome == "timeout", res
    d = res.nftrace_drop
    assert (d["ns_path"], d["family"], d["table"], d["chain"], d["handle"], d["type"], d["verdict"]) == \
           (host, "inet", "user_fw", "input", handle, "rule", "drop"), res.nftrace
    assert d["direction"] == "probe" and d["iif"] == "eth0" and d["packet"]["sport"] == res.sport
    assert res.nftrace_ns == [out, host] and res.nftrace_error is None
    assert any("dropped by netfilter" in n for n in res.notes), res.notes
    nf = [x for x in res.drops if x["reason"] == "NETFILTER_DROP"]
    assert nf and all(x["scope"] == "host" and f"handle {handle}" in x["probe_dropped_by"] for x in nf), res.drops


def test_a_delivered_probe_shows_accepts_and_no_drop(world):
    host, out, socks = world
    listen(host, socks)
    nft_in(host, "-f", "-", input="table inet user_fw { "
                                  "chain input { type filter hook input priority 0; policy accept; "
                                  f"tcp dport {PORT} counter accept; }}; "
                                  "chain output { type filter hook output priority 0; policy accept; }; }")
    handle = handle_of(host, "inet", "user_fw", "input", lambda r: has_verdict(r, "accept"))
    t0 = time.monotonic()
    res = probe(out, HOST_IP, proto="tcp", dport=PORT, hops=hops(host, out), timeout=2, trace_ns=[out, host])
    took = time.monotonic() - t0
    assert res.outcome == "connected", res
    assert res.nftrace_drop is None and not any(e["verdict"] == "drop" for e in res.nftrace), res.nftrace
    seen = {(e["chain"], e["handle"], e["type"], e["verdict"], e["direction"]) for e in res.nftrace if e["table"] == "user_fw"}
    assert ("input", handle, "rule", "accept", "probe") in seen, seen
    assert ("output", None, "policy", "accept", "reply") in seen, seen  # the SYN-ACK leaves through output
    assert all(e["ns_path"] == host for e in res.nftrace)  # outside has no tables of its own: nothing to report
    assert took < 1.5, took


def test_keyboard_interrupt_while_tracing_removes_the_tables(world):
    host, out, _ = world
    nft_in(host, "-f", "-", input="table inet user_fw { chain input { type filter hook input priority 0; policy drop; }; }")
    for delay in (0.02, 0.3):
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            probe(out, HOST_IP, proto="tcp", dport=PORT, hops=hops(host, out), timeout=2, trace_ns=[out, host])
            time.sleep(5)
        timer.join()
        assert trace_tables(host) == [] and trace_tables(out) == []


def test_a_killed_tracer_child_is_cleaned_up_by_the_parent(world):
    host, out, _ = world
    nft_in(host, "-f", "-", input="table inet user_fw { chain input { type filter hook input priority 0; policy drop; }; }")
    killed = []

    def kill_tracer():  # find the child by the pid in its table's name, then SIGKILL it (no clean-up of its own)
        # (this thread's subprocess pipes are open while probe() forks: its children must not keep them)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not killed:
            for t in trace_tables(host):
                pid = int(t.split("_")[2])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.02)

    t = threading.Thread(target=kill_tracer)
    t.start()
    res = probe(out, HOST_IP, proto="tcp", dport=PORT, timeout=1.5, trace_ns=[out, host], trace_drops=False)
    t.join()
    assert killed, f"the trace table never appeared: {res}"
    assert res.outcome == "timeout" and res.nftrace == [] and res.nftrace_error, res


def test_sigterm_to_the_caller_removes_the_tables(world, lab):
    host, out, _ = world
    nft_in(host, "-f", "-", input="table inet user_fw { chain input { type filter hook input priority 0; policy drop; }; }")
    script = textwrap.dedent(f"""
        import ctypes, os, signal, sys, time
        ctypes.CDLL("libc.so.6").prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: see the orphans end
        pid = os.fork()
        if pid == 0:
            from netdiag.probe.live import probe
            probe({out!r}, {HOST_IP!r}, proto="tcp", dport={PORT}, timeout=5, trace_ns=[{out!r}, {host!r}], trace_drops=False)
            os._exit(0)
        time.sleep(1.2)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        else:
            print("descendants linger"); sys.exit(1)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.returncode == 0, p.stdout + p.stderr


def test_prune_removes_only_tables_of_dead_processes(world):
    host, _, _ = world
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = nftrace.table_name(dead.pid, "0badc0de"), nftrace.table_name(os.getpid(), "600dc0de")
    for name in (stale, live):
        nft_in(host, "-f", "-", input=f"table inet {name} {{ chain pre {{ type filter hook prerouting priority -350; }}; }}")
    nft_in(host, "-f", "-", input="table inet user_fw { chain c { }; }")
    try:
        assert nftrace.prune([host, "/run/netns/ndtrace-no-such-ns"]) == [f"{host}: inet {stale}"]
        assert trace_tables(host) == [f"inet {live}"]
        assert "table inet user_fw" in nft_in(host, "list", "tables")
    finally:
        nftrace.remove([host], live)


def _pcapng_blocks(path: str) -> list[tuple[int, bytes]]:
    """(block type, body) of a little-endian pcapng file, read without scapy."""
    data, off, out = open(path, "rb").read(), 0, []
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        out.append((btype, data[off + 8:off + blen - 4]))
        off += blen
    return out


def test_pcap_of_a_lab_trace_reads_back_with_one_interface_per_hop(world, tmp_path):
    host, out, socks = world
    listen(host, socks)
    hs = hops(host, out)
    res = probe(out, HOST_IP, proto="tcp", dport=PORT, hops=hs, timeout=2)
    assert res.outcome == "connected"
    assert [f["hop"] for f in res.frames if f["kind"] == "probe"][:2] == [0, 1]  # by kernel timestamp: outside first
    assert all(abs(f["ts"] - time.time()) < 30 and f["len"] >= len(f["data"]) // 2 for f in res.frames)
    path = str(tmp_path / "probe.pcapng")
    assert pcap.write(path, res) == {"interfaces": 3, "frames": len(res.frames)}

    blocks = _pcapng_blocks(path)
    idbs = [b for t, b in blocks if t == 1]
    assert len(idbs) == 3  # one per hop, the lo hop too although nothing passed it
    assert [t for t, _ in blocks].count(6) == len(res.frames) >= 4  # SYN and SYN-ACK at two hops

    from scapy.utils import PcapNgReader

    with PcapNgReader(path) as reader:
        pkts = list(reader)
    names = ["outside eth0", "host eth0", "host lo"]
    assert [p.sniffed_on for p in pkts] == [names[f["hop"]] for f in sorted(res.frames, key=lambda f: f["ts"])]
    assert all(p.wirelen == f["len"] for p, f in zip(pkts, sorted(res.frames, key=lambda f: f["ts"])))
    tcpdump = subprocess.run(["tcpdump", "-nn", "-r", path], capture_output=True, text=True, timeout=30)
    assert tcpdump.returncode == 0, tcpdump.stderr
    assert len(tcpdump.stdout.splitlines()) == len(res.frames)
    assert f".{res.sport} > {HOST_IP}.{PORT}: Flags [S]" in tcpdump.stdout


@pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")
def test_dockers_icc_rule_is_named_by_handle(tmp_path):
    """Two containers on a Docker network with enable_icc=false: the probe from one to the other
    dies in Docker's own `ip filter FORWARD` rule (iptables-nft), traced to that rule's handle."""
    def setup(d):
        d.docker("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "noicc")
        for name in ("c1", "c2"):
            d.docker("run", "-d", "--network", "noicc", "--name", name, IMAGE, "httpd", "-f", "-p", "80")

    with docker_lab(tmp_path, setup) as d:
        lab = f"/run/netns/{d.lab.name}"
        br = "br-" + json.loads(d.docker("network", "inspect", "noicc").stdout)[0]["Id"][:12]
        c1, c2 = (f"/proc/{d.inspect(n)['State']['Pid']}/ns/net" for n in ("c1", "c2"))
        c2_ip = d.inspect("c2")["NetworkSettings"]["Networks"]["noicc"]["IPAddress"]

        def icc_drop(rule):
            names = {m["match"]["left"]["meta"]["key"]: m["match"]["right"] for m in rule["expr"]
                     if "match" in m and "meta" in m["match"]["left"]}
            return names == {"iifname": br, "oifname": br} and has_verdict(rule, "drop")

        handle = handle_of(lab, "ip", "filter", "FORWARD", icc_drop)
        res = probe(c1, c2_ip, proto="tcp", dport=80, hops=[Hop(c1, "eth0", "c1 eth0"), Hop(c2, "eth0", "c2 eth0")],
                    timeout=1.5, trace_ns=[c1, lab, c2])
        assert res.outcome == "timeout", res
        drop = res.nftrace_drop
        assert (drop["ns_path"], drop["family"], drop["table"], drop["chain"], drop["handle"], drop["type"]) == \
               (lab, "ip", "filter", "FORWARD", handle, "rule"), res.nftrace
        assert (drop["iif"], drop["oif"], drop["direction"]) == (br, br, "probe")
        # on its way: Docker's own chains, jumped to from FORWARD and returning
        assert {"DOCKER-USER", "DOCKER-ISOLATION-STAGE-1"} <= {e["chain"] for e in res.nftrace}
        assert res.seen[0]["count"] >= 1 and res.seen[1]["count"] == 0
        for ns in (c1, lab, c2):
            assert trace_tables(ns) == []
