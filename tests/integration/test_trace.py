"""`netdiag trace` in a lab: every path kind delivered, every planted fault diagnosed with the right
cause at the right hop, and the suggested fix, once applied, makes the trace pass."""
import json

import jsonschema
import pytest

from netdiag.probe import nftrace
from runtime.kernel.syscalls import proc_start_time
from tests.unit.test_schemas import schema

pytestmark = pytest.mark.integration
TRACE_SCHEMA = schema("trace")


def trace(lab, src, dst, *args):
    p = lab.run("trace", src, dst, "--json", *args, timeout=60)
    assert p.returncode in (0, 1, 3), p.stderr
    r = json.loads(p.stdout)
    jsonschema.validate(r, TRACE_SCHEMA)  # every live answer is what the schema documents
    assert p.returncode == {"delivered": 0, "blocked": 1, "unknown": 3}[r["verdict"]]
    return r


def eventually_delivered(lab, src, dst, *args, tries=6):
    """After a fix, the kernel may refuse for a moment (a FAILED ARP entry is retried after a
    second or two): what a user sees when they retry. The trace must come out delivered."""
    import time

    for _ in range(tries):
        r = trace(lab, src, dst, *args)
        if r["verdict"] == "delivered":
            return True
        assert r["cause"] == "NO_NEIGHBOR", r["summary"]
        time.sleep(1)
    return False


def dead_hop(r):
    return r["hops"][r["blocked_at"] - 1]


def apply_fix(lab, r, checked=True):
    """Run exactly the fix the trace printed (as root in the lab host, where netdiag runs), after
    asserting netdiag checked it on a copy of the model and found that it delivers."""
    import os
    import subprocess
    import sys

    assert r["fix_command"], r["fix"]
    if checked:
        assert r["fix_check"]["checked"] and r["fix_check"]["delivers"], r["fix_check"]
    env = {**lab.env, "PATH": os.path.dirname(sys.executable) + os.pathsep + lab.env.get("PATH", "")}
    p = subprocess.run(["sh", "-c", r["fix_command"]], capture_output=True, text=True, env=env, timeout=60,
                       preexec_fn=lab.enter())
    assert p.returncode == 0, (r["fix_command"], p.stdout, p.stderr)


def web(lab, name, *extra, port=80, network=None):
    net = ["--network", network] if network else []
    lab.ok("run", "-d", "--name", name, *net, *extra, "busybox", "httpd", "-f", "-p", str(port))


def sh(lab, name, script, *extra, network=None):
    net = ["--network", network] if network else []
    lab.ok("run", "-d", "--name", name, *net, *extra, "busybox", "sh", "-c", script)


def ip_of(lab, name, net="bridge"):
    return json.loads(lab.ok("inspect", name))[0]["NetworkSettings"]["Networks"][net]["IPAddress"]


@pytest.fixture
def two(lab):
    web(lab, "web", "-p", "8080:80")
    sh(lab, "client", "exec sleep 300", "--cap-add", "NET_ADMIN")  # some tests break its routes, as a Docker user would
    return lab


def test_paths_that_work_are_delivered(two, tmp_path):
    lab = two
    lab.outside_server(tmp_path)
    r = trace(lab, "client", "web", "--port", "80")
    assert r["verdict"] == "delivered" and r["live"]["outcome"] == "connected", r
    assert [h["interface"] for h in r["hops"]][:3] == ["eth0", r["hops"][1]["interface"], "docker0"]
    assert all(h["seen"] for h in r["hops"] if h["seen"] is not None)
    assert trace(lab, "client", "203.0.113.1", "--port", "80")["verdict"] == "delivered"          # to the outside
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")                          # to a published port
    assert r["verdict"] == "delivered" and any(e["kind"] == "dnat" for e in r["evidence"])
    assert trace(lab, "host", "web", "--port", "80")["verdict"] == "delivered"                     # host to container
    assert trace(lab, "web", "203.0.113.2", "--port", "8080")["verdict"] == "delivered"            # hairpin
    assert trace(lab, "client", "web", "--proto", "icmp")["verdict"] == "delivered"


def test_firewall_drop_names_the_rule_and_deleting_it_fixes_it(two):
    lab = two
    web_ip = ip_of(lab, "web")
    lab.in_lab("nft", "add", "table", "inet", "user")
    lab.in_lab("nft", "add", "chain", "inet", "user", "guard", "{ type filter hook forward priority 0 ; }")
    lab.in_lab("nft", "add", "rule", "inet", "user", "guard", "ip", "daddr", web_ip, "tcp", "dport", "80", "counter", "drop")
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
    assert (r["verdict"], r["cause"]) == ("blocked", "FIREWALL_DROP")
    rule = next(e for e in r["evidence"] if e["kind"] == "nft_rule")
    assert rule["table"] == "inet user" and rule["chain"] == "guard" and "drop" in rule["rule"]
    assert r["live"]["outcome"] == "timeout"
    moved = [e for e in r["evidence"] if e["kind"] == "nft_counter"]
    assert moved and moved[0]["table"] == "inet user" and moved[0]["packets"] >= 1  # the live probe hit that rule
    assert r["fix_command"].startswith("nft delete rule inet user guard handle")
    apply_fix(lab, r)
    assert trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")["verdict"] == "delivered"


