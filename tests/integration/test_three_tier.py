"""The study notes' three-tier story, end to end, with the real runtime and a real HAProxy.

An external load balancer (HAProxy in the network namespace of the netdiag container `extlb`,
published on the lab's port 8080) in front of web1 and web2; an internal one (`intlb`) in front of
app1 and app2, which it checks on their health port 8081 while traffic goes to 8080. The notes'
faults are planted as security groups (a default-drop input chain in each container's namespace):
the web tier admits the app subnet instead of the external LB's, so HAProxy marks both web servers
DOWN with L4TOUT (the notes' "health check failed"); the app tier admits the health port but not
the traffic port, so HAProxy sees them UP and requests through the internal LB time out (the
notes' "request timeout"). `netdiag explain --lb` names both rules and the fix for each; after
`--fix --yes`, HAProxy's own stats socket reports every server UP and requests go through."""
from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import subprocess
import time

import pytest

from tests.integration.test_health import in_ctr, ip_of, pid_of, serve

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")]

EXT = """global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 3s
    timeout check 1s
    default-server inter 500ms fall 2 rise 1
frontend www
    bind :80
    default_backend web
backend web
    option httpchk
    http-check send meth GET uri / ver HTTP/1.1 hdr host www.example
    http-check expect status 200
    server web1 {web1}:80 check
    server web2 {web2}:80 check
"""
INT = """global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 3s
    timeout check 1s
    default-server inter 500ms fall 2 rise 1
frontend api
    bind :80
    default_backend app
backend app
    option httpchk GET /health
    http-check expect status 200
    server app1 {app1}:8080 check port 8081
    server app2 {app2}:8080 check port 8081
"""


def start_haproxy(lab, ctr: str, template: str, tmp, **addrs) -> str:
    """HAProxy in the network namespace of the netdiag container `ctr` (a netdiag container cannot
    run the host's dynamically linked haproxy, its namespace can), in the foreground, killed with
    the lab. Returns its stats socket once it answers."""
    sock = tmp / f"{ctr}.sock"
    cfg = tmp / f"{ctr}.cfg"
    cfg.write_text(template.format(sock=sock, **addrs))
    log = open(tmp / f"{ctr}.log", "w")
    p = subprocess.Popen(["nsenter", f"--net=/proc/{pid_of(lab, ctr)}/ns/net", "haproxy", "-f", str(cfg), "-db"],
                         stdout=log, stderr=subprocess.STDOUT, preexec_fn=lab.enter())
    lab._procs.append(p)  # World.destroy kills it, also when the test fails
    log.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            stats(sock)
            return str(sock)
        except OSError:
            assert p.poll() is None and time.monotonic() < deadline, (tmp / f"{ctr}.log").read_text()
            time.sleep(0.1)


