"""Worlds of netdiag's overlay networks across two hosts, and the faults of an overlay.

The world: a cluster lab (netdiag.worlds.ClusterLab: an underlay bridge in its own namespace, two
host namespaces on it, a real etcd) as the fault world's `lab`, `netdiag cluster join` on both hosts, an overlay network (random
subnet) made with `netdiag network create -d overlay`, a client container `cli` on host 1 and a
server container `web` on host 2 (busybox httpd: the flow's port serves a page larger than one
segment, so every flow carries full-size packets both ways; the control port a small one).
`netdiag trace` runs on host 1, as a user on the client's host would run it.

Faults are planted with ip/bridge/nft in the hosts' and the underlay's namespaces (never netdiag):
a forwarding entry of host 1's VXLAN device removed or pointed elsewhere, its proxy ARP entry
removed, VXLAN dropped on the underlay path by a user's nft rule, the underlay narrower than the
overlay's MTU assumes. The world is a container world (containers.py) on netdiag.worlds'
interface, which it extends: the client lives on host 1 (the cluster's first host: where `where`
is None, the lab host of case.py), the server on host 2; create() tears the cluster down whole
when building fails half-way, and a case checks leaks() after destroy().

A cluster takes seconds to build (etcd, two joins): these kinds run less often in a plan (`every`).
"""
from __future__ import annotations

import json
import random
import shlex
import time

from .catalogue import Expect, Flow, kind
from .containers import ContainerWorld
from .world import PAGE

SHAPE = "overlay"
EVERY = 3  # every third round of a plan: a cluster with etcd is slow to build
# the flow's page: several full-size segments, so a path that cannot carry them (an MTU black
# hole) breaks the flow as it breaks a real download
BIG_PAGE = "netdiag overlay world\n" + "x" * 8000 + "\n"
VXLAN_PORT = 4789
RESYNC = 1  # seconds between an agent's reads of the whole store (NETDIAG_CLUSTER_RESYNC; 5 by default)


class OverlayWorld(ContainerWorld):
    shape = SHAPE

    def __init__(self, seed: int, cluster):
        super().__init__(seed, cluster)
        self.near, self.far = (h.name for h in cluster.hosts[:2])  # the client's and the server's hosts
        self.underlay = cluster.underlay
        self.net_id = ""
        self.server_mac = ""

    @property
    def cluster(self):
        return self.lab

    def setup(self) -> None:
        """Both hosts joined, the overlay network, `web` on host 2 and `cli` on host 1, working."""
        for h in self.cluster.hosts:  # the agents settle quickly (below)
            h.env["NETDIAG_CLUSTER_RESYNC"] = str(RESYNC)
        self.cluster.join_all()
        self.net_id = self.on(0, "network", "create", "-d", "overlay", "--subnet", self.subnets[0], self.network).stdout.strip()
        self.start_server()
        self.start_client("--network", self.network)
        for _ in range(20):  # httpd may need a moment
            if self.connects(self.control_port, timeout=1) and self.connects(timeout=2):
                # an agent re-programs its devices once more at its first resync after an attach
                # (the endpoint was claimed in the store before its record was written): a fault
                # planted before then would be undone by it, not by the fix
                time.sleep(2.5 * RESYNC)
                return
        raise RuntimeError(f"overlay world {self.seed} does not work before any fault")

    # -- the world's parts ----------------------------------------------------------------------------
    def on(self, host: int, *args: str, check: bool = True):
        """netdiag on cluster host `host` (0: the client's, 1: the server's)."""
        p = self.cluster.netdiag(*args, where=self.cluster.hosts[host].name, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"h{host + 1}: netdiag {' '.join(args)}: {p.stderr.strip()}")
        return p

    @property
    def vxlan(self) -> str:
        """The network's VXLAN device (the same name on every host)."""
        return f"vx-{self.net_id[:12]}"

    def server_cmd(self) -> list[str]:
        script = (f"mkdir -p /www /big && printf {shlex.quote(PAGE)} > /www/index.html && "
                  f"printf {shlex.quote(BIG_PAGE)} > /big/index.html && "
                  f"httpd -p {self.control_port} -h /www && exec httpd -f -p {self.port} -h /big")
        return ["sh", "-c", script]

    def start_server(self, *opts: str) -> None:
        self.on(1, "run", "-d", "--name", self.server, "--network", self.network, *opts, self.image, *self.server_cmd())
        self.refresh()

    def endpoint(self) -> dict:
        """The server's endpoint on the overlay, as the cluster lists it."""
        net = json.loads(self.on(1, "network", "inspect", self.network).stdout)[0]
        return next(e for e in net["Containers"].values() if e["Name"] == self.server)

    def in_client(self, *argv: str) -> None:
        """The host's argv in the client container's network namespace."""
        pid = json.loads(self.on(0, "inspect", self.client).stdout)[0]["State"]["Pid"]
        self.run(f"/proc/{pid}/ns/net", *argv)

    # -- the World protocol case.py uses --------------------------------------------------------------
    def label(self, at: str | None) -> str:
        """How trace on host 1 names a hop: host 1 is its host, host 2 and the underlay are
        namespaces it sees (faults are planted in those three only)."""
        return "host" if at in (None, self.near) else f"ns:{at}"

    def connects(self, port: int | None = None, src: str | None = None, dst: str | None = None,
                 timeout: float = 3, pad: int = 0) -> bool:
        """A real HTTP request from the client container and its answer (the flow's port answers
        with full-size segments); `pad`: a header that makes the request fill them too."""
        port = port or self.port
        url = f"http://{dst or self.server_ip}:{port}/index.html"
        header = ["--header", "X-Pad: " + "x" * pad] if pad else []
        p = self.lab.netdiag("exec", src or self.client, "timeout", str(timeout), "busybox", "wget", "-q", *header, "-O", "-",
                             url, timeout=timeout + 10)
        return p.returncode == 0 and p.stdout == (BIG_PAGE if port == self.port else PAGE)

    def refresh(self) -> None:
        e = self.endpoint()
        self.server_ip, self.server_mac = e["IPv4Address"].split("/")[0], e["MacAddress"]



