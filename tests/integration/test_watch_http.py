"""`netdiag watch` diagnoses a flow that fails past the handshake with health's pipeline, in a lab
of its own: a plain namespace `cl` behind the lab host (routed, no NAT) downloads from a web server
in the outside namespace. The lab host's bridge towards cl has an MTU of 1400 (cl's own link
carries 1500, so TCP agrees on full-size segments) and a rule drops the ICMP 'fragmentation
needed' it sends: the request and the answer's headers get through, its full-size segments die,
and the server retransmits them (a stalled flow). A connect works (reach's probe is delivered);
an HTTP request from cl shows the answer dying on the way back (MTU_BLACKHOLE, by health), and
the fix watch prints, applied, makes the download work while a small answer (the control) works
throughout."""
import os
import signal
import subprocess
import time

import jsonschema
import pytest

from netdiag.probe.live import list_instances
from netdiag.worlds.host import HOST_IP, OUTSIDE_IP
from tests.integration.test_watch import WATCH_SCHEMA, Lines, apply_fix, final_flows, read_start, start_watch
from tests.labkit import World, wait_for

pytestmark = pytest.mark.integration
SUBNET, GATEWAY, CLIENT, PORT = "10.247.37.0/24", "10.247.37.1", "10.247.37.2", 87
# more than the server's socket buffer takes: its write blocks, so its connection stays established
# (the state whose retransmits watch reads) while the segments die
BIG = 1 << 20
BRIDGE, NARROW = "narrow0", 1400


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("watchhttp")
    w = World(state_dir=tmp / "ndroot")
    w.create()
    w.cl = f"{w.name}-cl"
    try:
        subprocess.run(["ip", "netns", "add", w.cl], check=True, capture_output=True)
        for argv in (["sysctl", "-w", "net.ipv4.ip_forward=1"],  # a fresh lab does not route
                     ["ip", "link", "add", BRIDGE, "type", "bridge"],
                     ["ip", "link", "add", "nv0", "type", "veth", "peer", "name", "eth0", "netns", w.cl],
                     ["ip", "link", "set", "nv0", "master", BRIDGE], ["ip", "link", "set", "nv0", "up"],
                     ["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE], ["ip", "link", "set", BRIDGE, "up"],
                     ["ip", "link", "set", BRIDGE, "mtu", str(NARROW)]):
            p = w.in_lab(*argv)
            assert p.returncode == 0, (argv, p.stderr)
        for argv in (["addr", "add", f"{CLIENT}/24", "dev", "eth0"], ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"],
                     ["route", "add", "default", "via", GATEWAY]):
            subprocess.run(["ip", "-n", w.cl, *argv], check=True, capture_output=True)
        p = w.run_in("outside", ["ip", "route", "add", SUBNET, "via", HOST_IP], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, p.stderr
        # before any large answer: a 'fragmentation needed' that got through would teach the server
        # the path MTU for ten minutes
        rule = ("table inet wpmtu { chain out { type filter hook output priority 0; "
                "icmp type destination-unreachable icmp code frag-needed drop; }; }")
        p = w.run_in(None, ["nft", "-f", "-"], input=rule, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        serve(w, tmp)
        yield w
    finally:
        subprocess.run(["ip", "netns", "del", w.cl], capture_output=True)
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"
    assert not os.path.exists(f"/run/netns/{w.cl}")


def serve(lab, tmp) -> None:
    """busybox httpd in the outside namespace: a large index and a small file. On [::], as it binds
    by default: its sockets are IPv6 ones with v4-mapped peers, whose retransmits watch reads too."""
    www = tmp / "www"
    www.mkdir()
    (www / "index.html").write_text("x" * BIG)
    (www / "small.txt").write_text("small\n")
    lab.serve_in(lab.outside, ["busybox", "httpd", "-f", "-p", str(PORT), "-h", str(www)],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def get(lab, path: str, seconds: int = 3, wait: bool = True):
    """busybox wget from cl (its namespace entered by nsenter, as an admin would)."""
    argv = ["nsenter", f"--net=/run/netns/{lab.cl}", "timeout", str(seconds), "busybox", "wget", "-q", "-O", "-",
            f"http://{OUTSIDE_IP}:{PORT}{path}"]
    if not wait:  # a session of its own: killed whole (timeout's wget, stuck behind the black hole, outlived it)
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 10)


def watch_a_download(lab, *args, stop_when=None) -> tuple[list[dict], float | None]:
    """`watch --json --ns cl ARGS` while cl downloads the large answer (which dies on the way back);
    with `stop_when(watch's pid)`, SIGTERM once it holds. Every line it printed (each checked
    against the schema), and the seconds from the SIGTERM to its end."""
    proc = start_watch(lab, "--ns", lab.cl, *args)
    client = took = None
    try:
        start = read_start(proc)
        lines = Lines(proc)
        client = get(lab, "/", seconds=10, wait=False)  # the headers arrive, the body's full-size segments die
        if stop_when is not None:
            assert wait_for(lambda: stop_when(proc.pid), timeout=15), lines.seen
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # --for's end (or SIGTERM's), then the diagnosis under way finishes
        took = time.monotonic() - signalled if stop_when is not None else None
        lines.thread.join(5)
        err = proc.stderr.read()
    finally:
        if client is not None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    seen = [start] + lines.seen
    for obj in seen:
        jsonschema.validate(obj, WATCH_SCHEMA)
    return seen, took


def test_a_large_answer_dying_on_the_way_back_is_diagnosed_by_health(lab):
    assert get(lab, "/small.txt").stdout == "small\n"  # the control: a small answer fits
    seen, _ = watch_a_download(lab, "--for", "6")
    flows = final_flows(seen)
    stalled = flows.get(("stalled", "tcp", f"ns:{lab.cl}", PORT))
    assert stalled, "\n".join(map(str, seen))
    assert stalled["src"]["ip"] == CLIENT and stalled["dst"]["ip"] == OUTSIDE_IP, stalled
    # the HTTP request's connect completed: not a recovery of the flow
    assert not any(x["type"] == "flow" and x["id"] == stalled["id"] and x["recovered"] for x in seen), stalled
    d = next(x for x in seen if x["type"] == "diagnosis" and x["flow"] == stalled["id"])
    assert (d["by"], d["cause"], d["verdict"]) == ("health", "MTU_BLACKHOLE", "blocked"), d
    assert (d["hop"]["label"], d["hop"]["interface"]) == ("host", BRIDGE), d
    assert d["fix_command"] == f"ip link set dev {BRIDGE} mtu 1500" and d["fix_checked"] is True, d
    # the HTTP request's connection stalls the same way: named, and none of its events counted
    ports = d["probe_sports"]
    assert len(ports) == 2 and d["probe_sport"] == ports[0], d
    assert not any(x["type"] == "event" and x["src"]["port"] in ports for x in seen), ports
    assert seen[-1]["type"] == "end" and seen[-1]["diagnoses"].get("MTU_BLACKHOLE") == 1
    apply_fix(lab, d["fix_command"])  # the printed fix, applied: the large answer arrives, the small one still does
    assert len(get(lab, "/").stdout) == BIG
    assert get(lab, "/small.txt").stdout == "small\n"


def requesting(lab, pid: int) -> bool:
    """watch's own HTTP request is under way: a connection to the server in cl whose socket is
    watch's (reach's probe is a forked child's)."""
    p = subprocess.run(["nsenter", f"--net=/run/netns/{lab.cl}", "ss", "-tnpH", "dst", f"{OUTSIDE_IP}:{PORT}"],
                       capture_output=True, text=True, timeout=10)
    return f"pid={pid}," in p.stdout


def test_sigterm_during_the_http_request_lets_it_finish_and_ends_clean(lab):
    """SIGTERM (Ctrl-C likewise) while health's request is under way: the diagnosis finishes within
    the diagnoser's grace and is shown, watch ends at once after, leaving no tracefs instance."""
    lab.in_lab("ip", "link", "set", BRIDGE, "mtu", str(NARROW))  # the black hole again (the first test fixed it)
    seen, took = watch_a_download(lab, stop_when=lambda pid: requesting(lab, pid))
    d = next(x for x in seen if x["type"] == "diagnosis")
    assert (d["by"], d["cause"]) == ("health", "MTU_BLACKHOLE"), d
    assert took < 10, took  # the diagnoser's grace (Diagnoser.stop), and the request's own bounds well within it
    assert seen[-1]["type"] == "end" and seen[-1]["interrupted"] is True
    assert seen[0]["instance"] not in list_instances()