def stats(sock) -> dict:
    """(backend, server) -> (status, check_status), read from HAProxy's stats socket directly."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    s.connect(str(sock))
    s.sendall(b"show stat\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    text = data.decode()
    rows = csv.DictReader(io.StringIO(text[2:] if text.startswith("# ") else text))
    return {(r["pxname"], r["svname"]): (r["status"], r["check_status"].lstrip("* ")) for r in rows
            if r.get("svname") not in (None, "FRONTEND", "BACKEND")}


def wait_stats(sock, want, timeout=15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        now = stats(sock)
        if all(want(v) for v in now.values()):
            return now
        assert time.monotonic() < deadline, now
        time.sleep(0.2)


def security_group(lab, ctr: str, port: int, subnet: str) -> None:
    """Default drop on input; replies, loopback and `subnet` to `port` admitted."""
    in_ctr(lab, ctr, "nft", "add", "table", "inet", "sg")
    in_ctr(lab, ctr, "nft", "add", "chain", "inet", "sg", "input", "{ type filter hook input priority 0 ; policy drop ; }")
    in_ctr(lab, ctr, "nft", "add", "rule", "inet", "sg", "input", "ct", "state", "established,related", "accept")
    in_ctr(lab, ctr, "nft", "add", "rule", "inet", "sg", "input", "iif", "lo", "accept")
    in_ctr(lab, ctr, "nft", "add", "rule", "inet", "sg", "input", "ip", "saddr", subnet, "tcp", "dport", str(port), "accept")


def explain(lab, *args) -> tuple[int, dict]:
    p = lab.run("explain", *args, "--json", timeout=120)
    assert p.returncode in (0, 1, 3), p.stderr
    r = json.loads(p.stdout)
    assert p.returncode == (r.get("recheck") or r)["exit"]
    return p.returncode, r


@pytest.fixture
def tiers(lab, tmp_path):
    lab.ok("network", "create", "--subnet", "10.61.0.0/24", "front")
    lab.ok("network", "create", "--subnet", "10.62.0.0/24", "back")
    lab.ok("run", "-d", "--name", "extlb", "--network", "front", "-p", "8080:80", "busybox", "sleep", "3600")
    for web in ("web1", "web2"):
        serve(lab, web, network="front")
        lab.ok("network", "connect", "back", web)
    lab.ok("run", "-d", "--name", "intlb", "--network", "back", "busybox", "sleep", "3600")
    for app in ("app1", "app2"):
        lab.ok("run", "-d", "--name", app, "--network", "back", "busybox", "sh", "-c",
               f"mkdir -p /a /h && echo {app} > /a/index.html && echo ok > /h/health && httpd -p 8081 -h /h && exec httpd -f -p 8080 -h /a")
    # the notes' faults: the web tier admits the app subnet, not the external LB's; the app tier
    # admits its health port, not its traffic port
    for web in ("web1", "web2"):
        security_group(lab, web, 80, "10.62.0.0/24")
    for app in ("app1", "app2"):
        security_group(lab, app, 8081, "10.62.0.0/24")
    lab.ext = start_haproxy(lab, "extlb", EXT, tmp_path, web1=ip_of(lab, "web1", "front"), web2=ip_of(lab, "web2", "front"))
    lab.int = start_haproxy(lab, "intlb", INT, tmp_path, app1=ip_of(lab, "app1", "back"), app2=ip_of(lab, "app2", "back"))
    return lab


def test_three_tier_health_check_failed_and_request_timeout(tiers):
    lab = tiers
    # what the notes saw: the external LB marks the web tier DOWN, the internal one times out
    ext = wait_stats(lab.ext, lambda v: v == ("DOWN", "L4TOUT"))
    assert set(ext) == {("web", "web1"), ("web", "web2")}
    assert wait_stats(lab.int, lambda v: v[0] == "UP")  # its checks pass: they use port 8081
    assert lab.outside_get("http://203.0.113.2:8080/").returncode != 0  # 503: no server
    t0 = time.monotonic()
    assert lab.run("exec", "web1", "timeout", "3", "wget", "-qO-", "http://intlb/").returncode != 0
    assert time.monotonic() - t0 > 2.5  # not refused: it hangs until the client gives up

    code, r = explain(lab, "--lb", f"haproxy:{lab.ext}")
    assert code == 1 and r["down"] == 2 and r["namespace"].startswith("extlb")
    for s in r["servers"]:
        h = s["health"]
        assert (s["status"], s["check_status"]) == ("DOWN", "L4TOUT")
        assert s["check"]["type"] == "http" and s["check"]["path"] == "/" and s["check"]["host"] == "www.example"
        assert h["cause"] == "FIREWALL_DROP" and h["hop"]["label"].startswith(s["server"]), h["summary"]
        assert "policy of inet sg input" in h["summary"]  # the rule that drops: the security group's default
        assert h["verdicts"]["haproxy"]["status"] == "L4TOUT"  # netdiag's check ends like HAProxy's
        ip = ip_of(lab, s["server"], "front")
        lb = ip_of(lab, "extlb", "front")  # the fix admits the balancer, not the world
        assert f"nft insert rule inet sg input ip saddr {lb} ip daddr {ip} tcp dport 80 accept" in h["fix_command"]

    code, r = explain(lab, "--lb", f"haproxy:{lab.int}")
    assert code == 1 and r["down"] == 0 and r["traffic_failing"] == 2
    for s in r["servers"]:
        t = s["traffic"]
        assert s["status"] == "UP" and s["check"]["port"] == 8081 and s["port"] == 8080
        assert t["cause"] == "FIREWALL_DROP" and t["verdicts"]["haproxy"]["status"] == "L4TOUT"
        assert "tcp dport 8080 accept" in t["fix_command"] and t["hop"]["label"].startswith(s["server"])
    assert "traffic port 8080 fails" in r["summary"]

    # the namespace names the load balancer too; two HAProxies and no hint is a question back
    code, r = explain(lab, "extlb", "--lb", "haproxy")
    assert code == 1 and r["socket"].endswith("extlb.sock")
    assert lab.run("explain", "--lb", "haproxy").returncode == 2

    code, r = explain(lab, "--lb", f"haproxy:{lab.ext}", "--fix", "--yes")
    assert len(r["applied_fixes"]) == 2 and all(a["returncode"] == 0 for a in r["applied_fixes"])
    assert code == 0 and all(s["status"] == "UP" for s in r["recheck"]["servers"]), r["recheck"]["summary"]
    code, r = explain(lab, "--lb", f"haproxy:{lab.int}", "--fix", "--yes")
    assert len(r["applied_fixes"]) == 2 and code == 0, r.get("recheck", r)["summary"]

    # HAProxy itself, from its stats socket: every server UP; requests go through both tiers
    assert set(wait_stats(lab.ext, lambda v: v == ("UP", "L7OK")).values()) == {("UP", "L7OK")}
    assert set(wait_stats(lab.int, lambda v: v == ("UP", "L7OK")).values()) == {("UP", "L7OK")}
    assert lab.outside_get("http://203.0.113.2:8080/").stdout in ("web1\n", "web2\n")
    assert lab.run("exec", "web1", "timeout", "3", "wget", "-qO-", "http://intlb/").stdout in ("app1\n", "app2\n")
