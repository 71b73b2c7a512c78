"""`netdiag health` and `netdiag explain CONTAINER` in a lab: every timeout class a load balancer
cannot tell apart is planted in real kernel objects (a rule, a missing listener, a route, an
address nobody has, a stolen address, an MTU step with its ICMP filtered, a slow CGI, a 500, a
name the source cannot resolve, a loss rule) and must come out with its own cause, the verdict in
HAProxy's, AWS's and Kubernetes' words, and a fix that, run by `--fix --yes`, makes the check pass."""
from __future__ import annotations

import json
import os
import shlex
import time

import pytest

pytestmark = pytest.mark.integration

BUDGET = 3.0  # a failed check is diagnosed within this long after its own timeout


def health(lab, target, src, *args, timeout=90):
    p = lab.run("health", target, "--from", src, "--json", *args, timeout=timeout)
    assert p.returncode in (0, 1, 3), p.stderr
    r = json.loads(p.stdout)
    final = r.get("recheck") or r
    assert p.returncode == (0 if final["healthy"] else 1 if final["cause"] else 3), (p.returncode, final["summary"])
    return r


def pid_of(lab, name):
    return json.loads(lab.ok("inspect", name))[0]["State"]["Pid"]


def ip_of(lab, name, net):
    return json.loads(lab.ok("inspect", name))[0]["NetworkSettings"]["Networks"][net]["IPAddress"]


def in_ctr(lab, name, *argv):
    """Run a host tool in a container's network namespace, as an admin does with nsenter."""
    p = lab.in_lab("nsenter", "-t", str(pid_of(lab, name)), "-n", *argv)
    assert p.returncode == 0, p.stderr
    return p


def serve(lab, name, *extra, network="n", files=None):
    """busybox httpd on port 80 serving /www (files written into the container's root)."""
    net = ["--network", network] if network else []
    lab.ok("run", "-d", "--name", name, *net, *extra, "busybox", "sh", "-c", "mkdir -p /www/cgi-bin && exec httpd -f -p 80 -h /www")
    root = f"/proc/{pid_of(lab, name)}/root/www"
    for _ in range(50):
        if os.path.isdir(f"{root}/cgi-bin"):
            break
        time.sleep(0.05)
    for rel, (body, mode) in {"index.html": (f"{name}\n", 0o644), **(files or {})}.items():
        with open(f"{root}/{rel}", "w") as f:
            f.write(body)
        os.chmod(f"{root}/{rel}", mode)


CGI = {
    "cgi-bin/slow": ("#!/bin/sh\nsleep 3\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n", 0o755),
    "cgi-bin/err": ("#!/bin/sh\nprintf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\n"
                    "database is down\\n'\n", 0o755),
}


@pytest.fixture
def pair(lab):
    """web (httpd, a slow CGI and a failing one) and cli, on network n (10.71.0.0/24, with DNS)."""
    lab.ok("network", "create", "--subnet", "10.71.0.0/24", "n")
    serve(lab, "web", files=CGI)
    lab.ok("run", "-d", "--name", "cli", "--network", "n", "--cap-add", "NET_ADMIN", "busybox", "sleep", "600")
    return lab


def verdict(r):
    v = r["verdicts"]
    return v["haproxy"]["status"], v["aws"]["reason"], v["kubernetes"]


def test_healthy_checks_report_timings_the_resolver_and_a_series(pair):
    lab = pair
    r = health(lab, "web:80", "cli")
    assert r["healthy"] and r["cause"] is None and r["address"] == ip_of(lab, "web", "n")
    assert r["resolution"]["source"] == "dns" and r["resolution"]["server"] == "10.71.0.1"  # the network's own DNS
    assert r["timings"]["dns"] is not None and r["timings"]["connect"] is not None
    assert verdict(r)[:2] == ("L4OK", None)
    r = health(lab, "http://web/", "cli", "--count", "5", "--interval", "0.1")
    assert r["healthy"] and r["status"] == 200 and verdict(r)[0] == "L7OK"
    s = r["series"]
    assert (s["count"], s["ok"], s["success_rate"]) == (5, 5, 1.0) and 0 < s["p50"] <= s["p95"] < 1
    assert r["timings"]["first_byte"] is not None