def build(seed: int) -> OverlayWorld:
    """Two joined hosts, an overlay network, `web` on host 2 and `cli` on host 1; torn down whole if
    anything fails half-way."""
    from netdiag.worlds import ClusterLab

    return OverlayWorld(seed, ClusterLab(hosts=2)).create()


def overlay_kind(name: str, note: str = ""):
    return kind(name, (SHAPE,), note=note, every=EVERY)


def _flow(w: OverlayWorld, size: int = 0) -> Flow:
    return Flow(w.client, w.server_ip, w.port, size=size)


FORWARDING_LOSSES = ("fdb-deleted", "arp-deleted", "fdb-stale")


@overlay_kind("overlay-forwarding-entry-lost")
def _(w, rng):
    return lose_forwarding_entry(w, rng.choice(FORWARDING_LOSSES), rng)


def lose_forwarding_entry(w: OverlayWorld, how: str, rng: random.Random) -> Expect:
    """Host 1's VXLAN device loses what netdiag's agent programmed for the server: its FDB entry
    (no VTEP to send the MAC to), or its proxy ARP entry (the client never learns the MAC), or the
    FDB entry points at a VTEP that is not the server's host."""
    if how == "fdb-deleted":
        w.run(None, "bridge", "fdb", "del", w.server_mac, "dev", w.vxlan, "self")
    elif how == "arp-deleted":
        w.ip(None, "neigh", "del", w.server_ip, "dev", w.vxlan)
    else:
        stray = f"198.51.100.{rng.randrange(20, 200)}"  # on the underlay's subnet, where no host is
        w.run(None, "bridge", "fdb", "replace", w.server_mac, "dev", w.vxlan, "dst", stray, "self", "permanent")
    w.in_client("ip", "neigh", "flush", "all")  # what the client resolved before the fault goes too
    return Expect("OVERLAY_PEER_UNKNOWN", None, _flow(w), detail=f"host 1's {w.vxlan}: {how} for web ({w.server_mac})")


@overlay_kind("overlay-vxlan-dropped-on-underlay")
def _(w, rng):
    """A user's nft rule drops VXLAN: in the server host's input, or the client host's output."""
    table = f"fw{rng.randrange(999)}"
    if rng.random() < 0.5:
        at, chain = w.far, f"chain input {{ type filter hook input priority 0; udp dport {VXLAN_PORT} counter drop; }};"
    else:
        at = None
        chain = (f"chain output {{ type filter hook output priority 0; ip daddr {w.cluster.hosts[1].address} "
                 f"udp dport {VXLAN_PORT} counter drop; }};")
    w.nft(at, f"table inet {table} {{ {chain} }}")
    return Expect("UNDERLAY_UNREACHABLE", at, _flow(w), detail=f"nft drops udp {VXLAN_PORT} in {w.label(at)}")


@overlay_kind("overlay-underlay-narrower-than-mtu")
def _(w, rng):
    """The underlay switch's ports to both hosts carry less than the 1500 bytes the overlay's MTU
    (1450 inside) assumes: full-size frames die on the switch, with no ICMP, both ways (a port
    drops a frame larger than its MTU on receipt)."""
    mtu = rng.randrange(1300, 1450)
    for host in (w.near, w.far):
        _segment_before_the_wire(w, host)
    for port in ("p0", "p1"):  # the ports of host 1 and host 2 (ClusterLab numbers them so)
        w.run(w.underlay, "ip", "link", "set", port, "mtu", str(mtu))
    return Expect("MTU_BLACKHOLE", w.underlay, _flow(w, size=1400), detail=f"the underlay's ports to both hosts at mtu {mtu}")


def _segment_before_the_wire(w: OverlayWorld, host: str) -> None:
    """Make the host's eth0 cut TCP into MTU-sized packets itself, as a NIC on a real wire does: a
    veth passes the kernel's unsegmented super-packets on (no frame size is checked on the way), so
    a narrow port of the lab's underlay bridge would never see a full-size frame. With at most one
    segment per packet, the kernel segments anything bigger before it leaves eth0."""
    w.ip(host, "link", "set", "dev", "eth0", "gso_max_segs", "1")
