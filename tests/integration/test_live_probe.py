"""Live probes along a predicted path: a -> r (forwards) -> b, all throwaway namespaces.

Every test checks afterwards that the probe left nothing behind: no forked child of this process,
no netdiag tracefs instance of this process (looked up in a private mount namespace), no open fd.
"""
import gc
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from runtime.kernel.ns import netns as inside
from netdiag.probe.capture import match_frame
from netdiag.probe.live import Hop, list_instances, probe
from tests.labkit import fds_left, open_fds

pytestmark = pytest.mark.integration

A_IP, RA_IP, RB_IP, B_IP = "10.231.1.2", "10.231.1.1", "10.231.2.1", "10.231.2.2"
PORT, CLOSED = 8080, 8081


def sh(*argv: str, input: str | None = None) -> str:
    p = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30)
    if p.returncode:
        raise AssertionError(f"{' '.join(argv)}: {p.stderr}")
    return p.stdout


def _children() -> list[int]:
    """Live or zombie children of this process (its threads' children included)."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def _own_instances() -> list[str]:
    return [n for n in list_instances() if n.startswith(f"netdiag-{os.getpid()}-")]


@pytest.fixture
def clean():
    fds = open_fds()
    yield
    assert _children() == [], "a probe child lingers"
    assert _own_instances() == [], "a tracefs instance was left behind"
    assert fds_left(fds) == {}, "an fd (capture socket, pipe) was left open"


class Net:
    """Namespaces a, r, b: a-r <-> r-a (10.231.1.0/24), r-b <-> b-r (10.231.2.0/24); r forwards."""

    def __init__(self):
        tag = secrets.token_hex(2)
        self.names = {k: f"ndlive-{tag}-{k}" for k in "arb"}
        self.path = {k: f"/run/netns/{v}" for k, v in self.names.items()}
        self.listeners: list[socket.socket] = []

    def ip(self, ns: str, *args: str) -> str:
        return sh("ip", "-n", self.names[ns], *args)

    def create(self) -> "Net":
        for n in self.names.values():
            sh("ip", "netns", "add", n)
        for ns in "arb":
            self.ip(ns, "link", "set", "lo", "up")
        self.ip("a", "link", "add", "a-r", "type", "veth", "peer", "name", "r-a", "netns", self.names["r"])
        self.ip("r", "link", "add", "r-b", "type", "veth", "peer", "name", "b-r", "netns", self.names["b"])
        for ns, dev, addr in (("a", "a-r", A_IP), ("r", "r-a", RA_IP), ("r", "r-b", RB_IP), ("b", "b-r", B_IP)):
            self.ip(ns, "addr", "add", f"{addr}/24", "dev", dev)
            self.ip(ns, "link", "set", dev, "up")
        self.ip("a", "route", "add", "default", "via", RA_IP)
        self.ip("b", "route", "add", "default", "via", RB_IP)
        sh("ip", "netns", "exec", self.names["r"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return self

    def listen(self, ns: str, addr: str, port: int, kind=socket.SOCK_STREAM) -> socket.socket:
        with inside(self.path[ns]):
            s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(16)  # the kernel completes handshakes without accept()
        self.listeners.append(s)
        return s

    def hops(self) -> list[Hop]:
        return [Hop(self.path["a"], "a-r", "a a-r"), Hop(self.path["r"], "r-a", "r r-a"),
                Hop(self.path["r"], "r-b", "r r-b"), Hop(self.path["b"], "b-r", "b b-r")]

    def destroy(self) -> None:
        for s in self.listeners:
            s.close()
        for n in self.names.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.fixture
def net(clean):
    n = Net()
    try:
        n.create()
        n.listen("b", B_IP, PORT)
        yield n
    finally:
        n.destroy()
    assert not any(os.path.exists(p) for p in n.path.values())


def drop_all_forwarding(net: Net) -> None:
    sh("ip", "netns", "exec", net.names["r"], "nft", "-f", "-",
       input="table inet t { chain f { type filter hook forward priority 0; policy drop; }; }")


def counts(res) -> list:
    return [h["count"] for h in res.seen]


def test_tcp_connected_is_seen_on_every_hop(net):
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=2)
    assert res.outcome == "connected", res
    assert all(c and c >= 1 for c in counts(res)), res.seen
    assert all(h["replies"] >= 1 for h in res.seen), res.seen  # the SYN-ACK came back the same way
    first = res.seen[0]["first"]
    assert (first["src"], first["dst"], first["sport"], first["dport"]) == (A_IP, B_IP, res.sport, PORT)
    assert first["dir"] == "out" and res.seen[1]["first"]["dir"] == "in"
    assert res.seen[0]["first"]["vxlan_vni"] is None
    assert res.elapsed < 1.5, res.elapsed
    assert res.drops_scope == "all packets on the host during the probe window"


def test_tcp_refused_by_rst(net):
    res = probe(net.path["a"], B_IP, proto="tcp", dport=CLOSED, hops=net.hops(), timeout=2)
    assert res.outcome == "refused", res
    assert all(c >= 1 for c in counts(res)) and res.seen[0]["replies"] >= 1, res.seen


def test_forward_drop_times_out_and_shows_where(net):
    sh("ip", "netns", "exec", net.names["r"], "nft", "-f", "-", input=textwrap.dedent(f"""
        table inet probe_test {{
            chain filter_fwd {{
                type filter hook forward priority 0; policy accept;
                ip daddr {B_IP} tcp dport {PORT} drop
            }}
        }}"""))
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=1.5)
    assert res.outcome == "timeout", res
    a_r, r_a, r_b, b_r = counts(res)
    assert a_r >= 1 and r_a >= 1 and r_b == 0 and b_r == 0, res.seen
    assert any(d["reason"] == "NETFILTER_DROP" for d in res.drops), res.drops
    assert 1.5 <= res.elapsed < 2.1, res.elapsed


def test_icmp_echo_replied(net):
    res = probe(net.path["a"], B_IP, proto="icmp", hops=net.hops(), timeout=2)
    assert res.outcome == "replied", res
    assert all(c >= 1 for c in counts(res)) and all(h["replies"] >= 1 for h in res.seen), res.seen
    assert res.seen[3]["first"]["len"] == 84  # 20 IP + 8 ICMP + 56 payload


def test_icmp_too_big_with_df(net):
    net.ip("r", "link", "set", "r-b", "mtu", "1000")
    res = probe(net.path["a"], B_IP, proto="icmp", size=1400, hops=net.hops(), timeout=2)
    assert res.outcome in ("too_big", "unreachable"), res
    a_r, r_a, r_b, b_r = counts(res)
    assert a_r >= 1 and r_a >= 1 and r_b == 0 and b_r == 0, res.seen
    assert res.seen[0]["first"]["len"] == 1428
    assert "fragmentation needed" in (res.seen[0]["first_reply"] or {}).get("icmp", ""), res.seen[0]
    # the sender now knows the path MTU: a second probe fails locally
    again = probe(net.path["a"], B_IP, proto="icmp", size=1400, hops=net.hops()[:1], timeout=1, trace_drops=False)
    assert again.outcome == "too_big" and "EMSGSIZE" in again.detail and again.seen[0]["count"] == 0, again


def test_udp_refused_by_port_unreachable(net):
    res = probe(net.path["a"], B_IP, proto="udp", dport=CLOSED, hops=net.hops(), timeout=2, trace_drops=False)
    assert res.outcome == "refused", res
    assert all(c >= 1 for c in counts(res)), res.seen
    assert res.seen[0]["first_reply"]["icmp"] == "ICMP port unreachable"
    assert res.drops == []


def test_udp_replied(net):
    server = net.listen("b", B_IP, 5353, socket.SOCK_DGRAM)

    def echo():
        data, peer = server.recvfrom(2048)
        server.sendto(data, peer)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    res = probe(net.path["a"], B_IP, proto="udp", dport=5353, size=100, hops=net.hops(), timeout=2, trace_drops=False)
    t.join(2)
    assert res.outcome == "replied", res
    assert res.seen[3]["first"]["len"] == 128 and res.seen[0]["replies"] == 1


def test_bad_hop_is_reported_not_fatal(net):
    hops = net.hops()[:1] + [Hop(net.path["r"], "nosuchif"), Hop("/run/netns/ndlive-missing", "eth0")]
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=hops, timeout=2, trace_drops=False)
    assert res.outcome == "connected"
    assert res.seen[0]["count"] >= 1
    assert res.seen[1]["count"] is None and "nosuchif" in res.seen[1]["error"]
    assert res.seen[2]["count"] is None and res.seen[2]["error"]
    assert any("nosuchif" in n for n in res.notes) and any("ndlive-missing" in n for n in res.notes), res.notes


def test_unreachable_destination(net):
    # r has no route for 10.231.3.0/24: it answers ICMP net unreachable
    net.ip("a", "route", "add", "10.231.3.0/24", "via", RA_IP)
    res = probe(net.path["a"], "10.231.3.9", proto="tcp", dport=PORT, hops=net.hops()[:2], timeout=2)
    assert res.outcome == "unreachable", res
    assert res.seen[1]["count"] >= 1 and res.seen[0]["replies"] >= 1


@pytest.mark.parametrize("delay", [0.01, 0.05, 0.4])
def test_keyboard_interrupt_leaves_nothing(net, delay):
    drop_all_forwarding(net)
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as interrupted:
        probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=3)
        time.sleep(5)  # the interrupt came after the probe: still raise here
    timer.join()
    assert time.monotonic() - t0 < 4
    # An interrupt that lands between opening a socket and handing it to its owner leaves the socket
    # to the traceback's frames, which the caller drops: only what outlives them is a leak
    del interrupted
    gc.collect()


def test_interrupts_swept_over_the_start_leave_nothing(net):
    """A Ctrl-C every other millisecond of the probe's first 60 ms: it also lands right after an open()
    returns, before the descriptor is stored (where a bare os.open() int leaked one, 1 run in 100).
    The fixture then finds no fd, child or instance left."""
    drop_all_forwarding(net)
    for ms in range(0, 60, 2):
        timer = threading.Timer(ms / 1000, os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=3)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        timer.join()
        gc.collect()


def test_sigterm_to_the_caller_leaves_nothing(net):
    """The process running probe() dies by SIGTERM (no finally runs): the children clean up alone.
    A subreaper in between collects the orphans, so that we can see them end."""
    script = textwrap.dedent(f"""
        import ctypes, os, signal, sys, time
        ctypes.CDLL("libc.so.6").prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        pid = os.fork()
        if pid == 0:
            from netdiag.probe.live import probe
            probe({net.path['a']!r}, {B_IP!r}, proto="tcp", dport={PORT}, timeout=5)
            os._exit(0)
        time.sleep(1.0)
        os.kill(pid, signal.SIGTERM)
        deadline, reaped = time.monotonic() + 8, 0
        while time.monotonic() < deadline:
            try:
                p, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            reaped += bool(p)
            time.sleep(0.02)
        else:
            print("descendants linger"); sys.exit(1)
        print(reaped, pid)
    """)
    drop_all_forwarding(net)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.returncode == 0, p.stdout + p.stderr
    reaped, caller = map(int, p.stdout.split())
    assert reaped == 3  # the caller, its probe child and its tracer
    assert [n for n in list_instances() if n.startswith(f"netdiag-{caller}-")] == [], "an orphaned instance remains"


@pytest.fixture
def vxlan(clean):
    tag = secrets.token_hex(2)
    names = [f"ndlive-{tag}-v1", f"ndlive-{tag}-v2"]
    listeners = []
    try:
        for n in names:
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "-n", names[0], "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", names[1])
        for i, n in enumerate(names, 1):
            dev, peer = f"u{i}", f"10.231.9.{3 - i}"
            sh("ip", "-n", n, "addr", "add", f"10.231.9.{i}/24", "dev", dev)
            sh("ip", "-n", n, "link", "set", dev, "up")
            sh("ip", "-n", n, "link", "add", "vx0", "type", "vxlan", "id", "42", "local", f"10.231.9.{i}",
               "remote", peer, "dstport", "4789", "dev", dev)
            sh("ip", "-n", n, "addr", "add", f"10.231.10.{i}/24", "dev", "vx0")
            sh("ip", "-n", n, "link", "set", "vx0", "up")
        with inside(f"/run/netns/{names[1]}"):
            s = socket.socket()
        listeners.append(s)
        s.bind(("10.231.10.2", PORT))
        s.listen(4)
        yield [f"/run/netns/{n}" for n in names]
    finally:
        for s in listeners:
            s.close()
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def test_vxlan_underlay_shows_the_vni(vxlan):
    v1, v2 = vxlan
    hops = [Hop(v1, "vx0"), Hop(v1, "u1"), Hop(v2, "u2"), Hop(v2, "vx0")]
    res = probe(v1, "10.231.10.2", proto="tcp", dport=PORT, hops=hops, timeout=2)
    assert res.outcome == "connected", res
    assert all(c >= 1 for c in counts(res)), res.seen
    under = res.seen[1]["first"]
    assert under["vxlan_vni"] == 42 and (under["outer_src"], under["outer_dst"]) == ("10.231.9.1", "10.231.9.2")
    assert (under["src"], under["dst"], under["sport"]) == ("10.231.10.1", "10.231.10.2", res.sport)
    assert res.seen[0]["first"]["vxlan_vni"] is None


def test_match_frame_ignores_other_traffic():
    eth = b"\0" * 12 + b"\x08\x00"
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]) + socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2")
    tcp = lambda s, d: s.to_bytes(2, "big") + d.to_bytes(2, "big") + b"\0" * 16  # noqa: E731
    assert match_frame(eth + ip + tcp(40000, 80), 40000, "tcp")[0] == "probe"
    assert match_frame(eth + ip + tcp(80, 40000), 40000, "tcp")[0] == "reply"
    assert match_frame(eth + ip + tcp(40001, 80), 40000, "tcp") is None
    assert match_frame(eth + ip + tcp(40000, 80), 40000, "udp") is None


def test_without_tracefs_the_probe_still_answers(net, monkeypatch):
    import netdiag.probe.tracers as tracers

    monkeypatch.setattr(tracers, "TRACEFS_DIRS", ("/nonexistent/tracing",))  # the forked tracer inherits it
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=2)
    assert res.outcome == "connected" and res.drops == []
    assert "not traced" in res.detail and any("drops: not traced" in n for n in res.notes), res


def test_trace_parsing_and_filter():
    from netdiag.probe.tracers import drop_filter, parse_trace

    line = ("          <idle>-0       [001] ..s1.   123.456789: kfree_skb: skbaddr=000000001234abcd "
            "rx_sk=0000000000000000 protocol=2048 location=nft_do_chain+0x3e8/0x610 reason: NETFILTER_DROP")
    drops, lost = parse_trace("# tracer: nop\n" + line + "\n" + line + "\nCPU:0 [LOST 3 EVENTS]\n")
    assert drops == [{"reason": "NETFILTER_DROP", "location": "nft_do_chain+0x3e8/0x610", "protocol": 2048, "count": 2}]
    assert lost == 3
    fmt = ('\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n'
           'print fmt: "... reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" })')
    assert drop_filter(fmt) == "reason != 2"
    assert drop_filter("field:void * location;") is None


# -- robustness: probe() answers with evidence, never with an exception --------------------------------

def trace_tables(ns_name: str) -> list[str]:
    out = sh("ip", "netns", "exec", ns_name, "nft", "-j", "list", "tables")
    return [t["table"]["name"] for t in json.loads(out or '{"nftables": []}')["nftables"]
            if "table" in t and t["table"]["name"].startswith("netdiag_trace_")]


def test_frames_are_kept_with_kernel_timestamps(net):
    t0 = time.time()
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=2, trace_drops=False)
    assert res.outcome == "connected", res
    assert len(res.frames) == sum(h["count"] + h["replies"] for h in res.seen), (res.frames, res.seen)
    assert [f["ts"] for f in res.frames] == sorted(f["ts"] for f in res.frames)
    assert all(t0 - 1 < f["ts"] < time.time() + 1 for f in res.frames)
    first = res.frames[0]
    assert (first["hop"], first["dir"], first["kind"]) == (0, "out", "probe")
    syn = bytes.fromhex(first["data"])
    assert first["len"] == len(syn) == 74 and struct.unpack_from("!H", syn, 34)[0] == res.sport  # Ethernet + IP + TCP with options
    assert {f["hop"] for f in res.frames if f["kind"] == "reply"} == {0, 1, 2, 3}


def test_frames_are_bounded(net, monkeypatch):
    import netdiag.probe.live as live

    monkeypatch.setattr(live, "MAX_FRAMES", 4)
    monkeypatch.setattr(live, "MIN_HOP_FRAMES", 1)
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=2, trace_drops=False)
    assert res.outcome == "connected" and len(res.frames) == 4 and {f["hop"] for f in res.frames} == {0, 1, 2, 3}
    assert any("not kept" in n for n in res.notes), res.notes


def test_forward_drop_is_traced_to_the_rule_and_the_host_wide_drops_say_so(net):
    sh("ip", "netns", "exec", net.names["r"], "nft", "-f", "-", input=textwrap.dedent(f"""
        table inet probe_test {{
            chain filter_fwd {{
                type filter hook forward priority 0; policy accept;
                ip daddr {B_IP} tcp dport {PORT} counter drop
            }}
        }}"""))
    rules = json.loads(sh("ip", "netns", "exec", net.names["r"], "nft", "-a", "-j", "list", "chain", "inet", "probe_test", "filter_fwd"))
    handle, = [i["rule"]["handle"] for i in rules["nftables"] if "rule" in i]
    paths = list(net.path.values())
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=1.5, trace_ns=paths)
    assert res.outcome == "timeout", res
    assert res.nftrace_ns == paths and res.nftrace_error is None
    d = res.nftrace_drop
    assert (d["ns_path"], d["table"], d["chain"], d["handle"], d["iif"], d["oif"]) == \
           (net.path["r"], "probe_test", "filter_fwd", handle, "r-a", "r-b"), res.nftrace
    assert all(x["scope"] == "host" for x in res.drops) and res.drops_scope == "all packets on the host during the probe window"
    assert any(x["reason"] == "NETFILTER_DROP" and "probe_test filter_fwd" in x["probe_dropped_by"] for x in res.drops), res.drops
    assert all(trace_tables(n) == [] for n in net.names.values())


def test_probe_from_a_vanished_namespace_is_an_error_result(net):
    res = probe("/run/netns/ndlive-vanished", B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=1,
                trace_ns=[net.path["r"]])
    assert res.outcome == "error" and "No such file" in res.detail, res
    assert [h["count"] for h in res.seen] == [None] * 4 and res.nftrace == [] and res.nftrace_error
    assert trace_tables(net.names["r"]) == []


def test_tracing_that_cannot_be_set_up_is_a_note(net):
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, timeout=2, trace_drops=False,
                trace_ns=["/run/netns/ndlive-gone", "/proc/999999999/ns/net"])
    assert res.outcome == "connected", res
    assert res.nftrace == [] and res.nftrace_ns == [] and "no namespace could be traced" in res.nftrace_error
    assert sum("ndlive-gone" in n or "999999999" in n for n in res.notes) == 2, res.notes


def test_a_hung_probe_child_is_killed_and_reported(net, monkeypatch):
    import netdiag.probe.sender as sender

    monkeypatch.setattr(sender, "_run", lambda *a: time.sleep(60))  # the forked child inherits it
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops()[:1], timeout=0.5, trace_drops=False,
                trace_ns=[net.path["r"]])
    assert res.outcome == "error" and "hung" in res.detail, res
    assert res.elapsed < 2.5 and res.sport > 0 and res.nftrace_error is None
    assert trace_tables(net.names["r"]) == []


@pytest.mark.parametrize("where,expect", [("_prepare", "died from signal SIGKILL"), ("_run", "exited with status 7")])
def test_a_dying_probe_child_is_reported(net, monkeypatch, where, expect):
    import netdiag.probe.sender as sender

    die = (lambda *a: os.kill(os.getpid(), signal.SIGKILL)) if where == "_prepare" else (lambda *a: os._exit(7))
    monkeypatch.setattr(sender, where, die)
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=1, trace_ns=[net.path["r"]])
    assert res.outcome == "error" and expect in res.detail, res
    assert trace_tables(net.names["r"]) == []


def test_an_unforeseen_failure_is_an_error_result(net, monkeypatch):
    from netdiag.probe.capture import Capture

    def broken(self, *a, **kw):
        raise RuntimeError("capture buffer on fire")

    monkeypatch.setattr(Capture, "read", broken)
    res = probe(net.path["a"], B_IP, proto="tcp", dport=PORT, hops=net.hops(), timeout=1, trace_ns=list(net.path.values()))
    assert res.outcome == "error" and "RuntimeError: capture buffer on fire" in res.detail, res
    assert all(trace_tables(n) == [] for n in net.names.values())
