"""`system prune` and `system repair` over everything the runtime owns."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Pruned:
    removed: list[str]   # "network NAME", "image sha256:...", container ids, paths
    freed: int           # bytes of image blobs


def prune() -> Pruned:
    """Stopped containers and what a killed command left half-made, unused networks (and unusable
    network records), untagged images and blobs nothing refers to. Running containers stay."""
    from ..containers import lifecycle
    from ..images import store as images
    from . import networks

    removed = lifecycle.prune()
    removed += [f"network {n}" for n in networks.prune(unreadable=True)]
    lines, freed = images.prune("dangling")  # like Docker: untagged images, then unreferenced blobs
    deleted = [line.removeprefix("deleted: ") for line in lines if line.startswith("deleted: ")]
    removed += [f"image {d}" if d.startswith("sha256:") else d for d in deleted]
    return Pruned(removed, freed)


@dataclass
class Repaired:
    networks: list[str]  # whose firewall rules were rewritten
    adopted: list[str]   # containers given a new monitor


def repair() -> Repaired:
    """netdiag's firewall rewritten from its records; running containers whose monitor died get a
    new one (their exit code can then not be learnt: it is recorded as 255)."""
    from ..containers import lifecycle
    from . import networks

    nets = networks.repair()
    return Repaired(nets, lifecycle.adopt_unsupervised())


def info() -> dict:
    """Where the runtime keeps its state and which kernel features it uses (Docker's `info` names)."""
    from .. import paths
    from ..containers import cgroups

    return {"DockerRootDir": str(paths.root()), "CgroupVersion": "2" if cgroups.is_v2() else "1",
            "CgroupParent": str(paths.cgroup_parent()), "Driver": "overlay",
            "DriverStatus": "mounted only inside each container's mount namespace"}