def test_a_dropped_syn_names_the_rule_and_the_fix_makes_the_check_pass(pair):
    lab = pair
    in_ctr(lab, "web", "nft", "add", "table", "inet", "sg")
    in_ctr(lab, "web", "nft", "add", "chain", "inet", "sg", "input", "{ type filter hook input priority 0 ; }")
    in_ctr(lab, "web", "nft", "add", "rule", "inet", "sg", "input", "tcp", "dport", "80", "counter", "drop")
    r = health(lab, "http://web/", "cli", "--timeout", "1")
    assert (r["healthy"], r["cause"], r["failure"]["stage"], r["failure"]["error"]) == (False, "FIREWALL_DROP", "connect", "timeout")
    rule = next(e for e in r["evidence"] if e["kind"] == "nft_rule")
    assert (rule["table"], rule["chain"]) == ("inet sg", "input") and "drop" in rule["rule"]
    assert r["hop"]["label"].startswith("web") and r["hop"]["direction"] == "input"
    hap, aws, k8s = verdict(r)
    assert (hap, aws) == ("L4TOUT", "Target.Timeout") and "Client.Timeout exceeded" in k8s
    assert r["diagnosed_in"] < BUDGET, r["diagnosed_in"]
    assert "nft delete rule inet sg input handle" in r["fix_command"] and r["fix_check"]["delivers"]
    r = health(lab, "http://web/", "cli", "--timeout", "1", "--fix")  # read-only without --yes (no terminal to ask)
    assert "applied_fix" not in r and not r["healthy"]
    r = health(lab, "http://web/", "cli", "--timeout", "1", "--fix", "--yes")
    assert r["applied_fix"]["returncode"] == 0 and r["recheck"]["healthy"] and r["recheck"]["status"] == 200


def test_refused_is_no_listener_or_a_loopback_only_listener(pair):
    lab = pair
    r = health(lab, "web:81", "cli")
    assert (r["cause"], r["failure"]["error"]) == ("NO_LISTENER", "refused")
    hap, aws, k8s = verdict(r)
    assert (hap, aws) == ("L4CON", "Target.FailedHealthChecks") and k8s.endswith(f"dial tcp {r['address']}:81: connect: connection refused")
    assert r["diagnosed_in"] < BUDGET
    lab.ok("exec", "web", "httpd", "-p", "127.0.0.1:9000")
    r = health(lab, "http://web:9000/", "cli")
    assert r["cause"] == "LISTENER_LOOPBACK_ONLY" and "127.0.0.1:9000" in r["summary"]


def test_no_route(pair, tmp_path):
    lab = pair
    lab.outside_server(tmp_path)
    lab.ok("exec", "cli", "ip", "route", "del", "default")
    r = health(lab, "203.0.113.1:80", "cli")
    assert (r["cause"], r["failure"]["error"]) == ("NO_ROUTE", "netunreach") and r["hop"]["label"].startswith("cli")
    assert verdict(r)[0] == "L4CON" and verdict(r)[2].endswith("connect: network is unreachable")
    r = health(lab, "203.0.113.1:80", "cli", "--fix", "--yes")
    assert r["applied_fix"]["returncode"] == 0 and r["recheck"]["healthy"], r.get("applied_fix")


def test_arp_never_answered_and_a_stolen_address(pair):
    lab = pair
    r = health(lab, "10.71.0.200:80", "cli", "--timeout", "1")
    assert (r["cause"], verdict(r)[:2]) == ("NO_NEIGHBOR", ("L4TOUT", "Target.Timeout")) and "10.71.0.200" in r["summary"]
    assert r["diagnosed_in"] < BUDGET
    web_ip = ip_of(lab, "web", "n")
    lab.ok("run", "-d", "--name", "thief", "--network", "n", "--cap-add", "NET_ADMIN", "busybox", "sleep", "600")
    lab.ok("exec", "thief", "ip", "addr", "add", f"{web_ip}/24", "dev", "eth0")
    lab.run("exec", "thief", "arping", "-c", "2", "-U", "-I", "eth0", "-s", web_ip, web_ip)  # the neighbours now believe it (exit 1: no replies)
    r = health(lab, f"{web_ip}:80", "cli")
    assert r["cause"] == "ADDRESS_CONFLICT" and "thief" in r["summary"] and "ip addr del" in r["fix_command"]
    r = health(lab, f"{web_ip}:80", "cli", "--fix", "--yes")
    assert r["applied_fix"]["returncode"] == 0 and r["applied_fix"]["command"] == r["fix_command"]
    assert web_ip not in lab.ok("exec", "thief", "ip", "-4", "addr")
    # cli's ARP entry still names the thief's MAC until the kernel's reachable time runs out (up to
    # ~45 s): flush it, as an admin does after an address conflict, instead of waiting
    lab.ok("exec", "cli", "ip", "neigh", "flush", "dev", "eth0")
    assert health(lab, f"{web_ip}:80", "cli")["healthy"]


