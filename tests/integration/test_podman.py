"""A host where rootful Podman (Debian's podman with netavark and aardvark-dns) and a Docker engine
both run, in a lab: its own network namespace and, for Podman, a mount namespace of its own
(netdiag.worlds.PodmanDockerLab), one world shared by the module's tests (each test undoes what it
changes; Docker's FORWARD policy drop and netavark's accepts meet in one FORWARD chain). Podman's
containers and networks are endpoints of netdiag's model, named podman:NAME, owned by "podman";
netavark's iptables-nft rules are evaluated like Docker's; both engines' containers are traced
across the engines; a published port whose DNAT was flushed is PORT_NOT_PUBLISHED with Podman's
own fix, which, applied, makes the port answer again. Nothing is left on the machine afterwards.
A Podman host without Docker is scenario 21's (tests/integration/test_scenarios.py)."""
from __future__ import annotations

import json
import os
import shlex
import shutil

import pytest

from netdiag.worlds import HOST_IP
from netdiag.worlds.podman import BOUND, PodmanDockerLab

HAVE_ENGINES = all(shutil.which(p) for p in ("podman", "crun", "conmon", "dockerd")) and \
    os.path.exists("/usr/lib/podman/netavark")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_ENGINES, reason="podman/netavark or dockerd not installed")]

PAGE = "mkdir -p /www && echo hello-podman > /www/index.html && exec httpd -f -p 80 -h /www"


