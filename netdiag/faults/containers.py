"""Worlds of netdiag's own containers, and the faults a user of Docker's model makes in them.

The world: a lab whose netdiag runtime has a user-defined bridge network (random subnet) with a
server container `web` (busybox httpd on the flow's port and a control port) and a client
container `cli`. Faults are made with netdiag's own commands, as a user would make them; the fixes
they must get are netdiag commands (recreate with -p, network connect ...).
"""
from __future__ import annotations

from .catalogue import Expect, Flow, kind
from .world import AppWorld

SHAPE = "netdiag"


class ContainerWorld(AppWorld):
    shape = SHAPE
    engine = "netdiag"

    def cli(self, *args: str, check: bool = True, timeout: float = 60):
        p = self.lab.netdiag(*args, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"netdiag {' '.join(args)}: {p.stderr.strip()}")
        return p

    netdiag = cli  # the fault kinds and tests say what they run


def build(seed: int) -> ContainerWorld:
    """A lab with one user-defined network: `web` on it; `cli` is added by each kind."""
    from netdiag.worlds import Lab

    return ContainerWorld(seed, Lab()).create()


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