def test_the_handshake_works_but_a_large_answer_never_arrives(lab):
    """A routed MTU step (the lab's uplink at 1000 bytes) whose ICMP 'fragmentation needed' a rule
    drops: small answers arrive, a large one hangs after the headers."""
    big = "x" * 65536
    serve(lab, "big", "-p", "8081:80", network=None, files={"small.txt": ("small\n", 0o644), "big.txt": (big, 0o644)})
    out = f"ns:{lab.outside}"
    assert health(lab, "http://203.0.113.2:8081/big.txt", out)["healthy"]
    lab.in_lab("ip", "link", "set", "eth0", "mtu", "1000")
    lab.in_lab("nft", "add", "table", "inet", "icmpfilter")
    lab.in_lab("nft", "add", "chain", "inet", "icmpfilter", "out", "{ type filter hook output priority 0 ; }")
    lab.in_lab("nft", "add", "rule", "inet", "icmpfilter", "out", "icmp", "type", "destination-unreachable", "drop")
    assert health(lab, "http://203.0.113.2:8081/small.txt", out)["healthy"]
    r = health(lab, "http://203.0.113.2:8081/big.txt", out)
    assert r["cause"] == "MTU_BLACKHOLE" and r["failure"]["stage"] == "response", r["summary"]
    assert r["timings"]["connect"] is not None  # the handshake worked
    assert (r["hop"]["label"], r["hop"]["interface"]) == ("host", "eth0")
    assert any(e["kind"] == "mtu" and "mtu 1000" in e["detail"] for e in r["evidence"])
    assert any("fragmentation needed" in e["detail"] for e in r["evidence"])  # why it is a black hole, not PMTU discovery
    assert verdict(r)[:2] == ("L7TOUT", "Target.Timeout") and r["diagnosed_in"] < BUDGET
    r = health(lab, "http://203.0.113.2:8081/big.txt", out, "--fix", "--yes")
    assert r["applied_fix"]["command"] == "ip link set dev eth0 mtu 1500" and r["recheck"]["healthy"], r["applied_fix"]


def test_a_slow_application_and_an_error_status(pair):
    lab = pair
    r = health(lab, "http://web/cgi-bin/slow", "cli", "--timeout", "2")
    assert (r["cause"], r["failure"]["stage"]) == ("SLOW_RESPONSE", "response")
    assert 2.5 < r["measured"] < 4.5 and "too slowly" in r["summary"], r["summary"]  # the answer came after 3 s
    assert verdict(r)[:2] == ("L7TOUT", "Target.Timeout") and r["diagnosed_in"] < BUDGET
    assert health(lab, "http://web/cgi-bin/slow", "cli", "--timeout", "5")["healthy"]
    r = health(lab, "http://web/cgi-bin/err", "cli")
    assert (r["cause"], r["status"]) == ("APP_ERROR", 500) and "database is down" in r["body"]
    hap, aws, k8s = verdict(r)
    assert (hap, aws) == ("L7STS", "Target.ResponseCodeMismatch") and k8s.endswith("HTTP probe failed with statuscode: 500")
    r = health(lab, "http://web/nothing-here", "cli")
    assert (r["cause"], r["status"]) == ("APP_ERROR", 404)
    assert health(lab, "http://web/nothing-here", "cli", "--expect", "404")["healthy"]