def _machine_paths() -> dict:
    """What the machine has at Podman's fixed paths (the world must not add to them): its state
    directories, and Podman's network namespaces among everyone's in /run/netns."""
    out = {p: sorted(os.listdir(p)) if os.path.isdir(p) else None for p in (*BOUND, "/run/containers", "/run/libpod")}
    return {**out, "/run/netns": sorted(n for n in os.listdir("/run/netns") if n.startswith("netns-"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    before = _machine_paths()
    lab = PodmanDockerLab(state_dir=tmp_path_factory.mktemp("podman") / "ndroot")
    try:
        lab.create()
        lab.docker("run", "-d", "--name", "dweb", lab.image, "httpd", "-f", "-p", "80")
        lab.docker("run", "-d", "--name", "web", lab.image, "sleep", "600")  # a name both engines use
        lab.podman("network", "create", "--subnet", "10.89.7.0/24", "appnet")
        lab.podman("run", "-d", "--name", "web", "--network", "appnet", "-p", "8080:80", lab.podman_image, "sh", "-c", PAGE)
        lab.podman("run", "-d", "--name", "cli", "--network", "appnet", lab.podman_image, "sleep", "600")
        lab.podman("run", "-d", "--name", "sick", "--network", "appnet", "--health-cmd", "wget -qO- http://127.0.0.1:81/",
                   "--health-interval", "1h", lab.podman_image, "httpd", "-f", "-p", "80")
        for net, subnet in (("isoa", "10.89.8.0/24"), ("isob", "10.89.9.0/24")):
            lab.podman("network", "create", "-o", "isolate=true", "--subnet", subnet, net)
            lab.podman("run", "-d", "--name", f"in-{net}", "--network", net, lab.podman_image, "sh", "-c", PAGE)
        yield lab
    finally:
        lab.destroy()
        left = lab.leaks()
        after = _machine_paths()
        assert not left, f"left behind: {left}"
        assert after == before, f"the machine's Podman paths changed: {before} -> {after}"


def _json(p) -> dict:
    assert p.stdout.strip(), p.stderr
    return json.loads(p.stdout)


def _fetch_from_docker(world, seconds: int):
    """Podman's published port fetched by Docker's container web (docker0's traffic is accepted
    by Docker's own FORWARD rules; from the outside it is not: see the FOREIGN_FIREWALL test)."""
    return world.docker("exec", "web", "timeout", str(seconds), "wget", "-qO-", f"http://{HOST_IP}:8080/", check=False)


def test_podman_runs_inside_the_world_only(world):
    """Podman's state and namespaces are the world's: the machine sees neither its network
    namespaces nor its bridges; in the world a published port answers."""
    assert not [n for n in os.listdir("/run/netns") if n.startswith("netns-")]
    assert "podman1" not in os.listdir("/sys/class/net")
    got = _fetch_from_docker(world, 5)
    assert got.stdout.strip() == "hello-podman", got.stderr


def test_dockers_forward_policy_drops_podmans_published_port_from_outside(world):
    """Docker turned forwarding on and set FORWARD's policy to drop; netavark 1.4 accepts only its
    networks' outgoing and established traffic there, so a new connection from the outside to a
    published Podman port dies at the policy: another manager's firewall. The fix goes where
    Docker keeps other people's rules (DOCKER-USER) and, applied, lets the port answer."""
    flow = ("trace", f"ns:{world.outside}", HOST_IP, "--port", "8080", "--json")
    res = _json(world.netdiag(*flow))
    assert (res["verdict"], res["cause"]) == ("blocked", "FOREIGN_FIREWALL"), res["summary"]
    assert "another network manager (docker: it governs bridge)" in res["summary"]  # not Podman: appnet is its own
    assert res["fix_command"] == "iptables -I DOCKER-USER -i podman1 -j ACCEPT && iptables -I DOCKER-USER -o podman1 -j ACCEPT"
    applied = world.run_in(None, ["sh", "-c", res["fix_command"]], env=world.user_env())
    try:
        assert applied.returncode == 0, applied.stderr
        assert _json(world.netdiag(*flow))["verdict"] == "delivered"
        got = world.outside_run("timeout", "5", "wget", "-qO-", f"http://{HOST_IP}:8080/")
        assert got.stdout.strip() == "hello-podman", got.stderr
    finally:
        for way in ("-i", "-o"):
            world.run_in(None, ["iptables", "-D", "DOCKER-USER", way, "podman1", "-j", "ACCEPT"])


def test_discovery_names_podman_containers_and_networks(world):
    out = world.state_dir / "podman-snapshot.json"
    made = world.netdiag("snapshot", "-o", str(out))
    assert made.returncode == 0, made.stderr
    snap = json.loads(out.read_text())
    web = next(c for c in snap["containers"] if c["name"] == "web" and c["runtime"] == "podman")
    assert web["runtime"] == "podman" and web["networks"]["appnet"]["ip"].startswith("10.89.7.")
    assert [(p["proto"], p["host_port"], p["ctr_port"]) for p in web["ports"]] == [("tcp", 8080, 80)]
    assert web["monitor_pid"] > 0 and web["image"] == "localhost/bbox:latest"
    net = next(n for n in snap["networks"] if n["name"] == "appnet")
    assert (net["runtime"], net["bridge"], net["subnet"]) == ("podman", "podman1", "10.89.7.0/24")
    ns = snap["namespaces"][web["ns"]]
    assert ns["label"] == "web (podman container)"

    shown = world.netdiag("inspect", "--net", "podman:web")
    assert shown.returncode == 0, shown.stderr
    assert "web (podman container)" in shown.stdout.splitlines()[0]
    assert "published 0.0.0.0:8080 -> 80/tcp" in shown.stdout
    topo = world.netdiag("topo")
    assert "bridge podman1 10.89.7.1/24  Podman network appnet" in topo.stdout, topo.stdout
    assert "web (Podman container) eth0 10.89.7." in topo.stdout


READ_BOTH_WAYS = """
import json
from netdiag.observe import podman_cli, podman_state
db = podman_state.database()
print(json.dumps({"db": db, "files": [podman_state.containers(db), podman_state.networks()],
                  "cli": [podman_cli.containers("podman"), podman_cli.networks("podman")]}, sort_keys=True))
"""


def test_podmans_files_say_what_its_cli_says(world):
    """Discovery reads libpod's state database and netavark's files instead of running podman
    (bench_podman_discovery: 26x faster at 20 containers): what it reads equals podman's own
    inspect and network ls, for every running container and network of the world."""
    import sys

    p = world.run_in(None, [sys.executable, "-c", READ_BOTH_WAYS], env=world.env, timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["db"], "no bolt_state.db on the world's Podman host"
    from operator import itemgetter

    files, cli = ([sorted(part, key=itemgetter("id")) for part in pair] for pair in (got["files"], got["cli"]))
    assert len(cli[0]) == 5 and files == cli


def test_a_podman_pod_is_one_endpoint_named_with_its_members(world):
    """A pod's containers share its infra container's network namespace: discovery draws one
    endpoint, named after the pod, its members listed; a member's name reaches the same
    namespace; the files still say what podman says (its members' networks are the infra's)."""
    import sys
    from operator import itemgetter

    world.podman("pod", "create", "--name", "mypod", "--network", "appnet", "--infra-image", world.podman_image,
                 "--infra-command", "sleep 600")  # the world has no catatonit: the busybox image holds the namespace
    try:
        world.podman("run", "-d", "--pod", "mypod", "--name", "m1", world.podman_image, "sleep", "600")
        world.podman("run", "-d", "--pod", "mypod", "--name", "m2", world.podman_image, "sh", "-c", PAGE)
        shown = world.netdiag("inspect", "--net", "podman:mypod")
        assert shown.returncode == 0 and shown.stdout.startswith("mypod (podman pod: m1, m2)"), shown.stdout + shown.stderr
        member = world.netdiag("inspect", "--net", "podman:m1")
        assert member.stdout.splitlines()[0] == shown.stdout.splitlines()[0], member.stdout
        topo = world.netdiag("topo")
        assert "mypod (Podman pod: m1, m2) eth0 10.89.7." in topo.stdout, topo.stdout
        traced = world.netdiag("trace", "podman:cli", "podman:mypod", "--port", "80", "--json")
        assert traced.returncode == 0 and "reaches mypod (podman pod: m1, m2)" in json.loads(traced.stdout)["summary"], traced.stdout

        p = world.run_in(None, [sys.executable, "-c", READ_BOTH_WAYS], env=world.env, timeout=60)
        got = json.loads(p.stdout)
        files, cli = ([sorted(part, key=itemgetter("id")) for part in pair] for pair in (got["files"], got["cli"]))
        for c in files[0]:  # podman inspect joins the entrypoint into one string; the database keeps its words
            c["entrypoint"] = [" ".join(c["entrypoint"])] if c["entrypoint"] else []
        assert len(cli[0]) == 8 and files == cli
    finally:
        world.podman("pod", "rm", "-f", "-t", "0", "mypod")


def test_trace_between_podman_containers_hop_by_hop(world):
    res = _json(world.netdiag("trace", "podman:cli", "podman:web", "--port", "80", "--json"))
    assert res["verdict"] == "delivered", res["summary"]
    path = [(h["label"], h["interface"]) for h in res["hops"] if h.get("leg") != "reply"]
    assert path[0] == ("cli (podman container)", "eth0") and ("host", "podman1") in path
    assert path[-1] == ("web (podman container)", "tcp/80")


def test_isolated_podman_networks_are_isolated(world):
    """Two networks created with -o isolate=true: netavark's isolation chains drop what goes from
    one to the other; the hop is the host's bridge and the rule is netavark's."""
    res = _json(world.netdiag("trace", "podman:in-isoa", "podman:in-isob", "--port", "80", "--json"))
    assert res["verdict"] == "blocked", res["summary"]
    assert res["cause"] == "NETWORK_ISOLATION", res["summary"]
    assert res["hops"][res["blocked_at"] - 1]["label"] == "host"
    assert "NETAVARK_ISOLATION_2" in res["summary"] and res["reconciled"].startswith("static and live agree")
    assert res["fix_command"] == "podman network connect isob in-isoa"
    connected = world.run_in(None, shlex.split(res["fix_command"]), env=world.user_env())
    try:
        assert connected.returncode == 0, connected.stderr
        after = _json(world.netdiag("trace", "podman:in-isoa", "podman:in-isob", "--port", "80", "--json"))
        assert after["verdict"] == "delivered", after["summary"]
    finally:
        world.podman("network", "disconnect", "isob", "in-isoa", check=False)


def test_flushed_hostport_dnat_is_port_not_published_with_podmans_fix(world):
    """Someone flushes the nat chain netavark hooks its published ports on: the request lands on
    conmon's reservation socket (the handshake even completes), nothing answers. netdiag names
    PORT_NOT_PUBLISHED at the host and gives Podman's command, which, run, brings the port back."""
    flow = ("trace", "docker:web", HOST_IP, "--port", "8080", "--json")
    flushed = world.run_in(None, ["iptables", "-t", "nat", "-F", "NETAVARK-HOSTPORT-DNAT"])
    assert flushed.returncode == 0, flushed.stderr
    fixed = None
    try:
        res = _json(world.netdiag(*flow))
        assert (res["verdict"], res["cause"]) == ("blocked", "PORT_NOT_PUBLISHED"), res["summary"]
        assert res["hops"][res["blocked_at"] - 1]["label"] == "host"
        assert res["fix_command"] == "podman network reload web"
        assert res["fix_check"]["delivers"] is True  # its DNAT for this flow, on a copy of the model
        assert res["reconciled"].startswith("static and live agree"), res["reconciled"]
        got = _fetch_from_docker(world, 1)
        assert got.returncode != 0 and not got.stdout  # connects to conmon's socket, and nothing ever answers
        fixed = world.run_in(None, shlex.split(res["fix_command"]), env=world.user_env())
    finally:
        if fixed is None:  # the next test gets its world back
            world.podman("network", "reload", "web", check=False)
    assert fixed.returncode == 0, fixed.stderr
    after = _json(world.netdiag(*flow))
    assert after["verdict"] == "delivered", after["summary"]
    assert _fetch_from_docker(world, 5).stdout.strip() == "hello-podman"


def test_health_from_a_podman_container_resolves_through_aardvark_dns(world):
    """`web` is resolved the way cli resolves it: the network's DNS server (aardvark-dns)."""
    p = world.netdiag("health", "http://web/", "--from", "podman:cli", "--json")
    res = _json(p)
    assert (p.returncode, res["healthy"], res["status"]) == (0, True, 200), res["summary"]


def test_explain_a_podman_containers_failing_health_check(world):
    """Podman's health check (run once by hand: without systemd nothing schedules it) is read from
    `podman inspect` and re-run from the container: nothing listens on the port it asks."""
    world.podman("healthcheck", "run", "sick", check=False)
    p = world.netdiag("explain", "podman:sick", "--json")
    res = _json(p)
    assert (res["runtime"], res["failing_streak"]) == ("podman", 1), res
    assert res["health"]["cause"] == "NO_LISTENER", res["health"]["summary"]


def test_both_engines_containers_are_traced_across_engines(world):
    to_podman = _json(world.netdiag("trace", "docker:web", HOST_IP, "--port", "8080", "--json"))
    assert to_podman["verdict"] == "delivered", to_podman["summary"]
    request = [h for h in to_podman["hops"] if h.get("leg") != "reply"]
    assert (request[0]["label"], request[-1]["label"]) == ("web (docker container)", "web (podman container)")
    assert to_podman["reconciled"] == "static and live agree"

    to_docker = _json(world.netdiag("trace", "podman:cli", "dweb", "--port", "80", "--json"))
    assert to_docker["verdict"] == "delivered", to_docker["summary"]
    request = [h for h in to_docker["hops"] if h.get("leg") != "reply"]
    assert (request[0]["label"], request[-1]["label"]) == ("cli (podman container)", "dweb (docker container)")

    ambiguous = world.netdiag("trace", "web", "dweb", "--port", "80")
    assert ambiguous.returncode == 2 and "docker:web, podman:web" in ambiguous.stderr, ambiguous.stderr
    topo = world.netdiag("topo")
    assert "docker0" in topo.stdout and "dweb (Docker container)" in topo.stdout, topo.stdout


def test_netdiags_containers_beside_both_engines_are_traced_with_theirs(world):
    """netdiag's own runtime on the same host as Docker and Podman: its containers are endpoints
    beside theirs, and a trace crosses from each engine's container to another's published port."""
    run = world.netdiag("run", "-d", "--name", "nweb", "-p", "8081:80", "busybox", "sh", "-c", PAGE)
    assert run.returncode == 0, run.stderr
    try:
        to_netdiag = _json(world.netdiag("trace", "podman:cli", HOST_IP, "--port", "8081", "--json"))
        assert to_netdiag["verdict"] == "delivered", to_netdiag["summary"]
        request = [h["label"] for h in to_netdiag["hops"] if h.get("leg") != "reply"]
        assert (request[0], request[-1]) == ("cli (podman container)", "nweb (netdiag container)"), request

        to_podman = _json(world.netdiag("trace", "nweb", HOST_IP, "--port", "8080", "--json"))
        assert to_podman["verdict"] == "delivered", to_podman["summary"]
        request = [h["label"] for h in to_podman["hops"] if h.get("leg") != "reply"]
        assert (request[0], request[-1]) == ("nweb (netdiag container)", "web (podman container)"), request

        topo = world.netdiag("topo").stdout
        assert all(s in topo for s in ("nweb (netdiag container)", "dweb (Docker container)", "cli (Podman container)")), topo
    finally:
        world.netdiag("rm", "-f", "nweb")
