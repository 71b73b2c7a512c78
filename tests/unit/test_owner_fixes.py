"""Fixes at the owner's level over model data (no root): the runtime's command for what the runtime
manages (a --network none container recreated where it can reach its peer, a port published on
127.0.0.1 only republished, never "restart docker-proxy"), and never a placeholder in a command."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.snapshot_model import Model
from netdiag.reason import fixes
from netdiag.reason.static_trace import run_static

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


@pytest.fixture
def model():
    return Model(copy.deepcopy(FIXTURE))


def ctr(model, name):
    return next(c for c in model.containers() if c["name"] == name)


def outside(m):
    return "ns:" + next(n for ns in m.namespaces.values() for n in ns["netns_names"] if n.endswith("-out"))


def network_none(model, name):
    """Make container `name` a --network none container: lo only, no network, no route."""
    c = ctr(model, name)
    ns = model.namespaces[c["ns"]]
    ns["links"] = [link for link in ns["links"] if link["kind"] == "loopback"]
    ns["addresses"] = [a for a in ns["addresses"] if a["ifname"] == "lo"]
    ns["routes"] = [r for r in ns["routes"] if r.get("dev") == "lo"]
    c.update(networks={}, network_mode="none", command=["sleep", "3600"])
    return c


@pytest.mark.parametrize("runtime", ["netdiag", "docker"])
def test_a_network_none_client_is_recreated_on_the_servers_network_not_the_default_bridge(model, runtime):
    for c in model.containers():
        c["runtime"] = runtime
    db_ip = ctr(model, "db")["networks"]["back"]["ip"]
    network_none(model, "api")
    r, fix = run_static(model, "api", db_ip, port=5432)
    assert (r.verdict, r.cause) == ("blocked", "NETWORK_NONE"), r.summary
    # the default bridge reaches no user-defined network: the client goes where db is
    assert fix.command == f"{runtime} rm -f api && {runtime} run -d --name api --network back busybox sleep 3600"
    assert "network back, where db is" in fix.advice


def test_a_network_none_server_is_recreated_on_the_clients_network(model):
    network_none(model, "api")
    r, fix = run_static(model, "db", "api", port=80)
    assert (r.verdict, r.cause) == ("blocked", "NETWORK_NONE"), r.summary
    assert fix.command == "netdiag rm -f api && netdiag run -d --name api --network back busybox sleep 3600"


def test_a_network_none_container_of_another_runtime_than_its_peer_goes_to_the_default_bridge(model):
    ctr(model, "db")["runtime"] = "docker"  # netdiag's api cannot join Docker's network
    db_ip = ctr(model, "db")["networks"]["back"]["ip"]
    network_none(model, "api")
    _, fix = run_static(model, "api", db_ip, port=5432)
    assert fix.command == "netdiag rm -f api && netdiag run -d --name api busybox sleep 3600"


def publish_on_loopback_only(model, proxy: bool):
    """web's 8080->80 published on 127.0.0.1 only: the DNAT matches 127.0.0.1 alone; with `proxy`, a
    runtime's userland proxy (docker-proxy) listens on 127.0.0.1:8080 on the host, as Docker's does."""
    web = ctr(model, "web")
    web["ports"][0]["host_ip"] = "127.0.0.1"
    host = model.namespaces[model.snap["host"]]
    for item in host["nftables"]["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"] == "published" and rule.get("handle") == 9:
            rule["expr"].insert(0, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                                              "right": "127.0.0.1"}})
    if proxy:
        host["sockets"].append({"family": 4, "inode": 1, "local": "127.0.0.1", "loopback_only": True, "pid": 4242,
                                "port": 8080, "process": "docker-proxy", "proto": "tcp", "state": "LISTEN"})
    return web


@pytest.mark.parametrize("proxy", [True, False])
def test_a_port_published_on_127_0_0_1_only_is_republished_by_the_runtime_not_by_restarting_its_proxy(model, proxy):
    publish_on_loopback_only(model, proxy)
    r, fix = run_static(model, outside(model), "203.0.113.2", port=8080)
    assert (r.verdict, r.cause) == ("blocked", "PORT_NOT_PUBLISHED"), r.summary
    assert "127.0.0.1 only" in r.summary
    assert fix.command == "netdiag rm -f web && netdiag run -d --name web -p 8080:80/tcp busybox"
    assert "docker-proxy" not in fix.text() and "restart" not in fix.text()


def test_a_port_on_127_0_0_1_from_the_host_itself_is_still_delivered(model):
    publish_on_loopback_only(model, proxy=True)
    r, _ = run_static(model, "host", "127.0.0.1", port=8080)
    assert r.verdict == "delivered", r.summary


def test_recreate_never_prints_a_placeholder():
    c = {"name": "web", "runtime": "docker", "image": "", "command": ["httpd"], "ports": []}
    assert fixes.recreate(c) == ""  # no command rather than one with IMAGE in it
    c["image"] = "nginx:1.25"
    c["ports"] = [{"proto": "tcp", "ctr_port": 80, "host_ip": "0.0.0.0", "host_port": 8080},
                  {"proto": "tcp", "ctr_port": 80, "host_ip": "::", "host_port": 8080}]  # Docker lists both families
    assert fixes.recreate(c) == "docker rm -f web && docker run -d --name web -p 8080:80/tcp nginx:1.25 httpd"


def test_a_network_none_container_without_a_known_image_gets_a_manual_fix(model):
    network_none(model, "api")["image"] = ""
    _, fix = run_static(model, "db", "api", port=80)
    assert fix.command == "" and "manual" in fix.advice and "--network back" in fix.advice
    assert "IMAGE" not in fix.text()


def test_a_loopback_listener_named_in_the_containers_command_is_recreated_listening_everywhere(model):
    api = ctr(model, "api")
    api["command"] = ["httpd", "-f", "-p", "127.0.0.1:9000"]
    r, fix = run_static(model, "db", "api", port=9000)
    assert r.cause == "LISTENER_LOOPBACK_ONLY"
    assert fix.command == "netdiag rm -f api && netdiag run -d --name api --network back busybox httpd -f -p 0.0.0.0:9000"
    api["command"] = ["python3", "app.py"]  # where it listens is the program's own business
    _, fix = run_static(model, "db", "api", port=9000)
    assert fix.command == "" and "manual" in fix.advice and "no command" in fix.advice


def test_recreate_keeps_a_docker_images_entrypoint_once():
    """Docker reports the command as Path + Args, the entrypoint's head first: recreated as is, the
    image's entrypoint would run in front of it a second time."""
    c = {"name": "web", "runtime": "docker", "image": "nginx", "entrypoint": ["/docker-entrypoint.sh"],
         "command": ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"], "ports": []}
    assert fixes.recreate(c, network="front") == ("docker rm -f web && docker run -d --name web --network front "
                                                  "--entrypoint /docker-entrypoint.sh nginx nginx -g 'daemon off;'")


@pytest.mark.parametrize("subnet,cause", [("10.50.0.0/24", "INTERNAL_NETWORK"), ("10.51.0.0/24", "FIREWALL_DROP")])
def test_a_fence_around_an_internal_networks_subnet_is_internal_network(model, subnet, cause):
    """Docker keeps an internal network's traffic in with `-i BR ! -d SUBNET -j DROP`: an interface
    and the network's own subnet negated. That shape around the network's subnet is INTERNAL_NETWORK
    (its fix: a second network for the sender); around another subnet it is a user's rule."""
    back = next(n for n in model.snap["networks"] if n["name"] == "back")
    back["internal"] = True
    assert back["subnet"] == "10.50.0.0/24"
    h = model.namespaces[model.snap["host"]]
    net, plen = subnet.split("/")
    h["nftables"]["nftables"] += [
        {"chain": {"family": "ip", "table": "mine", "name": "fw", "type": "filter", "hook": "forward", "prio": -10, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "mine", "chain": "fw", "handle": 5, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": back["bridge"]}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                       "right": {"prefix": {"addr": net, "len": int(plen)}}}}, {"drop": None}]}}]
    r, fix = run_static(model, "api", "203.0.113.1", port=80)
    assert (r.verdict, r.cause) == ("blocked", cause), r.summary
    if cause == "INTERNAL_NETWORK":
        assert fix.command == "netdiag network connect bridge api"


def test_no_fix_text_in_the_source_carries_a_placeholder():
    """IMAGE, THAT_ADDRESS, `network create NET`: a printed fix names real things or says it is manual."""
    import re

    root = Path(__file__).parents[2] / "netdiag"
    src = {p: p.read_text() for d in ("reason", "health", "check") for p in (root / d).glob("*.py")}
    bad = {str(p.relative_to(root)): m.group(0) for p, text in src.items()
           for m in re.finditer(r'"IMAGE"|THAT_[A-Z]+|network create NET\b|--network NET\b', text)}
    assert not bad, bad


def test_nothing_listening_gets_an_explicit_manual_fix(model):
    """No listener: which program should listen, started how, is the application's; the fix says
    so instead of printing a command with a placeholder."""
    r, fix = run_static(model, "db", "api", port=9001)
    assert r.cause == "NO_LISTENER"
    assert fix.command == "" and "(manual: " in fix.advice and "no command is given" in fix.advice