def test_two_containers_on_the_default_bridge_get_a_network_of_their_own_named_after_them(lab):
    """Neither is on a user network (whose DNS resolves names): the fix creates one, connects the
    target and recreates the source on it, with real names (never `network create NET`)."""
    serve(lab, "web", network=None)
    lab.ok("run", "-d", "--name", "cli", "busybox", "sleep", "600")
    control = (f"{ip_of(lab, 'web', 'bridge')}:80", "host", "--timeout", "1")  # the host reaches web: before and after
    assert health(lab, *control)["healthy"]
    r = health(lab, "web:80", "cli", "--timeout", "1", "--fix", "--yes")
    assert r["cause"] == "DNS_FAILURE"
    assert r["fix_command"] == ("netdiag network create cli-web && netdiag network connect cli-web web && "
                                "netdiag rm -f cli && netdiag run -d --name cli --network cli-web busybox sleep 600"), r["fix_command"]
    # checked on the model: on cli-web (with web connected first) the network's DNS answers for web
    assert r["fix_check"]["checked"] and r["fix_check"]["delivers"] and "answers for web" in r["fix_check"]["detail"], r["fix_check"]
    assert r["applied_fix"]["returncode"] == 0 and r["recheck"]["healthy"], r["recheck"]["summary"]
    assert health(lab, *control)["healthy"]


def test_names_resolve_only_the_way_the_source_resolves_them(lab):
    lab.ok("network", "create", "--subnet", "10.72.0.0/24", "n")
    serve(lab, "web", network=None)        # default bridge
    serve(lab, "api", network="n")
    lab.ok("run", "-d", "--name", "cli", "busybox", "sleep", "600")  # default bridge: no container DNS
    with open(f"/proc/{pid_of(lab, 'cli')}/root/etc/resolv.conf") as f:
        servers = [line.split()[1] for line in f if line.startswith("nameserver")]
    r = health(lab, "web:80", "cli", "--timeout", "1")
    assert r["cause"] == "DNS_FAILURE" and r["failure"]["stage"] == "resolve"  # netdiag knows web, cli's resolver does not
    assert r["resolution"]["nameservers"] == servers and servers[0] in r["summary"]
    hint = next(e["detail"] for e in r["evidence"] if e["kind"] == "hint")
    assert "default bridge" in hint and ip_of(lab, "web", "bridge") in hint
    assert verdict(r)[2].startswith(f"Readiness probe failed: dial tcp: lookup web on {servers[0]}:53")
    r = health(lab, "nosuch:80", "api", "--timeout", "1")  # a user network's DNS is asked, and says so
    assert r["cause"] == "DNS_FAILURE" and r["resolution"]["server"] == "10.72.0.1"
    assert any(w in r["resolution"]["answer"] for w in ("NXDOMAIN", "SERVFAIL")), r["resolution"]
    r = health(lab, "api:80", "cli", "--timeout", "1", "--fix", "--yes")  # cli recreated on n, whose DNS knows api
    assert r["cause"] == "DNS_FAILURE" and r["fix_command"].startswith("netdiag rm -f cli && netdiag run -d --name cli --network n")
    assert r["applied_fix"]["returncode"] == 0 and r["recheck"]["healthy"], r["recheck"]["summary"]
    assert r["recheck"]["resolution"]["server"] == "10.72.0.1"


def test_packet_loss_makes_the_check_flap(pair):
    lab = pair
    in_ctr(lab, "web", "nft", "add", "table", "inet", "flaky")
    in_ctr(lab, "web", "nft", "add", "chain", "inet", "flaky", "input", "{ type filter hook input priority 0 ; }")
    in_ctr(lab, "web", "nft", "add", "rule", "inet", "flaky", "input", "tcp", "dport", "80", "numgen", "random", "mod", "100", "<", "40", "drop")
    args = ("--count", "20", "--interval", "0.05", "--timeout", "0.5")
    r = health(lab, "web:80", "cli", *args)
    assert r["cause"] == "PACKET_LOSS" and 0 < r["success_rate"] < 1, r["summary"]
    assert r["series"]["ok"] == round(r["success_rate"] * 20) and f"{r['success_rate']:.0%}" in r["summary"]
    rule = next(e for e in r["evidence"] if e["kind"] == "nft_rule")
    assert rule["table"] == "inet flaky" and "numgen" in rule["rule"]
    r = health(lab, "web:80", "cli", *args, "--fix", "--yes")
    assert "nft delete rule inet flaky input handle" in r["applied_fix"]["command"]
    assert r["recheck"]["healthy"] and r["recheck"]["series"]["ok"] == 20


