"""netdiag on a host that runs Docker (a real engine inside the lab, tests/dockerkit.py): its own
networks work although Docker's FORWARD policy drops every other bridge's traffic (netdiag accepts
its bridges in DOCKER-USER, removes them with the network, restores them after Docker restarts);
and every diagnosis comes from what the dropping rule is: Docker's icc=false rule is ICC_DISABLED,
a user's rule of the same shape on a network with icc on is FIREWALL_DROP, Docker's policy killing
a netdiag network is FOREIGN_FIREWALL, a --network none Docker container is NETWORK_NONE."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.dockerkit import HAVE_DOCKER, IMAGE, docker_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")]

PAGE = "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture(scope="module")
def dl(tmp_path_factory):
    """Docker: d1, d2 on an icc=false network (httpd on 80), dnone with --network none.
    netdiag: network n with web (httpd) and cli, and def on netdiag's default bridge."""
    def setup(d):
        d.docker("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "dquiet")
        for name in ("d1", "d2"):
            d.docker("run", "-d", "--network", "dquiet", "--name", name, IMAGE, "sh", "-c", PAGE.format(body=name))
        d.docker("run", "-d", "--network", "none", "--name", "dnone", IMAGE, "sleep", "600")

    with docker_lab(tmp_path_factory.mktemp("coexist"), setup) as d:
        lab = d.lab
        p = lab.run("network", "create", "--subnet", "10.123.0.0/24", "n")
        assert p.returncode == 0, p.stderr
        d.create_note = p.stderr
        lab.ok("run", "-d", "--name", "web", "--network", "n", "busybox", "sh", "-c", PAGE.format(body="web"))
        lab.ok("run", "-d", "--name", "cli", "--network", "n", "busybox", "sleep", "600")
        lab.ok("run", "-d", "--name", "def", "busybox", "sleep", "600")
        yield d


def trace(lab, *args):
    p = lab.run("trace", *args, "--json", timeout=90)
    assert p.returncode in (0, 1, 3), p.stderr
    r = json.loads(p.stdout)
    assert p.returncode == {"delivered": 0, "blocked": 1, "unknown": 3}[r["verdict"]]
    return r


def get(lab, ctr, url):
    return lab.run("exec", ctr, "timeout", "3", "wget", "-q", "-O", "-", url, timeout=30)


def docker_user(lab) -> list[str]:
    return [line for line in lab.in_lab("iptables-nft", "-S", "DOCKER-USER").stdout.splitlines() if line.startswith("-A")]


def bridge_of(lab, net) -> str:
    return json.loads(lab.ok("network", "inspect", net))[0]["Bridge"]


def run_fix(lab, r):
    assert r["fix_command"], r["fix"]
    env = {**lab.env, "PATH": os.path.dirname(sys.executable) + os.pathsep + lab.env.get("PATH", "")}
    p = subprocess.run(["sh", "-c", r["fix_command"]], capture_output=True, text=True, env=env, timeout=60,
                       preexec_fn=lab.enter())
    assert p.returncode == 0, (r["fix_command"], p.stderr)


def test_netdiag_networks_work_next_to_docker_and_say_what_they_did(dl):
    lab = dl.lab
    br, default_br = bridge_of(lab, "n"), bridge_of(lab, "bridge")
    assert "DOCKER-USER" in dl.create_note and br in dl.create_note  # said once, on stderr, what and why
    rules = docker_user(lab)
    for b in (br, default_br):
        assert f'-A DOCKER-USER -i {b} -m comment --comment "netdiag:{b}" -j ACCEPT' in rules
        assert f'-A DOCKER-USER -o {b} -m comment --comment "netdiag:{b}" -j ACCEPT' in rules
    assert rules[-1] == "-A DOCKER-USER -j RETURN"  # Docker's own rule stays, after ours
    assert get(lab, "cli", "http://web/").stdout == "web\n"            # bridged, through br_netfilter's FORWARD
    assert get(lab, "def", "http://203.0.113.1/").stdout == "outside\n"  # routed out of the default bridge
    # netdiag's own rules still isolate its networks: Docker's accept took only Docker's policy away
    def_ip = json.loads(lab.ok("inspect", "def"))[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    r = trace(lab, "cli", def_ip, "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NETWORK_ISOLATION"), r["summary"]
    foreign = json.loads(lab.ok("network", "inspect", "n"))[0]["ForeignRules"]
    assert {(f["table"], f["chain"], f["rule"]) for f in foreign} >= {
        ("ip filter", "FORWARD", "policy drop"), ("ip filter", "DOCKER-USER", f"-i {br} -j ACCEPT"),
        ("ip filter", "DOCKER-USER", f"-o {br} -j ACCEPT")}


def test_dockers_policy_killing_a_netdiag_network_is_a_foreign_firewall_with_the_docker_user_fix(dl):
    lab = dl.lab
    br = bridge_of(lab, "n")
    for line in docker_user(lab):  # what a Docker restart on an older engine, or a firewall reload, does
        if f"netdiag:{br}" in line:
            assert lab.in_lab("iptables-nft", *shlex.split("-D" + line[2:])).returncode == 0
    assert get(lab, "cli", "http://web/").returncode != 0
    r = trace(lab, "cli", "web", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "FOREIGN_FIREWALL"), r["summary"]
    assert r["fix_command"] == f"iptables -I DOCKER-USER -i {br} -j ACCEPT && iptables -I DOCKER-USER -o {br} -j ACCEPT"
    assert r["fix_check"]["delivers"], r["fix_check"]
    assert any(e["kind"] == "nft_trace" and "FORWARD policy" in e["detail"] for e in r["evidence"])  # the kernel saw it
    run_fix(lab, r)
    assert get(lab, "cli", "http://web/").stdout == "web\n"
    for line in docker_user(lab):  # the user's untagged rules did it; remove them, netdiag restores its own
        if f" {br} " in line and "netdiag" not in line:
            assert lab.in_lab("iptables-nft", *shlex.split("-D" + line[2:])).returncode == 0
    lab.ok("network", "ls")  # reading changes nothing
    assert f'-A DOCKER-USER -i {br} -m comment --comment "netdiag:{br}" -j ACCEPT' not in docker_user(lab)
    lab.ok("system", "repair")
    assert f'-A DOCKER-USER -i {br} -m comment --comment "netdiag:{br}" -j ACCEPT' in docker_user(lab)
    assert get(lab, "cli", "http://web/").stdout == "web\n"


def test_dockers_icc_disabled_network_is_icc_disabled_at_dockers_rule(dl):
    r = trace(dl.lab, "d1", "d2", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "ICC_DISABLED"), r["summary"]
    rule = next(e for e in r["evidence"] if e["kind"] == "nft_rule")
    assert (rule["table"], rule["chain"]) == ("ip filter", "FORWARD") and "-j DROP" in rule["detail"]
    assert r["reconciled"].startswith("static and live agree")
    drops = [e for e in r["live"]["nftrace"] if e["verdict"] == "drop"]
    assert drops and drops[0]["handle"] == rule["handle"]  # the kernel's trace names the same rule


def test_a_users_rule_of_the_icc_shape_on_a_network_with_icc_on_is_a_firewall_drop(dl):
    lab = dl.lab
    br = bridge_of(lab, "n")
    lab.in_lab("iptables-nft", "-I", "FORWARD", "-i", br, "-o", br, "-j", "DROP")
    try:
        r = trace(lab, "cli", "web", "--port", "80")
        assert (r["verdict"], r["cause"]) == ("blocked", "FIREWALL_DROP"), r["summary"]
        assert r["fix_command"] == f"iptables -t filter -D FORWARD -i {br} -o {br} -j DROP"
        assert r["fix_check"]["delivers"]
        run_fix(lab, r)
        assert trace(lab, "cli", "web", "--port", "80")["verdict"] == "delivered"
    finally:
        lab.in_lab("iptables-nft", "-D", "FORWARD", "-i", br, "-o", br, "-j", "DROP")


def test_a_docker_network_none_container_is_network_none(dl):
    lab = dl.lab
    r = trace(lab, "host", "dnone", "--proto", "icmp")
    assert (r["verdict"], r["cause"], r["dst_ip"]) == ("blocked", "NETWORK_NONE", None), r["summary"]
    assert r["fix_command"].startswith("docker rm -f dnone && docker run -d --name dnone")
    r = trace(lab, "dnone", "203.0.113.1", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NETWORK_NONE")


def test_a_plain_bridge_under_dockers_forward_policy_is_a_foreign_firewall_fixed_both_ways(dl):
    """A Linux bridge made by hand (no runtime's network) with two plain namespaces, on the host
    where Docker's FORWARD policy drops and br_netfilter hands bridged frames to iptables: the
    trace names FOREIGN_FIREWALL, and its fix (DOCKER-USER, the bridge's traffic both ways),
    applied as printed, lets real connections through in both directions."""
    from tests.dockerkit import plain_bridge_under_docker
    from tests.integration.test_verdicts import connect

    lab = dl.lab
    with plain_bridge_under_docker(lab) as (br, names, ips):
        assert connect(names["a"], ips["b"], 8080, timeout=2) is None  # dropped for real before netdiag looks
        r = trace(lab, f"ns:{names['a']}", ips["b"], "--port", "8080")
        assert (r["verdict"], r["cause"]) == ("blocked", "FOREIGN_FIREWALL"), (r["summary"], r.get("reconciled"))
        assert r["hops"][r["blocked_at"] - 1]["label"] == "host"
        assert r["fix_command"] == f"iptables -I DOCKER-USER -i {br} -o {br} -j ACCEPT", r["fix_command"]
        assert r["fix_check"]["checked"] and r["fix_check"]["delivers"], r["fix_check"]
        run_fix(lab, r)
        assert connect(names["a"], ips["b"], 8080) == 1 and connect(names["b"], ips["a"], 8080) == 1  # both ways
        assert trace(lab, f"ns:{names['b']}", ips["a"], "--port", "8080")["verdict"] == "delivered"
        assert get(lab, "cli", "http://web/").stdout == "web\n"  # the control flow: netdiag's own network still works


def test_docker_user_rules_come_back_after_docker_restarts_and_go_with_the_network(dl):
    lab, engine = dl.lab, dl.engine
    br = bridge_of(lab, "n")
    engine.proc.terminate()
    engine.proc.wait(30)
    engine.start()
    lab.ok("system", "repair")  # as after a reboot: dockerd first, then netdiag puts its rules back
    assert f'-A DOCKER-USER -i {br} -m comment --comment "netdiag:{br}" -j ACCEPT' in docker_user(lab)
    assert get(lab, "cli", "http://web/").stdout == "web\n"
    lab.ok("rm", "-f", "web", "cli")
    lab.ok("network", "rm", "n")
    assert not [line for line in docker_user(lab) if br in line]
