"""A scenario world's image registry (`world.registry`): Debian's docker-registry with a TLS
certificate from a CA made at start (netdiag/worlds/registry.py LabRegistry), serving either from
the lab's outside namespace (203.0.113.1:5000, "the internet") or, with `behind: true`, from a
namespace of its own behind the outside, which then plays a router (198.18.7.2:5000 on
198.18.7.0/24; the lab host reaches it through its default route): a registry that sits a hop
beyond the host's gateway, where an MTU step can hide.

The host trusts the CA like Docker does (`${certs_d}/HOST:PORT/ca.crt`; the world's
NETDIAG_CERTS_D, never the machine's /etc/docker/certs.d), and `image` is pushed at start from the
host's store and removed from it again: a layer of `size` random bytes that only the registry
has, so a pull must fetch it whole. Everything lives in the scenario's directory and namespaces:
`stop` kills the registry with every process of the world's namespaces and removes the router's
namespace (`remove`).
"""
from __future__ import annotations

from pathlib import Path

from ..worlds import OUTSIDE_IP

PORT = 5000
ROUTER_IP, BEHIND_IP, BEHIND_PREFIX = "198.18.7.1", "198.18.7.2", 24


def spec_of(scenario_spec: dict) -> dict | None:
    return scenario_spec["world"].get("registry")


def namespace(lab) -> str:
    """The registry's own namespace (for `behind: true`), named from the lab's."""
    return f"{lab.name}-reg"[:32]


def address(spec: dict) -> str:
    return BEHIND_IP if spec.get("behind") else OUTSIDE_IP


def domain(spec: dict) -> str:
    return f"{address(spec)}:{PORT}"


def certs_d(root: Path) -> Path:
    return root / "certs.d"


def env(root: Path) -> dict:
    """What the world's host (its netdiag, its shell) uses: its own certs.d and Docker config."""
    return {"NETDIAG_CERTS_D": str(certs_d(root)), "DOCKER_CONFIG": str(root / "docker")}


def start(session, spec: dict, say) -> None:
    """The router's namespace (behind), the registry, the CA trusted by the host, the image pushed."""
    from ..worlds.registry import LabRegistry, behind_router, random_rootfs

    where = "outside"
    if spec.get("behind"):
        say(f"a registry behind the outside's router ({BEHIND_IP})")
        where = behind_router(session.lab, namespace(session.lab), ROUTER_IP, BEHIND_IP, BEHIND_PREFIX)
    else:
        say(f"a registry on the outside ({OUTSIDE_IP}:{PORT})")
    reg = LabRegistry(session.lab, session.root / "registry", where=where, address=address(spec), port=PORT)
    try:
        reg.start()
    except RuntimeError as e:
        from .common import StepFailed

        raise StepFailed(f"The registry of scenario {session.scenario.name} did not start", str(e), "run scripts/setup") from None
    reg.proc = reg.token_proc = None  # it outlives this process: stop finds it by its namespace
    reg.trust(certs_d(session.root))
    ref = f"{domain(spec)}/{spec['image']}"
    say(f"image {ref} pushed")
    tar = session.root / "image.tar"
    tar.write_bytes(random_rootfs(spec.get("size", 262144)))
    for argv in (["import", str(tar), ref], ["push", ref], ["rmi", ref]):
        session.run(["netdiag", *argv])
    tar.unlink()


def remove(lab) -> None:
    """The router's namespace (its processes are killed with the world's); safe when there is none."""
    from ..worlds.registry import remove_behind

    remove_behind(namespace(lab))