def test_packet_losss_fix_is_checked_on_the_model_and_counted_on_a_replica(pair):
    """The loss rule's deletion: checked on the model (the path then delivers, no rule drops at
    random), verified on a replica by counting handshakes (some lost before, none after), then
    applied for real: the check passes every time, and a control flow (the host's own check of
    web) works before and after."""
    lab = pair
    in_ctr(lab, "web", "nft", "add", "table", "inet", "flaky")
    in_ctr(lab, "web", "nft", "add", "chain", "inet", "flaky", "input", "{ type filter hook input priority 0 ; }")
    in_ctr(lab, "web", "nft", "add", "rule", "inet", "flaky", "input", "tcp", "dport", "80", "ip", "saddr",
           ip_of(lab, "cli", "n"), "numgen", "random", "mod", "100", "<", "40", "drop")
    control = ("web:80", "host", "--tcp", "--count", "5", "--interval", "0.05", "--timeout", "0.5")
    assert health(lab, f"{ip_of(lab, 'web', 'n')}:80", *control[1:])["healthy"]
    args = ("--count", "20", "--interval", "0.05", "--timeout", "0.5")
    r = health(lab, "web:80", "cli", *args, "--verify-fix")
    assert r["cause"] == "PACKET_LOSS", r["summary"]
    listed = in_ctr(lab, "web", "nft", "-a", "list", "chain", "inet", "flaky", "input").stdout
    handle = listed.rsplit("# handle ", 1)[1].split()[0]  # the loss rule's real handle
    assert r["fix_command"].endswith(f"nft delete rule inet flaky input handle {handle}"), r["fix_command"]
    assert r["fix_check"]["checked"] and r["fix_check"]["delivers"], r["fix_check"]
    v = r["fix_verified"]
    assert v["replica"] is True, v
    assert "lost" in v["probe"]["before"]["outcome"] and v["probe"]["after"]["detail"] == "20/20 handshakes got through", v
    assert "checked on the model" in r["fix_proof"] and "verified on a replica" in r["fix_proof"]
    p = lab.in_lab(*shlex.split(r["fix_command"]))  # applied for real, as printed
    assert p.returncode == 0, p.stderr
    after = health(lab, "web:80", "cli", *args)
    assert after["healthy"] and after["series"]["ok"] == 20
    assert health(lab, f"{ip_of(lab, 'web', 'n')}:80", *control[1:])["healthy"]


def test_a_resolver_that_cannot_be_reached_gets_the_querys_fix(pair):
    """cli's DNS queries (UDP 53 to its network's DNS) are dropped in its own namespace: DNS_FAILURE,
    with the trace of the query's path naming the rule, its fix checked on the model and verified
    on a replica, then applied for real: the name resolves and the check passes; web by address
    (the control) worked all along."""
    lab = pair
    in_ctr(lab, "cli", "nft", "add", "table", "inet", "nodns")
    in_ctr(lab, "cli", "nft", "add", "chain", "inet", "nodns", "output", "{ type filter hook output priority 0 ; }")
    in_ctr(lab, "cli", "nft", "add", "rule", "inet", "nodns", "output", "udp", "dport", "53", "drop")
    web_ip = ip_of(lab, "web", "n")
    assert health(lab, f"{web_ip}:80", "cli", "--timeout", "1")["healthy"]  # the control flow
    r = health(lab, "web:80", "cli", "--timeout", "1", "--verify-fix")
    assert r["cause"] == "DNS_FAILURE" and "cannot be reached (FIREWALL_DROP)" in r["summary"], r["summary"]
    assert "nft delete rule inet nodns output handle" in r["fix_command"], r["fix"]
    assert r["fix_check"]["checked"] and r["fix_check"]["delivers"], r["fix_check"]
    v = r["fix_verified"]
    assert v["replica"] is True and v["probe"]["flow"] == "udp 10.71.0.1:53", v
    p = lab.in_lab(*shlex.split(r["fix_command"]))
    assert p.returncode == 0, p.stderr
    assert health(lab, "web:80", "cli", "--timeout", "1")["healthy"]
    assert health(lab, f"{web_ip}:80", "cli", "--timeout", "1")["healthy"]


