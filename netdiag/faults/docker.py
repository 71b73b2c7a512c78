"""Worlds of a real Docker engine, and the faults a Docker user makes in them.

The world: a Docker lab (netdiag.worlds.DockerLab, the one the tests use too: a lab host running a
private dockerd, every state directory private, all of it removed again), with busybox imported
as an image (no registry is reachable) and a user-defined network on a random subnet. Docker's defaults apply inside the lab as on a Docker host: docker0,
its iptables-nft rules, FORWARD policy drop (the lab starts with ip_forward=0, so dockerd turns
forwarding on and sets the policy itself), br_netfilter's bridge-nf-call-iptables=1.

The server container `web` runs busybox httpd on the flow's port and a control port; each kind
adds the client (`cli`) itself. Faults are made with Docker's own commands, as a user makes them;
the fixes they must get are Docker commands (`docker run -p`, `docker network connect`, ...)
run against the lab's dockerd: fix_env() points DOCKER_HOST at its socket. One kind puts a plain
Linux bridge with two namespaces next to Docker: the FORWARD policy drops its traffic too, and
the fix belongs in DOCKER-USER.

A dockerd takes seconds to start and to stop: these kinds run less often in a plan (`every`).
"""
from __future__ import annotations

import subprocess
import time

from .catalogue import Expect, Flow, kind
from .world import PAGE, AppWorld

SHAPE = "docker"
IMAGE = "bbox"
EVERY = 3  # a docker kind takes part in every third round of a plan: dockerd is slow to start and stop


class DockerWorld(AppWorld):
    shape = SHAPE
    engine = "docker"
    image = IMAGE
    net_prefix = "dn"

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.lab.docker(*args, check=check, timeout=timeout)

    docker = cli  # the fault kinds say what they run


def build(seed: int) -> DockerWorld:
    """A lab running its own dockerd (busybox imported), with one user-defined network."""
    from netdiag.worlds import DockerLab

    return DockerWorld(seed, DockerLab(image=IMAGE)).create()


def _healthy(w: DockerWorld) -> None:
    """The world works before the fault: the control flow answers (httpd may need a moment)."""
    for _ in range(20):
        if w.connects(w.control_port, timeout=1):
            return
    raise RuntimeError("the docker world does not work before any fault")


def docker_kind(name: str, note: str = ""):
    return kind(name, (SHAPE,), note=note, every=EVERY)


@docker_kind("docker-icc-disabled")
def _(w, rng):
    quiet = w.network + "q"
    w.docker("network", "create", "--subnet", w.subnets[1], "-o", "com.docker.network.bridge.enable_icc=false", quiet)
    w.start_server("--network", quiet)
    w.start_client("--network", quiet)
    return Expect("ICC_DISABLED", None, Flow(w.client, w.server_ip, w.port), detail="enable_icc=false on their Docker network")


@docker_kind("docker-network-isolation")
def _(w, rng):
    other = w.network + "b"
    w.docker("network", "create", "--subnet", w.subnets[1], other)
    w.start_server("--network", w.network)
    w.start_client("--network", other)
    return Expect("NETWORK_ISOLATION", None, Flow(w.client, w.server_ip, w.port),
                  detail="cli and web on different Docker networks")


@docker_kind("docker-network-none")
def _(w, rng):
    w.start_server("--network", w.network)
    w.start_client("--network", "none")
    return Expect("NETWORK_NONE", w.client, Flow(w.client, w.server_ip, w.port), detail="cli runs with --network none")


@docker_kind("docker-port-not-published")
def _(w, rng):
    from netdiag.worlds import HOST_IP

    w.start_server("--network", w.network)
    w.start_client("--network", w.network)
    _healthy(w)
    return Expect("PORT_NOT_PUBLISHED", None, Flow(f"ns:{w.lab.outside}", HOST_IP, w.port),
                  detail="web listens, but Docker publishes none of its ports")


@docker_kind("docker-port-on-127.0.0.1-only")
def _(w, rng):
    """Published on 127.0.0.1 only: Docker's DNAT matches 127.0.0.1 and its docker-proxy listens
    there; from the outside the port is not published. The fix is Docker's (`docker run -p`), not
    docker-proxy's (a process Docker owns)."""
    from netdiag.worlds import HOST_IP

    w.start_server("--network", w.network, "-p", f"127.0.0.1:{w.port}:{w.port}")
    w.start_client("--network", w.network)
    _healthy(w)
    return Expect("PORT_NOT_PUBLISHED", None, Flow(f"ns:{w.lab.outside}", HOST_IP, w.port),
                  detail="web's port published on 127.0.0.1 only, reached from the outside")


