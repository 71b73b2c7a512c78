"""Random worlds for fault injection, built from a seed on netdiag.worlds' worlds and interface.

FaultWorld is what every fault world shares (containers.py and docker.py build theirs on it, on a
host lab and a Docker lab); the plain world below is built in a host lab.

A world is a client namespace and a server namespace around the lab host, in one of three shapes:
- `routed`:  client -- host -- server, the host routes between two subnets;
- `chain`:   client -- host -- router -- server, a second router namespace on the way;
- `bridged`: client and server on a plain Linux bridge in the host (one subnet, the host's
  address on the bridge is their gateway).
Subnets, interface names and ports are drawn from the seed. The server runs busybox httpd on the
flow's port and on a control port (a UDP echo too where a kind needs one); every sysctl the world
relies on is set, never inherited.
"""
from __future__ import annotations

import ipaddress
import os
import random
import shlex
import signal
import subprocess
import time

from netdiag.worlds import World as World_
from netdiag.worlds.leftovers import netns_left


def kill_session(p: subprocess.Popen) -> None:
    """A server the world started in a session of its own, with everything it forked: httpd forks a
    child per connection, and one stuck behind a planted fault (an MTU black hole) outlives a
    parent killed alone."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:  # not a session of its own after all: the process alone
        p.kill()
    p.wait()

SHAPES = ("routed", "chain", "bridged")
# what a world relies on, set in every namespace of it: a Docker host has ip_forward=1 and
# br_netfilter, and new namespaces inherit the first (bridge-nf-call-* is per namespace)
FRESH_SYSCTLS = (("net/ipv4/ip_forward", "0"), ("net/ipv4/conf/all/rp_filter", "0"),
                 ("net/ipv4/conf/default/rp_filter", "0"), ("net/bridge/bridge-nf-call-iptables", "0"),
                 ("net/bridge/bridge-nf-call-arptables", "0"))
PAGE = "netdiag fault world\n"
# a UDP echo server (argv: address port) and a client that proves a request answered (argv: address
# port size timeout); Python, not busybox: busybox's `nc -u -l` serves one peer and then exits
UDP_ECHO = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"""
UDP_ASK = """import os, socket, sys
dst, port, size, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(timeout)
s.connect((dst, port))
ask = os.urandom(max(size, 16))
s.send(ask)
sys.exit(0 if s.recv(65535) == ask else 1)
"""