def test_bad_input_exits_2(pair):
    lab = pair
    for args in (["web", "--from", "cli"], ["web:0", "--from", "cli"], ["web:80", "--from", "nobody"],
                 ["http://web/a b", "--from", "cli"], ["web:80", "--from", "cli", "--tcp", "--http", "/"],
                 ["web:80", "--from", "cli", "--yes"]):
        p = lab.run("health", *args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)


def wait_status(lab, name, want, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health_state = json.loads(lab.ok("inspect", name))[0]["State"].get("Health") or {}
        if health_state.get("Status") == want:
            return
        time.sleep(0.3)
    pytest.fail(f"{name} never became {want}")


def test_explain_a_netdiag_container(lab):
    lab.ok("network", "create", "--subnet", "10.73.0.0/24", "n")
    lab.ok("run", "-d", "--name", "api", "--network", "n", "--health-cmd", "wget -qO- http://localhost:8080/ || exit 1",
           "--health-interval", "0.5", "--health-retries", "1", "busybox", "httpd", "-f", "-p", "80")
    lab.ok("run", "-d", "--name", "worker", "--network", "n", "--health-cmd", "test -e /ready",
           "--health-interval", "0.5", "--health-retries", "1", "busybox", "sleep", "600")
    lab.ok("run", "-d", "--name", "plain", "--network", "n", "busybox", "sleep", "600")
    wait_status(lab, "api", "unhealthy")
    p = lab.run("explain", "api", "--json")
    r = json.loads(p.stdout)
    assert p.returncode == 1 and r["status"] == "unhealthy" and r["failing_streak"] >= 1
    assert r["healthcheck"]["command"] == "wget -qO- http://localhost:8080/ || exit 1"
    assert any("refused" in e["output"].lower() for e in r["log"])  # the check's own output
    assert r["network_check"]["target"] == "http://localhost:8080/"
    h = r["health"]
    assert (h["cause"], h["address"]) == ("NO_LISTENER", "127.0.0.1") and "8080" in h["summary"]
    assert any(e["kind"] == "socket" and ":80" in e["detail"] for e in h["evidence"])  # what does listen
    p = lab.run("explain", "api")
    heads = [line.split()[:3] for line in p.stdout.splitlines() if line.startswith("UNHEALTHY")]
    # the container's status, then its re-run check's headline with the cause it names
    assert p.returncode == 1 and heads == [["UNHEALTHY", "api", "(netdiag"], ["UNHEALTHY", "NO_LISTENER", "http://localhost:8080/"]], \
        p.stdout
    wait_status(lab, "worker", "unhealthy")
    p = lab.run("explain", "worker", "--json")
    r = json.loads(p.stdout)
    assert p.returncode == 1 and r["network_check"] is None and "not a network check" in r["note"]
    assert lab.run("explain", "plain").returncode == 2  # no health check: nothing to explain
    assert lab.run("explain", "nobody").returncode == 2


def test_explain_a_docker_engines_container(tmp_path):
    from tests.dockerkit import HAVE_DOCKER, IMAGE, docker_lab

    if not HAVE_DOCKER:
        pytest.skip("no Docker engine installed")

    def setup(d):
        d.docker("network", "create", "--subnet", "10.74.0.0/24", "dn")
        d.docker("run", "-d", "--name", "dweb", "--network", "dn", "--health-cmd", "wget -qO- http://127.0.0.1:81/ || exit 1",
                 "--health-interval", "1s", "--health-retries", "1", IMAGE, "httpd", "-f", "-p", "80")

    with docker_lab(tmp_path, setup) as d:
        deadline = time.monotonic() + 30
        while d.inspect("dweb")["State"].get("Health", {}).get("Status") != "unhealthy":
            assert time.monotonic() < deadline, "dweb never became unhealthy"
            time.sleep(0.5)
        p = d.lab.run("explain", "dweb", "--json", timeout=90)
        r = json.loads(p.stdout)
        assert p.returncode == 1 and (r["runtime"], r["status"]) == ("docker", "unhealthy"), p.stderr
        assert r["health"]["cause"] == "NO_LISTENER" and "81" in r["health"]["summary"]
        assert any(e["exit_code"] == 1 for e in r["log"])
