"""Random worlds for fault injection, built in a lab (netdiag/worlds/host.py) from a seed.

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
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class World:
    seed: int
    shape: str
    lab: object  # netdiag.lab.Lab
    client: str  # namespace names
    server: str
    router: str | None
    client_ip: str
    server_ip: str
    client_gw: str
    server_gw: str
    host_client_if: str  # the host's interfaces towards the client and the server (the bridge's
    host_server_if: str  # ports when bridged)
    bridge: str | None
    port: int
    control_port: int
    subnets: list[str]
    www: Path
    servers: dict[int, subprocess.Popen] = field(default_factory=dict)
    udp_servers: dict[int, subprocess.Popen] = field(default_factory=dict)
    extra_ns: list[str] = field(default_factory=list)

    # -- running things -------------------------------------------------------------------------
    def ns_path(self, ns: str | None) -> str:
        return f"/run/netns/{ns or self.lab.name}"

    def run(self, ns: str | None, *argv: str, input: str | None = None, check: bool = True,
            timeout: float = 20) -> subprocess.CompletedProcess:
        """argv in namespace `ns` (None: the lab host)."""
        from runtime.kernel.ns import enter

        p = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=enter(self.ns_path(ns)))
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

        with netns(self.ns_path(ns)):
            sysctl.write(key, value)

    def serve(self, port: int, ns: str | None = None, address: str | None = None) -> None:
        """busybox httpd on address:port in `ns` (the server's address by default)."""
        from runtime.kernel.ns import enter

        self.stop_server(port)
        bind = f"{address or self.server_ip}:{port}"
        self.servers[port] = subprocess.Popen(["busybox", "httpd", "-f", "-p", bind, "-h", str(self.www)],
                                              preexec_fn=enter(self.ns_path(ns or self.server)),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self, ns or self.server, port)

    def serve_udp(self, port: int, ns: str | None = None, address: str | None = None) -> None:
        """A UDP echo on address:port in `ns` (the server's address by default)."""
        import sys

        from runtime.kernel.ns import enter

        self.stop_server(port, udp=True)
        self.udp_servers[port] = subprocess.Popen([sys.executable, "-c", UDP_ECHO, address or self.server_ip, str(port)],
                                                  preexec_fn=enter(self.ns_path(ns or self.server)),
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self, ns or self.server, port, udp=True)

    def stop_server(self, port: int, udp: bool = False) -> None:
        p = (self.udp_servers if udp else self.servers).pop(port, None)
        if p:
            p.kill()
            p.wait()

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

    def fix_env(self) -> dict:
        """What a user's shell has on the lab host: netdiag on PATH, the lab's state."""
        import os
        import sys

        return {**self.lab.env, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}

    def refresh(self) -> None:
        """After a fix: nothing of a plain world moves."""

    def destroy(self) -> None:
        from runtime.kernel import ns

        for port in list(self.servers):
            self.stop_server(port)
        for port in list(self.udp_servers):
            self.stop_server(port, udp=True)
        for name in [self.client, self.server, self.router, *self.extra_ns]:
            if name:
                ns.remove(name)
        self.lab.destroy()


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
    from netdiag.worlds import Lab
    from runtime.kernel import ns

    rng = random.Random(seed)
    shape = shape or rng.choice(SHAPES)
    lab = Lab().create()
    names = {k: f"{lab.name}-{k}" for k in ("c", "s", "r")}
    nets = _subnets(rng, 3)
    port, control = rng.sample(range(1024, 60000), 2)
    www = lab.state_dir / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(PAGE)
    hosts = lambda net: [str(h) for h in net.hosts()]  # noqa: E731
    w = World(seed=seed, shape=shape, lab=lab, client=names["c"], server=names["s"],
              router=names["r"] if shape == "chain" else None, client_ip="", server_ip="", client_gw="",
              server_gw="", host_client_if=_ifname(rng, "vc"), host_server_if=_ifname(rng, "vs"),
              bridge=_ifname(rng, "br") if shape == "bridged" else None, port=port, control_port=control,
              subnets=[str(n) for n in nets], www=www)
    try:
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
            raise RuntimeError(f"world {seed} ({shape}) does not work before any fault")
    except BaseException:
        w.destroy()
        raise
    return w


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