def test_ip_forward_off(two, tmp_path):
    lab = two
    lab.outside_server(tmp_path)
    lab.in_lab("sysctl", "-w", "net.ipv4.ip_forward=0")
    r = trace(lab, "client", "203.0.113.1", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "FORWARDING_DISABLED")
    assert dead_hop(r)["label"] == "host" and r["fix_command"] == "sysctl -w net.ipv4.ip_forward=1"
    apply_fix(lab, r)
    assert trace(lab, "client", "203.0.113.1", "--port", "80")["verdict"] == "delivered"


def test_missing_masquerade(lab, tmp_path):
    lab.outside_server(tmp_path)
    lab.ok("network", "create", "--subnet", "10.77.0.0/24", "-o", "com.docker.network.bridge.enable_ip_masquerade=false", "nomasq")
    sh(lab, "nomasqc", "exec sleep 300", network="nomasq")
    r = trace(lab, "nomasqc", "203.0.113.1", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NO_NAT")
    assert "route back" in r["fix"] and "10.77.0.0/24 via 203.0.113.2" in r["fix_command"]
    apply_fix(lab, r)
    assert trace(lab, "nomasqc", "203.0.113.1", "--port", "80")["verdict"] == "delivered"


def test_port_not_published(lab):
    web(lab, "shy")
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "PORT_NOT_PUBLISHED") and "-p 80:80" in r["fix_command"]
    assert r["fix_check"]["checked"] is False  # a new container is not a change the model can check
    apply_fix(lab, r, checked=False)
    assert eventually_delivered(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "80")


def test_nothing_listening_and_loopback_only(two):
    lab = two
    r = trace(lab, "client", "web", "--port", "81")
    assert (r["verdict"], r["cause"]) == ("blocked", "NO_LISTENER") and r["live"]["outcome"] == "refused"
    lab.ok("exec", "web", "httpd", "-p", "81")
    assert trace(lab, "client", "web", "--port", "81")["verdict"] == "delivered"
    lab.ok("exec", "web", "httpd", "-p", "127.0.0.1:9000")
    r = trace(lab, "client", "web", "--port", "9000")
    assert (r["verdict"], r["cause"]) == ("blocked", "LISTENER_LOOPBACK_ONLY")
    assert "127.0.0.1:9000" in r["summary"] and "0.0.0.0:9000" in r["fix"]
    lab.ok("exec", "web", "sh", "-c", "kill $(ps -o pid,args | grep '[1]27.0.0.1:9000' | awk '{print $1}'); sleep 0.2; httpd -p 9000")
    assert trace(lab, "client", "web", "--port", "9000")["verdict"] == "delivered"


def test_a_loopback_listener_named_in_the_containers_command_gets_the_command_that_recreates_it(two):
    """Where the container's own command says 127.0.0.1 (scenario 02's mistake), netdiag knows the
    change: the printed command recreates it listening on 0.0.0.0, and applied, the flow works."""
    lab = two
    sh(lab, "lo9", "mkdir -p /www && echo lo9 > /www/index.html && exec httpd -f -p 127.0.0.1:9000 -h /www")
    r = trace(lab, "client", "lo9", "--port", "9000")
    assert (r["verdict"], r["cause"]) == ("blocked", "LISTENER_LOOPBACK_ONLY")
    assert r["fix_command"] == ("netdiag rm -f lo9 && netdiag run -d --name lo9 busybox sh -c "
                                "'mkdir -p /www && echo lo9 > /www/index.html && exec httpd -f -p 0.0.0.0:9000 -h /www'"), r["fix_command"]
    apply_fix(lab, r, checked=False)
    assert eventually_delivered(lab, "client", "lo9", "--port", "9000")


def test_veth_down(two):
    lab = two
    veth = json.loads(lab.ok("inspect", "web"))[0]["NetworkSettings"]["Networks"]["bridge"]["HostVeth"]
    lab.in_lab("ip", "link", "set", veth, "down")
    r = trace(lab, "client", "web", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "LINK_DOWN") and dead_hop(r)["interface"] == veth
    apply_fix(lab, r)
    assert eventually_delivered(lab, "client", "web", "--port", "80")


