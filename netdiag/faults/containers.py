"""Worlds of netdiag's own containers, and the faults a user of Docker's model makes in them.

The world: a lab whose netdiag runtime has a user-defined bridge network (random subnet) with a
server container `web` (busybox httpd on the flow's port and a control port) and a client
container `cli`. Faults are made with netdiag's own commands, as a user would make them; the fixes
they must get are netdiag commands (recreate with -p, network connect ...).
"""
from __future__ import annotations

import random
import shlex

from .catalogue import Expect, Flow, kind
from .world import PAGE

SHAPE = "netdiag"


class ContainerWorld:
    shape = SHAPE

    def __init__(self, seed: int, lab):
        rng = random.Random(seed)
        self.seed, self.lab = seed, lab
        self.port, self.control_port = rng.sample(range(1024, 60000), 2)
        self.subnets = [f"10.{rng.randrange(1, 255)}.{n}.0/24" for n in rng.sample(range(256), 2)]
        self.network = f"net{rng.randrange(16**4):04x}"
        self.server, self.client = "web", "cli"
        self.server_ip = ""

    # -- the world's parts ----------------------------------------------------------------------------
    def netdiag(self, *args: str, check: bool = True):
        p = self.lab.netdiag(*args, timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError(f"netdiag {' '.join(args)}: {p.stderr.strip()}")
        return p

    def server_cmd(self) -> list[str]:
        script = (f"mkdir -p /www && printf {shlex.quote(PAGE)} > /www/index.html && "
                  f"httpd -p {self.control_port} -h /www && exec httpd -f -p {self.port} -h /www")
        return ["busybox", "sh", "-c", script]

    def start_server(self, *opts: str) -> None:
        self.netdiag("run", "-d", "--name", self.server, *opts, *self.server_cmd())
        self.server_ip = self.address(self.server)

    def start_client(self, *opts: str) -> None:
        self.netdiag("run", "-d", "--name", self.client, *opts, "busybox", "sleep", "3600")

    def address(self, container: str, network: str | None = None) -> str:
        import json

        nets = json.loads(self.netdiag("inspect", container).stdout)[0]["NetworkSettings"]["Networks"]
        return nets[network or next(iter(nets))]["IPAddress"] if nets else ""

    # -- the World protocol case.py uses --------------------------------------------------------------
    def ns_path(self, ns: str | None) -> str:
        return f"/run/netns/{ns or self.lab.name}"

    def label(self, at: str | None) -> str:
        return "host" if at is None else f"{at} (netdiag container)" if at in (self.server, self.client) else f"ns:{at}"

    def connects(self, port: int | None = None, src: str | None = None, dst: str | None = None,
                 timeout: float = 3) -> bool:
        url = f"http://{dst or self.server_ip}:{port or self.port}/index.html"
        argv = ["timeout", str(timeout), "busybox", "wget", "-q", "-O", "-", url]
        src = src or self.client
        if src.startswith("ns:"):
            p = self.lab.outside_run(*argv, timeout=timeout + 5) if src == f"ns:{self.lab.outside}" else None
        else:
            p = self.lab.netdiag("exec", src, *argv, timeout=timeout + 10)
        return p is not None and p.returncode == 0 and p.stdout == PAGE

    def pings(self, src: str, dst: str) -> bool:
        return self.lab.netdiag("exec", src, "ping", "-c", "1", "-W", "1", dst, timeout=15).returncode == 0

    def fix_env(self) -> dict:
        """What a user's shell has on the lab host: netdiag on PATH, the lab's state."""
        import os
        import sys

        return {**self.lab.env, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}

    def refresh(self) -> None:
        """After a fix: a recreated container may have a new address."""
        if self.netdiag("inspect", self.server, check=False).returncode == 0:
            self.server_ip = self.address(self.server)

    def destroy(self) -> None:
        self.lab.destroy()


def build(seed: int) -> ContainerWorld:
    """A lab with one user-defined network: `web` on it; `cli` is added by each kind."""
    from netdiag.worlds import Lab

    w = ContainerWorld(seed, Lab().create())
    try:
        w.netdiag("network", "create", "--subnet", w.subnets[0], w.network)
    except BaseException:
        w.destroy()
        raise
    return w


def _healthy(w: ContainerWorld) -> None:
    """The world works before the fault: the control flow answers."""
    if not w.connects(w.control_port):
        raise RuntimeError("the container world does not work before any fault")


@kind("port-not-published", (SHAPE,))
def _(w, rng):
    from netdiag.worlds import HOST_IP

    w.start_server("--network", w.network)
    w.start_client("--network", w.network)
    _healthy(w)
    return Expect("PORT_NOT_PUBLISHED", None, Flow(f"ns:{w.lab.outside}", HOST_IP, w.port),
                  detail="web listens, but its port is not published")


@kind("network-isolation", (SHAPE,))
def _(w, rng):
    other = w.network + "b"
    w.netdiag("network", "create", "--subnet", w.subnets[1], other)
    w.start_server("--network", w.network)
    w.start_client("--network", other)
    return Expect("NETWORK_ISOLATION", None, Flow(w.client, w.server_ip, w.port),
                  detail="cli and web on different user networks")


@kind("icc-disabled", (SHAPE,))
def _(w, rng):
    quiet = w.network + "q"
    w.netdiag("network", "create", "--subnet", w.subnets[1], "-o", "com.docker.network.bridge.enable_icc=false", quiet)
    w.start_server("--network", quiet)
    w.start_client("--network", quiet)
    return Expect("ICC_DISABLED", None, Flow(w.client, w.server_ip, w.port), detail="enable_icc=false on their network")


@kind("network-none", (SHAPE,))
def _(w, rng):
    w.start_server("--network", w.network)
    w.start_client("--network", "none")
    return Expect("NETWORK_NONE", w.client, Flow(w.client, w.server_ip, w.port), detail="cli runs with --network none")