@docker_kind("foreign-firewall-plain-bridge")
def _(w, rng):
    """A plain Linux bridge with two namespaces on the Docker host: Docker's FORWARD policy drop
    (br_netfilter hands bridged frames to iptables) kills its traffic, which Docker does not manage.
    The fix is an accept in DOCKER-USER, both directions of that bridge."""
    from runtime.kernel import ns

    if "-P FORWARD DROP" not in w.run(None, "iptables-nft", "-S", "FORWARD").stdout:
        raise RuntimeError("dockerd left FORWARD at accept: the lab inherited ip_forward=1?")
    w.sysctl(None, "net/bridge/bridge-nf-call-iptables", "1")  # what a Docker host has, set rather than inherited
    br = f"pb{rng.randrange(16**4):04x}"
    net = f"10.{rng.randrange(1, 255)}.{rng.randrange(256)}"
    ips = {k: f"{net}.{n}" for k, n in zip("ab", rng.sample(range(2, 250), 2))}
    w.run(None, "ip", "link", "add", br, "type", "bridge")
    w.run(None, "ip", "link", "set", br, "up")
    for k in "ab":
        name = f"{w.lab.name}-p{k}"
        ns.create(name)
        w.extra_ns.append(name)
        w.run(None, "ip", "link", "add", f"{br}{k}", "type", "veth", "peer", "name", "eth0", "netns", name)
        w.run(None, "ip", "link", "set", f"{br}{k}", "master", br)
        w.run(None, "ip", "link", "set", f"{br}{k}", "up")
        for argv in (["addr", "add", f"{ips[k]}/24", "dev", "eth0"], ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
            w.run(name, "ip", *argv)
    a, b = w.extra_ns
    www = w.lab.state_dir / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(PAGE)
    from runtime.kernel.ns import enter

    for port in (w.port, w.control_port):
        w.procs.append(subprocess.Popen(["busybox", "httpd", "-f", "-p", f"{ips['b']}:{port}", "-h", str(www)],
                                        preexec_fn=enter(w.ns_path(b)), start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    w.client, w.server, w.server_ip = f"ns:{a}", f"ns:{b}", ips["b"]
    for _ in range(50):  # both httpds listening
        if len(w.run(b, "ss", "-Htln").stdout.strip().splitlines()) >= 2:
            break
        time.sleep(0.05)
    return Expect("FOREIGN_FIREWALL", None, Flow(w.client, w.server_ip, w.port),
                  detail="a plain bridge under Docker's FORWARD policy drop")


@docker_kind("docker-internal-network")
def _(w, rng):
    """The client lives on an --internal network only: Docker lets nothing leave it. The fix gives
    it a second, non-internal network (Docker's default bridge)."""
    from netdiag.worlds import OUTSIDE_IP
    from runtime.kernel.ns import enter

    inner = w.network + "i"
    w.docker("network", "create", "--internal", "--subnet", w.subnets[1], inner)
    w.start_server("--network", w.network)
    w.start_client("--network", inner)
    www = w.lab.state_dir / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(PAGE)
    w.procs.append(subprocess.Popen(["busybox", "httpd", "-f", "-p", f"{OUTSIDE_IP}:{w.port}", "-h", str(www)],
                                    preexec_fn=enter(w.ns_path(w.lab.outside)), start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for _ in range(50):
        if w.run(w.lab.outside, "ss", "-Htln", f"sport = :{w.port}").stdout.strip():
            break
        time.sleep(0.05)
    return Expect("INTERNAL_NETWORK", None, Flow(w.client, OUTSIDE_IP, w.port),
                  detail="cli on an --internal Docker network reaches for the outside")


@docker_kind("docker-user-rule-drops-published-port")
def _(w, rng):
    """A user's rule in DOCKER-USER (Docker's place for them) drops the published port's traffic:
    FIREWALL_DROP, the rule named and removed."""
    from netdiag.worlds import HOST_IP

    w.start_server("--network", w.network, "-p", f"{w.port}:{w.port}")
    w.start_client("--network", w.network)
    _healthy(w)
    w.run(None, "iptables-nft", "-I", "DOCKER-USER", "-p", "tcp", "--dport", str(w.port), "-j", "DROP")
    return Expect("FIREWALL_DROP", None, Flow(f"ns:{w.lab.outside}", HOST_IP, w.port),
                  detail="DOCKER-USER drops the published port")