def test_no_route(two, tmp_path):
    lab = two
    lab.outside_server(tmp_path)
    lab.ok("exec", "client", "ip", "route", "del", "default")
    r = trace(lab, "client", "203.0.113.1", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NO_ROUTE") and dead_hop(r)["label"].startswith("client")
    assert "ip route add default via 172.17.0.1 dev eth0" in r["fix_command"]
    apply_fix(lab, r)
    assert trace(lab, "client", "203.0.113.1", "--port", "80")["verdict"] == "delivered"


def test_rp_filter(two):
    lab = two
    lab.outside_run("ip", "addr", "add", "198.51.100.7/32", "dev", "eth0")
    lab.outside_run("ip", "route", "change", "203.0.113.0/24", "dev", "eth0", "src", "198.51.100.7")
    lab.in_lab("ip", "route", "add", "198.51.100.0/24", "dev", "docker0")
    lab.in_lab("sysctl", "-w", "net.ipv4.conf.all.rp_filter=1")
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
    assert (r["verdict"], r["cause"]) == ("blocked", "RP_FILTER") and dead_hop(r)["interface"] == "eth0"
    # the route back through eth0 (replies need it too); loose mode on eth0 is the alternative
    assert r["fix_command"] == "ip route replace 198.51.100.0/24 via 203.0.113.1 dev eth0", r["fix"]
    assert "sysctl -w net.ipv4.conf.eth0.rp_filter=2" in r["fix"]
    apply_fix(lab, r)
    assert eventually_delivered(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")


def test_icc_disabled(lab):
    lab.ok("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "quiet")
    web(lab, "web", network="quiet")
    sh(lab, "cli", "exec sleep 300", network="quiet")
    r = trace(lab, "cli", "web", "--port", "80", "--verify-fix")
    assert (r["verdict"], r["cause"]) == ("blocked", "ICC_DISABLED")
    # the replica cannot re-create a network (netdiag's state): it runs the kernel change the
    # re-creation makes, as netdiag's driver plans it, and says so
    assert r["fix_kernel"].startswith("nft delete rule bridge netdiag forward handle "), r
    v = r["fix_verified"]
    assert v["replica"] is True and v["kernel_equivalent"]["command"] == r["fix_command"], v
    assert "not the command itself" in v["detail"] and "its kernel change verified on a replica" in r["fix_proof"]
    apply_fix(lab, r)  # recreate the network with icc on and reconnect both
    assert trace(lab, "cli", "web", "--port", "80")["verdict"] == "delivered"


def test_different_networks(lab):
    lab.ok("network", "create", "front")
    lab.ok("network", "create", "back")
    web(lab, "api", network="back")
    sh(lab, "ui", "exec sleep 300", network="front")
    r = trace(lab, "ui", ip_of(lab, "api", "back"), "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NETWORK_ISOLATION") and r["fix_command"] == "netdiag network connect back ui"
    apply_fix(lab, r, checked=False)
    assert trace(lab, "ui", ip_of(lab, "api", "back"), "--port", "80")["verdict"] == "delivered"


def test_lowered_veth_mtu_with_size(two):
    lab = two
    veth = json.loads(lab.ok("inspect", "web"))[0]["NetworkSettings"]["Networks"]["bridge"]["HostVeth"]
    lab.in_lab("ip", "link", "set", veth, "mtu", "1000")
    r = trace(lab, "client", "web", "--proto", "icmp", "--size", "1400")
    assert (r["verdict"], r["cause"]) == ("blocked", "MTU_BLACKHOLE") and dead_hop(r)["interface"] == veth
    apply_fix(lab, r)
    assert trace(lab, "client", "web", "--proto", "icmp", "--size", "1400")["verdict"] == "delivered"


def test_none_network(lab):
    lab.ok("run", "-d", "--name", "lonely", "--network", "none", "busybox", "sleep", "300")
    r = trace(lab, "lonely", "203.0.113.1", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NETWORK_NONE")
    r = trace(lab, "host", "lonely", "--proto", "icmp")  # as the destination too: a verdict, not an error
    assert (r["verdict"], r["cause"], r["dst_ip"]) == ("blocked", "NETWORK_NONE", None)
    apply_fix(lab, r, checked=False)  # recreated on the default bridge, same image and command
    assert trace(lab, "host", "lonely", "--proto", "icmp")["verdict"] == "delivered"


def test_duplicate_ip(two):
    lab = two
    web_ip = ip_of(lab, "web")
    sh(lab, "thief", "exec sleep 300", "--cap-add", "NET_ADMIN")
    lab.ok("exec", "thief", "ip", "addr", "add", f"{web_ip}/16", "dev", "eth0")
    r = trace(lab, "client", web_ip, "--port", "80", "--static")
    assert (r["verdict"], r["cause"]) == ("blocked", "ADDRESS_CONFLICT")
    assert "ip addr del" in r["fix_command"] and f"{web_ip}/16" in r["fix_command"]  # from the thief, not from web
    apply_fix(lab, r)
    assert trace(lab, "client", web_ip, "--port", "80")["verdict"] == "delivered"


def test_static_trace_offline_from_a_snapshot_gives_the_same_answer(two, tmp_path):
    lab = two
    snap = tmp_path / "s.json"
    lab.ok("snapshot", "-o", str(snap))
    r = trace(lab, "client", "web", "--port", "81", "--snapshot", str(snap))
    assert (r["verdict"], r["cause"], r["mode"]) == ("blocked", "NO_LISTENER", "static") and "live" not in r


def test_wrong_gateway(two, tmp_path):
    lab = two
    lab.outside_server(tmp_path)
    lab.ok("exec", "client", "ip", "route", "replace", "default", "via", "172.17.0.254")
    r = trace(lab, "client", "203.0.113.1", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NO_NEIGHBOR") and "172.17.0.254" in r["summary"]
    assert "ip route replace default via 172.17.0.1 dev eth0" in r["fix_command"]
    apply_fix(lab, r)
    assert eventually_delivered(lab, "client", "203.0.113.1", "--port", "80")


def test_trace_draws_its_path_on_the_map(two, tmp_path):
    import xml.etree.ElementTree as ET

    lab = two
    svg, html = tmp_path / "path.svg", tmp_path / "path.html"
    p = lab.run("trace", "client", "web", "--port", "81", "-o", str(svg))
    assert p.returncode == 1 and p.stdout.split()[:2] == ["BLOCKED", "NO_LISTENER"], p.stdout  # the headline's cause
    root = ET.parse(svg).getroot()
    marks = {el.get("data-trace") for el in root.iter()}
    assert "path" in marks  # the hops the packet took are drawn on the map
    assert 'data-verdict="blocked"' in svg.read_text() and "listens on tcp port 81" in svg.read_text()
    assert lab.run("trace", "client", "web", "--port", "80", "--static", "-o", str(html)).returncode == 0
    assert "<svg" in html.read_text() and "web" in html.read_text()


def test_when_the_model_cannot_decide_the_kernels_own_trace_does(two):
    lab = two
    web_ip = ip_of(lab, "web")
    lab.in_lab("nft", "add", "table", "inet", "marks")
    lab.in_lab("nft", "add", "chain", "inet", "marks", "deny", "{ type filter hook forward priority 0 ; }")
    lab.in_lab("nft", "add", "rule", "inet", "marks", "deny", "ip", "daddr", web_ip, "meta", "mark", "0", "drop")
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080", "--static")
    assert r["verdict"] == "unknown"  # packet marks are not in the model
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
    assert (r["verdict"], r["cause"]) == ("blocked", "FIREWALL_DROP"), r["summary"]
    assert r["reconciled"].startswith("the kernel's packet trace decides") and "inet marks deny" in r["reconciled"]
    assert dead_hop(r)["label"] == "host" and "nft delete rule inet marks deny handle" in r["fix_command"]
    apply_fix(lab, r, checked=False)  # checked, but the model still cannot decide without the rule's twin
    assert trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")["verdict"] == "delivered"


def test_pcap_holds_every_hops_capture_of_the_probe(two, tmp_path):
    from scapy.utils import PcapNgReader

    lab = two
    out = tmp_path / "probe.pcapng"
    p = lab.run("trace", "client", "web", "--port", "80", "--pcap", str(out), timeout=60)
    assert p.returncode == 0 and "pcap" in p.stdout, p.stdout + p.stderr
    with PcapNgReader(str(out)) as reader:
        frames = list(reader)
    names = {f.sniffed_on for f in frames}
    assert {"client (netdiag container) eth0", "web (netdiag container) eth0"} <= names and len(names) >= 4, names
    assert lab.run("trace", "client", "web", "--port", "80", "--pcap", str(out), "--static").returncode == 2


def test_system_prune_removes_what_a_killed_trace_left(lab):
    dead = 4194303  # above any pid this machine hands out (pid_max)
    for family in ("inet", "bridge"):
        lab.in_lab("nft", "add", "table", family, f"netdiag_trace_{dead}_abcd")
    # pid 1 lives with its own start time: not ours to touch; the same pid with another start time
    # is a tracer that died and whose pid was handed out again
    live, reused = nftrace.table_name(1, "abcd"), f"netdiag_trace_1_{proc_start_time(1) + 1}_abcd"
    for name in (live, reused):
        lab.in_lab("nft", "add", "table", "inet", name)
    out = lab.ok("system", "prune", "-f")
    assert f"netdiag_trace_{dead}_abcd" in out and reused in out
    tables = lab.in_lab("nft", "list", "tables").stdout
    assert f"netdiag_trace_{dead}" not in tables and reused not in tables and live in tables
    lab.in_lab("nft", "delete", "table", "inet", live)
