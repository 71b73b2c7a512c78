"""`netdiag watch` in one lab (shared by the module's tests: the suite's time budget): a client
container on a network with a subnet no other test uses, connecting to the outside namespace
through the lab host: to a server that answers (port 80), to a port nothing listens on (81,
refused), and to a port a rule in the lab host's forward hook drops (82, unanswered). watch must
see exactly the two failing flows, attribute them to the client and the outside namespace, name
each cause, print only what its schema documents, count them on its metrics endpoint (scraped
and parsed inside the lab), and leave nothing behind: no tracefs
instance, no child, also when it is stopped by SIGTERM."""
import json
import os
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

from netdiag.probe.live import list_instances
from netdiag.worlds.host import OUTSIDE_IP
from tests.labkit import World, fds_left, open_fds, wait_for
from tests.unit.test_schemas import schema

pytestmark = pytest.mark.integration
WATCH_SCHEMA = schema("watch")
SUBNET, OPEN, REFUSED, DROPPED, GIVEN_UP, TWIN, METRICS = "10.247.31.0/24", 80, 81, 82, 83, 84, 9464
CLIENT_DROPPED, HOST_DROPPED = 87, 89  # dropped in the client container's own namespace, in the lab host (drop_rules)


def failing_flows(w: World, tmp, subnet: str, network: str, table: str) -> None:
    """A container `client` on `network`, the outside serving OPEN and DROPPED (nobody on REFUSED),
    and a rule in the host's forward hook (nft table `table`) dropping DROPPED: from the client one
    flow works, one is refused, one is dropped."""
    w.ok("network", "create", "--subnet", subnet, network)
    w.ok("run", "-d", "--name", "client", "--network", network, "busybox", "sleep", "600")
    w.outside_server(tmp, port=OPEN)
    w.outside_server(tmp, port=DROPPED)  # served, so the printed fix (delete the rule) is the whole fix
    rules = (f"table inet {table} {{ chain forward_filter {{ type filter hook forward priority 0; policy accept; "
             f"ip daddr {OUTSIDE_IP} tcp dport {DROPPED} drop; }}; }}")
    p = w.run_in(None, ["nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("watch")
    w = World(state_dir=tmp / "ndroot")
    w.create()
    try:
        failing_flows(w, tmp, SUBNET, "wnet", "wtest")
        w.twin = make_twin(f"{w.name}-twin", w.inspect("client")["NetworkSettings"]["Networks"]["wnet"]["IPAddress"])
        yield w
    finally:
        subprocess.run(["ip", "netns", "del", f"{w.name}-twin"], capture_output=True)
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"
    assert not os.path.exists(f"/run/netns/{w.name}-twin")


def make_twin(name: str, ip: str) -> str:
    """A namespace with the client's own address (as another lab's container may have): its
    connects go nowhere (no one answers ARP) and are retransmitted like the client's."""
    def sh(*argv):
        subprocess.run(["ip", "-n", name, *argv], check=True, capture_output=True)

    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    sh("link", "add", "t0", "type", "veth", "peer", "name", "t1")
    sh("addr", "add", f"{ip}/24", "dev", "t0")
    for dev in ("t0", "t1"):
        sh("link", "set", dev, "up")
    sh("route", "add", "default", "dev", "t0")
    return f"/run/netns/{name}"


def twin_connect(lab, port: int):
    """A connect from the twin, left waiting (close it after)."""
    import socket

    from runtime.kernel.ns import netns

    with netns(lab.twin):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        s.connect((OUTSIDE_IP, port))
    except BlockingIOError:
        pass
    return s


def start_watch(lab, *args, env=None):
    return subprocess.Popen([sys.executable, "-m", "netdiag", "watch", "--json", *args], env={**lab.env, **(env or {})},
                            preexec_fn=lab.enter(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_start(proc) -> dict:
    first = json.loads(proc.stdout.readline() or "{}")
    assert first.get("type") == "start", (first, proc.stderr.read() if proc.poll() is not None else "")
    return first


def connect(lab, port: int, seconds: int = 3) -> subprocess.CompletedProcess:
    return lab.run("exec", "client", "timeout", str(seconds), "wget", "-q", "-O", "-", f"http://{OUTSIDE_IP}:{port}/", timeout=20)


def own_instances(pid: int) -> list[str]:
    return [n for n in list_instances() if n.startswith(f"netdiag-{pid}-")]


def scrape(lab) -> dict:
    """The metrics endpoint, scraped inside the lab (where watch bound it) and parsed."""
    from prometheus_client.parser import text_string_to_metric_families

    p = lab.run_in(None, ["timeout", "3", "busybox", "wget", "-q", "-O", "-", f"http://127.0.0.1:{METRICS}/metrics"],
                   capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(p.stdout) for s in fam.samples}


class Lines:
    """watch's JSON lines as they come (a thread reads them), for a test that acts on what it saw."""

    def __init__(self, proc):
        import threading

        self.seen: list[dict] = []
        self.thread = threading.Thread(target=lambda: self.seen.extend(json.loads(x) for x in proc.stdout), daemon=True)
        self.thread.start()

    def find(self, pred) -> dict | None:
        return next((x for x in list(self.seen) if pred(x)), None)


def stop_when(proc, lines: Lines, seen, timeout: float) -> str:
    """SIGTERM to watch once `seen()` holds (its lines read so far), then its end read: its stderr."""
    assert wait_for(seen, timeout=timeout), [x for x in lines.seen if x["type"] in ("flow", "scope")]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    lines.thread.join(5)
    return proc.stderr.read()


def apply_fix(lab, command: str) -> None:
    """Run the fix watch printed, as root on the lab host (as test_trace applies trace's)."""
    env = {**lab.env, "PATH": os.path.dirname(sys.executable) + os.pathsep + lab.env.get("PATH", "")}
    p = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=60, preexec_fn=lab.enter())
    assert p.returncode == 0, (command, p.stderr)


def test_watch_sees_attributes_and_diagnoses_only_the_failing_flows(lab):
    proc = start_watch(lab, "--container", "client", "--for", "12", "--metrics", f"127.0.0.1:{METRICS}")
    try:
        start = read_start(proc)
        lines = Lines(proc)
        assert own_instances(proc.pid) == [start["instance"]]
        twin = twin_connect(lab, TWIN)  # the client's address, another namespace: not the client's flow
        assert connect(lab, OPEN).returncode == 0
        assert connect(lab, REFUSED).returncode != 0
        assert connect(lab, DROPPED, seconds=4).returncode != 0  # the SYN's retransmits at 1 s and 3 s: grouped
        flow_of = {}
        assert wait_for(lambda: flow_of.update(lines.find(lambda x: x["type"] == "flow" and x["dst"]["port"] == DROPPED) or {})
                        or lines.find(lambda x: x["type"] == "diagnosis" and x["flow"] == flow_of.get("id")), timeout=10)
        firewall = ("netdiag_watch_diagnoses_total", (("cause", "FIREWALL_DROP"),))
        metrics = scrape(lab)
        diagnosis = lines.find(lambda x: x["type"] == "diagnosis" and x["flow"] == flow_of["id"])
        assert diagnosis["fix_command"], (diagnosis, [x for x in lines.seen if x["type"] in ("flow", "diagnosis")])
        apply_fix(lab, diagnosis["fix_command"])  # the printed fix, applied: the next connect completes and the flow is marked recovered
        assert connect(lab, DROPPED).returncode == 0
        twin.close()
        proc.wait(timeout=60)  # the reader thread has stdout; stderr is short
        lines.thread.join(5)
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    lines = [start] + lines.seen
    for obj in lines:
        jsonschema.validate(obj, WATCH_SCHEMA)
    flows = {f["dst"]["port"]: f for f in lines if f["type"] == "flow" and f["final"]}
    assert sorted(flows) == [REFUSED, DROPPED], flows  # the answered connect is no flow
    refused, dropped = flows[REFUSED], flows[DROPPED]
    assert (refused["kind"], dropped["kind"]) == ("reset", "unanswered")
    for f in (refused, dropped):
        assert f["src"]["label"] == "client" and f["src"]["ip"].startswith("10.247.31.")
        assert f["dst"]["ip"] == OUTSIDE_IP and f["dst"]["label"] == f"ns:{lab.outside}"
    assert dropped["count"] >= 2 and dropped["last_seen"] > dropped["first_seen"]  # SYN retransmits, grouped
    assert dropped["recovered"] > dropped["last_seen"] and refused["recovered"] is None
    causes = {d["flow"]: d for d in lines if d["type"] == "diagnosis"}
    assert causes[refused["id"]]["cause"] == "NO_LISTENER", causes
    blocked = causes[dropped["id"]]
    assert blocked["cause"] == "FIREWALL_DROP" and blocked["fix_checked"] is True, blocked
    assert blocked["hop"]["label"] == "host" and blocked["hop"]["direction"] == "forward", blocked
    assert "wtest" in blocked["fix_command"], blocked
    probe = blocked["probe_sport"]  # the diagnosis's own SYN is dropped too: never counted as the client's
    assert probe and not any(e["type"] == "event" and e["src"]["port"] == probe for e in lines), probe
    assert any(d["type"] == "drops" and d["reason"] == "NETFILTER_DROP" for d in lines)
    end = lines[-1]
    assert end["type"] == "end" and end["flows"] == 2 and not end["interrupted"] and end["elsewhere"] >= 1
    refused_key = ("netdiag_watch_failed_connects_total",
                   (("dst", f"ns:{lab.outside}"), ("kind", "reset"), ("port", str(REFUSED)), ("src", "client")))
    assert metrics[refused_key] == refused["count"], metrics
    assert metrics[firewall] == 1 and metrics[("netdiag_watch_diagnoses_total", (("cause", "NO_LISTENER"),))] == 1
    assert metrics[("netdiag_watch_drops_total", (("endpoint", "host"), ("reason", "NETFILTER_DROP")))] >= 1
    assert own_instances(proc.pid) == []


def test_a_connect_waiting_half_a_second_is_a_flow_dated_by_its_first_syn(lab):
    """The kernel retransmits a SYN only after 1 s (and a client whose connect timeout is shorter, a
    health checker's, never makes one). watch counts a connect still waiting after 0.5 s
    (events.PENDING) as unanswered, dated by its first SYN, with the waiting socket's port."""
    import socket

    from runtime.kernel.ns import netns

    rule = f"table inet wgiveup {{ chain f {{ type filter hook forward priority 0; ip daddr {OUTSIDE_IP} tcp dport {GIVEN_UP} drop; }}; }}"
    assert lab.run_in(None, ["nft", "-f", "-"], input=rule, text=True, timeout=30).returncode == 0
    proc = start_watch(lab, "--container", "client", "--no-diagnose")
    try:
        read_start(proc)
        lines = Lines(proc)
        with netns(f"/proc/{lab.inspect('client')['State']['Pid']}/ns/net"):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        started = time.time()
        try:
            s.connect((OUTSIDE_IP, GIVEN_UP))
        except BlockingIOError:
            pass
        sport = s.getsockname()[1]
        try:
            err = stop_when(proc, lines, lambda: lines.find(lambda x: x["type"] == "flow" and x["dst"]["port"] == GIVEN_UP), timeout=10)
        finally:
            s.close()
    finally:
        proc.kill()
        proc.wait()
        lab.run_in(None, ["nft", "delete", "table", "inet", "wgiveup"], timeout=30)
    assert proc.returncode == 0, err
    flow = lines.find(lambda x: x["type"] == "flow" and x["final"] and x["dst"]["port"] == GIVEN_UP)
    assert (flow["kind"], flow["src"]["label"]) == ("unanswered", "client"), flow
    assert flow["first_seen"] - started < 0.5, (flow, started)  # the first SYN's time, not a retransmit's
    first = lines.find(lambda x: x["type"] == "event" and x["flow"] == flow["id"])
    assert first["kind"] == "unanswered" and first["src"]["port"] == sport, first
    for obj in lines.seen:
        jsonschema.validate(obj, WATCH_SCHEMA)


def test_sigterm_ends_watch_and_leaves_nothing(lab):
    proc = start_watch(lab, "--network", "wnet", "--ns", lab.outside, "--no-diagnose")
    try:
        start = read_start(proc)
        assert start["watching"] == ["client", f"ns:{lab.outside}"]
        assert connect(lab, REFUSED).returncode != 0
        lines = Lines(proc)  # both sides' flows seen (however loaded the machine), then SIGTERM
        err = stop_when(proc, lines, lambda: len([x for x in lines.seen if x["type"] == "flow"]) >= 2, timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    lines = lines.seen
    # the client's connect refused, and the outside refusing it (a RST sent, to the lab host's NAT address)
    assert sorted((f["kind"], f["dst"]["port"]) for f in lines if f["type"] == "flow" and f["final"]) == \
        [("reset", REFUSED), ("reset_sent", REFUSED)]
    assert not any(x["type"] == "diagnosis" for x in lines)
    assert lines[-1]["type"] == "end" and lines[-1]["interrupted"] is True
    assert own_instances(proc.pid) == []
    assert not os.path.exists(f"/proc/{proc.pid}")


def _children() -> list[int]:
    out = []
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def test_ctrl_c_while_reading_leaves_no_instance_child_or_fd():
    """In-process, as test_live_probe checks a probe: ^C lands while the loop waits for events."""
    import gc
    import threading

    from netdiag.watch.events import EventSource

    fds = open_fds()  # as test_live_probe's `clean` fixture checks a probe
    children = set(_children())  # the module's lab has its servers
    source = EventSource()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        try:
            source.start()
            assert own_instances(os.getpid()) == [source.name]
            timer.start()
            while True:
                source.lines(time.monotonic() + 0.25)
        finally:
            source.close()
    timer.join()
    gc.collect()
    assert set(_children()) - children == set() and own_instances(os.getpid()) == []
    assert fds_left(fds) == {}, "a pipe of the reader was left open"


def test_sigkill_of_watch_still_removes_its_instance(lab):
    """No finally runs in a killed watch: its reader, told by the kernel (PR_SET_PDEATHSIG), removes
    the instance itself."""
    proc = start_watch(lab, "--no-diagnose")
    try:
        read_start(proc)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    # removing an instance waits for the kernel's RCU grace periods, seconds on a loaded machine
    # (CI once took over 5 s); a reader that never removed it would leave it for good
    assert wait_for(lambda: own_instances(proc.pid) == [], timeout=20), own_instances(proc.pid)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for tid in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def bpf_objects(pids) -> set[tuple[str, int]]:
    """The eBPF programs, maps and links these processes hold, by id (their fds' fdinfo)."""
    found = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    info = f.read()
            except OSError:
                continue
            for line in info.splitlines():
                key, _, value = line.partition(":")
                if key in ("prog_id", "map_id", "link_id"):
                    found.add((key, int(value)))
    return found


def bpf_object_exists(kind: str, ident: int) -> bool:
    """Whether the kernel still has the program, map or link `ident` (BPF_*_GET_FD_BY_ID)."""
    import ctypes
    import errno

    from runtime.kernel import bpf

    class _ById(ctypes.Structure):
        _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]

    cmd = {"prog_id": 13, "map_id": 14, "link_id": 30}[kind]  # BPF_PROG/MAP/LINK_GET_FD_BY_ID
    try:
        os.close(bpf.syscall(cmd, _ById(ident)))
        return True
    except OSError as e:
        assert e.errno == errno.ENOENT, e
        return False


@pytest.fixture
def drop_rules(lab):
    """Two drops of the client's connects (the module's forward rule for DROPPED is fixed away by the
    first test): HOST_DROPPED in the lab host's forward hook, CLIENT_DROPPED in the client
    container's own namespace (its output hook)."""
    net = f"--net=/proc/{lab.inspect('client')['State']['Pid']}/ns/net"
    rule = f"table inet wclient {{ chain out {{ type filter hook output priority 0; tcp dport {CLIENT_DROPPED} drop; }}; }}"
    p = subprocess.run(["nsenter", net, "nft", "-f", "-"], input=rule, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    rule = f"table inet wdrops {{ chain f {{ type filter hook forward priority 0; ip daddr {OUTSIDE_IP} tcp dport {HOST_DROPPED} drop; }}; }}"
    try:
        p = lab.run_in(None, ["nft", "-f", "-"], input=rule, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        yield
    finally:
        lab.run_in(None, ["nft", "delete", "table", "inet", "wdrops"], capture_output=True, timeout=30)
        subprocess.run(["nsenter", net, "nft", "delete", "table", "inet", "wclient"], capture_output=True, timeout=30)


def test_drops_are_placed_where_they_happen_and_the_counter_goes_with_a_killed_watch(lab, drop_rules):
    """The in-kernel drop counter (runtime.kernel.dropwatch): the lab host's forward-hook drop is
    the host's, on the network's bridge; the client's own output-hook drop is the client's (no
    device yet: its socket's namespace). A SIGKILLed watch leaves no program, map or link."""
    proc = start_watch(lab, "--container", "client", "--no-diagnose")
    try:
        start = read_start(proc)
        lines = Lines(proc)
        held = bpf_objects([proc.pid, *_descendants(proc.pid)])
        assert {k for k, _ in held} >= {"prog_id", "map_id"}, (held, start["notes"])
        assert connect(lab, HOST_DROPPED, seconds=1).returncode != 0
        assert connect(lab, CLIENT_DROPPED, seconds=1).returncode != 0
        placed = lambda who: lines.find(lambda x: x["type"] == "drops" and x.get("endpoint") == who)  # noqa: E731
        assert wait_for(lambda: placed("host") and placed("client"), timeout=10), lines.seen
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    assert wait_for(lambda: not any(bpf_object_exists(k, i) for k, i in held), timeout=10), held
    assert wait_for(lambda: own_instances(proc.pid) == [], timeout=5), own_instances(proc.pid)
    for obj in lines.seen:
        jsonschema.validate(obj, WATCH_SCHEMA)
    host, client = placed("host"), placed("client")
    assert host["reason"] == client["reason"] == "NETFILTER_DROP" and "scope" not in host, (host, client)
    assert host["device_of"] == "wnet" and host["device"], host
    assert client.get("device") is None and client["location"].startswith("nft_do_chain"), client
    assert not any(x["type"] == "drops" and x.get("endpoint") not in ("host", "client") for x in lines.seen), lines.seen


def test_without_the_counter_drops_are_host_wide_with_a_note(lab, drop_rules):
    """The fallback (no BTF, bpf() refused; forced here): tracefs's kfree_skb, host-wide counts."""
    proc = start_watch(lab, "--container", "client", "--no-diagnose", "--for", "3", env={"NETDIAG_WATCH_DROPS": "tracefs"})
    try:
        start = read_start(proc)
        lines = Lines(proc)
        counters = bpf_objects([proc.pid, *_descendants(proc.pid)])
        assert connect(lab, HOST_DROPPED, seconds=1).returncode != 0
        proc.wait(timeout=30)
        lines.thread.join(5)
    finally:
        proc.kill()
        proc.wait()
    assert any("drops are host-wide counts" in n for n in start["notes"]), start
    drops = [x for x in lines.seen if x["type"] == "drops"]
    assert drops and all(d["scope"] == "host" and "endpoint" not in d for d in drops), drops
    assert counters == set()


def test_bad_input_exits_2_before_anything_starts(lab):
    for args, said in ((["--for", "soon"], "Invalid --for duration"), (["--reason", "BOGUS"], "no drop reason BOGUS"),
                       (["--container", "nosuch"], "No such target: nosuch"), (["--metrics", "9464"], "Invalid --metrics address"), (["--network", "nonet"], "on network 'nonet'")):
        p = lab.run("watch", *args, timeout=30)
        assert p.returncode == 2 and said in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


# -- part 2: UDP without a reply, ICMP errors, SYN-ACKs, sent resets, stalls, late containers -------
UDP_CLOSED, STALL, SYNACK_DROPPED, NARROW_MTU = 85, 86, 88, 1400
NOBODY = "203.0.113.77"  # on the lab host's outside link, where nobody answers ARP for it


@pytest.fixture(scope="module")
def more(lab):
    """Listeners the kernel answers for (no server program): 86 takes the stalled upload, 88 the
    connect whose SYN-ACKs the lab host drops on their way back."""
    import socket

    from runtime.kernel.ns import netns

    listeners = []
    with netns(lab.namespace(lab.outside)):
        for port in (STALL, SYNACK_DROPPED):
            s = socket.socket()
            s.bind((OUTSIDE_IP, port))
            s.listen(16)
            listeners.append(s)
    rule = (f"add rule inet wtest forward_filter ip saddr {OUTSIDE_IP} tcp sport {SYNACK_DROPPED} "
            "tcp flags & (syn | ack) == syn | ack drop\n")
    p = lab.run_in(None, ["nft", "-f", "-"], input=rule, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    try:
        yield lab
    finally:
        for s in listeners:
            s.close()


def client_socket(lab, kind=None):
    """A non-blocking socket made in the client container's namespace (the test speaks for it)."""
    import socket

    from runtime.kernel.ns import netns

    with netns(f"/proc/{lab.inspect('client')['State']['Pid']}/ns/net"):
        return socket.socket(socket.AF_INET, (kind or socket.SOCK_STREAM) | socket.SOCK_NONBLOCK)


def _nowait(s, addr) -> None:
    try:
        s.connect(addr)
    except BlockingIOError:
        pass


def narrow_mtu(lab, on: bool) -> None:
    """An MTU black hole on the lab host's way out: eth0 at 1400 and its ICMP 'fragmentation needed'
    dropped where it is sent (output), so the client never learns."""
    lab.in_lab("ip", "link", "set", "eth0", "mtu", str(NARROW_MTU if on else 1500))
    rules = ("table inet wmtu { chain out { type filter hook output priority 0; "
             "icmp type destination-unreachable icmp code frag-needed drop; }; }" if on else "delete table inet wmtu")
    p = lab.run_in(None, ["nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 or not on, p.stderr


def final_flows(lines) -> dict:
    return {(f["kind"], f["proto"], f["src"]["label"], f["dst"]["port"]): f for f in lines if f["type"] == "flow" and f["final"]}


def test_udp_without_a_reply_and_an_mtu_black_hole_are_flows_diagnosed(more):
    lab = more
    import socket

    udp, stall = client_socket(lab, socket.SOCK_DGRAM), client_socket(lab)
    proc = start_watch(lab, "--container", "client")
    narrow_mtu(lab, True)
    try:
        read_start(proc)
        lines = Lines(proc)
        udp.sendto(b"query", (OUTSIDE_IP, UDP_CLOSED))  # nobody listens: no answer
        _nowait(stall, (OUTSIDE_IP, STALL))
        assert wait_for(lambda: stall.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and stall.send(b"x" * 20000),
                        timeout=3)  # connected (small packets pass), then full-size segments die at the MTU step
        # ended as soon as both are diagnosed: the test takes no longer than watch needs
        err = stop_when(proc, lines, lambda: len([x for x in lines.seen if x["type"] == "diagnosis"]) >= 2, timeout=20)
    finally:
        proc.kill()
        proc.wait()
        for s in (udp, stall):
            s.close()
        narrow_mtu(lab, False)
    assert proc.returncode == 0, err
    for obj in lines.seen:
        jsonschema.validate(obj, WATCH_SCHEMA)
    flows = final_flows(lines.seen)
    client = {k: f for k, f in flows.items() if k[2] == "client"}
    # the lab host's ICMP "fragmentation needed" is sent (and then dropped): seen, not diagnosed
    assert set(client) == {("unreplied", "udp", "client", UDP_CLOSED), ("stalled", "tcp", "client", STALL),
                           ("frag_needed", "ip", "client", 0)}, sorted(flows)
    assert all(f["dst"]["label"] == f"ns:{lab.outside}" for f in client.values())
    causes = {d["flow"]: d for d in lines.seen if d["type"] == "diagnosis"}
    udp_flow, stalled = client[("unreplied", "udp", "client", UDP_CLOSED)], client[("stalled", "tcp", "client", STALL)]
    assert causes[udp_flow["id"]]["cause"] == "NO_LISTENER", causes[udp_flow["id"]]
    assert causes[stalled["id"]]["cause"] == "MTU_BLACKHOLE", causes[stalled["id"]]
    assert stalled["count"] >= 2 and client[("frag_needed", "ip", "client", 0)]["id"] not in causes


def test_the_servers_side_and_a_container_started_later(more):
    lab = more
    proc = start_watch(lab, "--network", "wnet", "--ns", lab.outside, "--no-diagnose")
    try:
        read_start(proc)
        lines = Lines(proc)
        synack = client_socket(lab)
        _nowait(synack, (OUTSIDE_IP, SYNACK_DROPPED))
        assert connect(lab, REFUSED).returncode != 0
        assert lab.run("exec", "client", "ping", "-c", "1", "-W", "1", NOBODY, timeout=20).returncode != 0
        # a client that retries: its first refusal may come before the host lists it (then the flow
        # is named by its address until a later event's rescan finds it)
        lab.ok("run", "-d", "--name", "late", "--network", "wnet", "busybox", "sh", "-c",
               f"for i in 1 2 3 4 5 6; do timeout 1 wget -q -O - http://{OUTSIDE_IP}:{REFUSED}/; sleep 1; done; sleep 600")
        err = stop_when(proc, lines, lambda: lines.find(lambda x: x["type"] == "scope" and "late" in x["added"])
                        and lines.find(lambda x: x["type"] == "flow" and x["kind"] == "synack_unanswered")
                        and lines.find(lambda x: x["type"] == "flow" and x["proto"] == "icmp"), timeout=15)
        synack.close()
    finally:
        proc.kill()
        proc.wait()
        lab.run("rm", "-f", "late", timeout=30)
    assert proc.returncode == 0, err
    for obj in lines.seen:
        jsonschema.validate(obj, WATCH_SCHEMA)
    flows = final_flows(lines.seen)
    # the outside answers for NATed connects: the lab host's address is who connected, as it sees it
    assert {("synack_unanswered", "tcp", "host", SYNACK_DROPPED), ("reset_sent", "tcp", "host", REFUSED),
            ("reset", "tcp", "client", REFUSED), ("reset", "tcp", "late", REFUSED),
            ("unreplied", "icmp", "client", 0)} <= set(flows), sorted(flows)
    ping = flows[("unreplied", "icmp", "client", 0)]  # conntrack's echo without a reply, to an address nobody has
    assert ping["dst"]["ip"] == NOBODY and ping["dst"]["label"] == NOBODY
    scope = [x for x in lines.seen if x["type"] == "scope"]
    assert scope and scope[0]["added"] == ["late"] and "late" in scope[0]["watching"], scope