class FaultWorld(World_):
    """What every fault world shares: a world of netdiag.worlds (`lab`: a host lab, a Docker lab, a
    cluster) that it creates first and destroys last, programs run in its namespaces, processes
    and namespaces a kind adds (`procs`, `extra_ns`: destroy() removes them, leaks() checks them).
    A subclass builds on the lab in `setup()`; World_.create() tears everything down when it fails."""

    shape = ""

    def __init__(self, seed: int, lab):
        self.seed, self.lab, self.name = seed, lab, lab.name
        self.procs: list[subprocess.Popen] = []
        self.extra_ns: list[str] = []

    @property
    def env(self) -> dict:
        return self.lab.env

    def _build(self) -> None:
        self.lab.create()
        self.setup()

    def setup(self) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        from runtime.kernel import ns

        for p in self.procs:
            kill_session(p)
        try:
            for name in self.extra_ns:
                ns.remove(name)
        finally:
            self.lab.destroy()

    def _leftovers(self) -> list[str]:
        return netns_left(self.extra_ns) + self.lab._leftovers()

    # -- running things -------------------------------------------------------------------------
    def namespace(self, where: str | None = None) -> str:
        """A namespace by name ("ns:NAME" too); None: the lab host."""
        return self.lab.namespace(where.removeprefix("ns:") if where else None)

    def ns_path(self, ns: str | None) -> str:
        return self.namespace(ns)

    def run(self, ns: str | None, *argv: str, input: str | None = None, check: bool = True,
            timeout: float = 20) -> subprocess.CompletedProcess:
        """argv in namespace `ns` (None: the lab host); RuntimeError on a failure when `check`."""
        p = self.run_in(ns, argv, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {ns or 'host'}: {p.stderr.strip()}")
        return p

    def ip(self, ns: str | None, *args: str) -> str:
        return self.run(ns, "ip", *args).stdout

    def nft(self, ns: str | None, script: str) -> None:
        self.run(ns, "nft", "-f", "-", input=script)

    def sysctl(self, ns: str | None, key: str, value: str) -> None:
        from runtime.kernel import sysctl
        from runtime.kernel.ns import netns

        with netns(self.namespace(ns)):
            sysctl.write(key, value)

    def fix_env(self) -> dict:
        """What a user's shell has on the lab host: netdiag on PATH, the lab's state (and, in a
        Docker lab, the docker CLI pointed at the lab's engine: a fix never reaches another one)."""
        return self.lab.user_env()

    def refresh(self) -> None:
        """After a fix: nothing of a plain world moves."""


class AppWorld(FaultWorld):
    """A world of one engine's containers (netdiag's: containers.py; Docker's: docker.py): a user
    network on a random subnet, a server container `web` (busybox httpd on the flow's port and a
    control port) and a client container `cli`, made with the engine's CLI (`cli(...)`) as a user
    makes them. A kind may put plain namespaces in their place ("ns:NAME")."""

    engine = ""  # how trace names the engine's containers: "web (docker container)"
    image = "busybox"
    net_prefix = "net"

    def __init__(self, seed: int, lab):
        super().__init__(seed, lab)
        rng = random.Random(seed)
        self.port, self.control_port = rng.sample(range(1024, 60000), 2)
        # 10.x only: Docker's docker0 takes 172.17.0.0/16, and its default pools the rest of 172.16/12
        self.subnets = [f"10.{rng.randrange(1, 255)}.{n}.0/24" for n in rng.sample(range(256), 2)]
        self.network = f"{self.net_prefix}{rng.randrange(16**4):04x}"
        self.server, self.client = "web", "cli"  # a container name, or "ns:NAME" for a plain namespace
        self.server_ip = ""

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The engine's CLI (netdiag, docker); RuntimeError on a failure when `check`."""
        raise NotImplementedError

    def setup(self) -> None:
        self.cli("network", "create", "--subnet", self.subnets[0], self.network)

    def server_cmd(self) -> list[str]:
        script = (f"mkdir -p /www && printf {shlex.quote(PAGE)} > /www/index.html && "
                  f"httpd -p {self.control_port} -h /www && exec httpd -f -p {self.port} -h /www")
        return ["sh", "-c", script]

    def start_server(self, *opts: str) -> None:
        self.cli("run", "-d", "--name", self.server, *opts, self.image, *self.server_cmd())
        self.server_ip = self.address(self.server)

    def start_client(self, *opts: str) -> None:
        self.cli("run", "-d", "--name", self.client, *opts, self.image, "sleep", "3600")

    def address(self, container: str) -> str:
        import json

        nets = json.loads(self.cli("inspect", container).stdout)[0]["NetworkSettings"]["Networks"] or {}
        return next((n["IPAddress"] for n in nets.values() if n.get("IPAddress")), "")

    def label(self, at: str | None) -> str:
        if at is None:
            return "host"
        return f"ns:{at.removeprefix('ns:')}" if at.startswith("ns:") or at in self.extra_ns else f"{at} ({self.engine} container)"

    def _in(self, src: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess | None:
        """argv from `src`: a container (the engine's exec) or a plain namespace ("ns:NAME")."""
        try:
            if src.startswith("ns:"):
                return self.run(src, *argv, check=False, timeout=timeout)
            return self.cli("exec", src, *argv, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def connects(self, port: int | None = None, src: str | None = None, dst: str | None = None,
                 timeout: float = 3) -> bool:
        url = f"http://{dst or self.server_ip}:{port or self.port}/index.html"
        p = self._in(src or self.client, ["timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url], timeout + 10)
        return p is not None and p.returncode == 0 and p.stdout == PAGE

    def pings(self, src: str, dst: str) -> bool:
        p = self._in(src, ["ping", "-c", "1", "-W", "1", dst], 15)
        return p is not None and p.returncode == 0

    def refresh(self) -> None:
        """After a fix: a recreated (or reconnected) server may have a new address."""
        if not self.server.startswith("ns:") and self.cli("inspect", self.server, check=False).returncode == 0:
            self.server_ip = self.address(self.server) or self.server_ip


class World(FaultWorld):
    """The plain world: a client and a server namespace around the lab host, in one of SHAPES,
    drawn from the seed (its shape too, unless given)."""

    def __init__(self, seed: int, shape: str | None = None):
        from netdiag.worlds import Lab

        rng = random.Random(seed)
        self.shape = shape or rng.choice(SHAPES)
        super().__init__(seed, Lab())
        self._rng = rng
        self.client, self.server = f"{self.name}-c", f"{self.name}-s"
        self.router = f"{self.name}-r" if self.shape == "chain" else None
        self._nets = _subnets(rng, 3)
        self.subnets = [str(n) for n in self._nets]
        self.port, self.control_port = rng.sample(range(1024, 60000), 2)
        self.www = self.lab.state_dir / "www"
        self.host_client_if, self.host_server_if = _ifname(rng, "vc"), _ifname(rng, "vs")  # the bridge's ports when bridged
        self.bridge = _ifname(rng, "br") if self.shape == "bridged" else None
        self.client_ip = self.server_ip = self.client_gw = self.server_gw = ""
        self.servers: dict[int, subprocess.Popen] = {}
        self.udp_servers: dict[int, subprocess.Popen] = {}

    def serve(self, port: int, ns: str | None = None, address: str | None = None) -> None:
        """busybox httpd on address:port in `ns` (the server's address by default)."""
        self.stop_server(port)
        bind = f"{address or self.server_ip}:{port}"
        self.servers[port] = subprocess.Popen(["busybox", "httpd", "-f", "-p", bind, "-h", str(self.www)],
                                              preexec_fn=self.enter(ns or self.server), start_new_session=True,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self, ns or self.server, port)

    def serve_udp(self, port: int, ns: str | None = None, address: str | None = None) -> None:
        """A UDP echo on address:port in `ns` (the server's address by default)."""
        import sys

        self.stop_server(port, udp=True)
        self.udp_servers[port] = subprocess.Popen([sys.executable, "-c", UDP_ECHO, address or self.server_ip, str(port)],
                                                  preexec_fn=self.enter(ns or self.server), start_new_session=True,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self, ns or self.server, port, udp=True)

    def stop_server(self, port: int, udp: bool = False) -> None:
        p = (self.udp_servers if udp else self.servers).pop(port, None)
        if p:
            kill_session(p)

    def connects(self, port: int | None = None, src: str | None = None, dst: str | None = None,
                 timeout: float = 3, pad: int = 0) -> bool:
        """A real HTTP request (request and response: both directions) from the client, without
        netdiag: busybox wget, bounded by `timeout` (busybox's own -T is broken on Debian 12).
        `pad`: a header of that many bytes makes the request fill full-size segments (DF set, as
        TCP sets it), so an MTU step on the way is crossed for real."""
        url = f"http://{dst or self.server_ip}:{port or self.port}/index.html"
        header = ["--header", "X-Pad: " + "x" * pad] if pad else []
        p = self.run(_ns(src) or self.client, "timeout", str(timeout), "busybox", "wget", "-q", *header, "-O", "-", url,
                     check=False, timeout=timeout + 5)
        return p.returncode == 0 and p.stdout == PAGE

    def answers_udp(self, port: int, src: str | None = None, dst: str | None = None, size: int = 0,
                    timeout: float = 2) -> bool:
        """A real UDP request answered: a datagram sent from the client and the echo's same bytes back."""
        import sys

        p = self.run(_ns(src) or self.client, sys.executable, "-c", UDP_ASK, dst or self.server_ip, str(port), str(size),
                     str(timeout), check=False, timeout=timeout + 5)
        return p.returncode == 0

    def pings(self, src: str, dst: str) -> bool:
        return self.run(_ns(src), "ping", "-c", "1", "-W", "1", dst, check=False).returncode == 0

    def label(self, at: str | None) -> str:
        """How trace names the hop of namespace `at` (None: the lab host)."""
        return "host" if at is None or at == self.lab.name else f"ns:{at}"

    def destroy(self) -> None:
        from runtime.kernel import ns

        for port in list(self.servers):
            self.stop_server(port)
        for port in list(self.udp_servers):
            self.stop_server(port, udp=True)
        try:
            for name in (self.client, self.server, self.router):
                if name:
                    ns.remove(name)
        finally:
            super().destroy()

    def _leftovers(self) -> list[str]:
        return netns_left((self.client, self.server, self.router)) + super()._leftovers()

    def setup(self) -> None:
        _wire(self, self._rng, self._nets)


def _ns(target: str | None) -> str | None:
    """The namespace of a trace target "ns:NAME" (plain worlds know no other kind)."""
    return target.removeprefix("ns:") if target else None


def _wait_listening(w: World, ns: str, port: int, timeout: float = 3.0, udp: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = w.run(ns, "ss", "-Huln" if udp else "-Htln", f"sport = :{port}", check=False).stdout
        if out.strip():
            return
        time.sleep(0.02)
    raise RuntimeError(f"server on port {port} in {ns} did not start")


def _subnets(rng: random.Random, n: int) -> list[ipaddress.IPv4Network]:
    """n distinct /24s in 10.0.0.0/8 (never 10.0.x: kept clear of anything a test host may use)."""
    picked: list[ipaddress.IPv4Network] = []
    while len(picked) < n:
        net = ipaddress.IPv4Network(f"10.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.0/24")
        if net not in picked:
            picked.append(net)
    return picked


def _ifname(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.randrange(16**4):04x}"


def build(seed: int, shape: str | None = None) -> World:
    """Build the world of `seed` (its shape drawn from the seed unless given). Torn down whole if
    anything fails half-way."""
    return World(seed, shape).create()


def _wire(w: World, rng: random.Random, nets: list[ipaddress.IPv4Network]) -> None:
    """The world's namespaces, links, addresses, routes and servers on the lab host; checked to work."""
    from runtime.kernel import ns

    w.www.mkdir(parents=True, exist_ok=True)
    (w.www / "index.html").write_text(PAGE)
    hosts = lambda net: [str(h) for h in net.hosts()]  # noqa: E731
    shape = w.shape
    for name in (w.client, w.server, w.router):
        if name:
            ns.create(name)
            w.ip(name, "link", "set", "lo", "up")
    for name in (None, w.client, w.server, w.router):  # a fresh host's values, whatever the machine's
        for key, value in FRESH_SYSCTLS:
            if name is None or key.startswith("net/ipv4"):
                try:
                    w.sysctl(name, key, value)
                except FileNotFoundError:  # br_netfilter not loaded: bridged traffic skips ip hooks anyway
                    pass
    a, b, c = (hosts(n) for n in nets)
    if shape == "bridged":
        w.client_ip, w.server_ip, w.client_gw = a[rng.randrange(10, 100)], a[rng.randrange(100, 200)], a[0]
        w.server_gw = w.client_gw
        w.ip(None, "link", "add", w.bridge, "type", "bridge")
        w.ip(None, "addr", "add", f"{a[0]}/24", "dev", w.bridge)
        w.ip(None, "link", "set", w.bridge, "up")
        _veth(w, w.host_client_if, w.client, w.client_ip, 24, w.client_gw, master=w.bridge)
        _veth(w, w.host_server_if, w.server, w.server_ip, 24, w.server_gw, master=w.bridge)
    else:
        w.client_ip, w.client_gw = a[rng.randrange(1, 250)], a[250]
        w.ip(None, "addr", "add", f"{w.client_gw}/24", "dev", _veth(w, w.host_client_if, w.client, w.client_ip, 24, w.client_gw))
        w.sysctl(None, "net/ipv4/ip_forward", "1")
        if shape == "routed":
            w.server_ip, w.server_gw = b[rng.randrange(1, 250)], b[250]
            _veth(w, w.host_server_if, w.server, w.server_ip, 24, w.server_gw)
            w.ip(None, "addr", "add", f"{w.server_gw}/24", "dev", w.host_server_if)
        else:  # chain: host --(c subnet)-- router --(b subnet)-- server
            transit_host, transit_router = c[0], c[1]
            _veth(w, w.host_server_if, w.router, transit_router, 24, transit_host, peer_name="up0")
            w.ip(None, "addr", "add", f"{transit_host}/24", "dev", w.host_server_if)
            w.server_ip, w.server_gw = b[rng.randrange(1, 250)], b[250]
            w.ip(w.router, "link", "add", "down0", "type", "veth", "peer", "name", "eth0", "netns", w.server)
            w.ip(w.router, "addr", "add", f"{w.server_gw}/24", "dev", "down0")
            w.ip(w.router, "link", "set", "down0", "up")
            _address(w, w.server, w.server_ip, 24, w.server_gw)
            w.sysctl(w.router, "net/ipv4/ip_forward", "1")
            w.ip(None, "route", "add", str(nets[1]), "via", transit_router)
    w.serve(w.port)
    w.serve(w.control_port)
    if not (w.connects() and w.connects(w.control_port)):
        raise RuntimeError(f"world {w.seed} ({shape}) does not work before any fault")


def _veth(w: World, host_if: str, ns: str, ip: str, plen: int, gw: str, master: str | None = None,
          peer_name: str = "eth0") -> str:
    """A veth from the host (host_if) into `ns` (peer_name, addressed, default route via gw)."""
    w.ip(None, "link", "add", host_if, "type", "veth", "peer", "name", peer_name, "netns", ns)
    if master:
        w.ip(None, "link", "set", host_if, "master", master)
    w.ip(None, "link", "set", host_if, "up")
    _address(w, ns, ip, plen, gw, dev=peer_name)
    return host_if


def _address(w: World, ns: str, ip: str, plen: int, gw: str, dev: str = "eth0") -> None:
    w.ip(ns, "addr", "add", f"{ip}/{plen}", "dev", dev)
    w.ip(ns, "link", "set", dev, "up")
    w.ip(ns, "route", "add", "default", "via", gw)
