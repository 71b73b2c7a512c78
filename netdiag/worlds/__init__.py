"""Worlds: the one way netdiag builds namespaces that play hosts, for the demo, scenarios, replay,
the fault generator, tests and benches. Every world has one interface (base.World): `create()`
(torn down again when it fails half-way), `run_in(where, argv)` and `netdiag(...)` to run a
program or the CLI as one of its hosts, `destroy()` and `leaks()` (what is left: namespaces,
links, mounts, cgroups, nftables tables, processes; [] after destroy()).

    host.py     Lab: a namespace that plays a host (its own eth0 to an "outside" namespace, fresh
                sysctls, its own netdiag state and cgroup parent)
    cluster.py  ClusterLab: hosts on one underlay bridge and a real etcd (overlay networks)
    docker.py   DockerLab: a host lab running its own dockerd (the engine: dockerd.py)
    podman.py   PodmanLab: a host lab that is a rootful Podman host (netavark, aardvark-dns), its own
                mount namespace keeping Podman's fixed host paths private; PodmanDockerLab: Docker too
    flannel.py  FlannelLab: Kubernetes-like nodes with flannel's vxlan layout (cni0, flannel.1, conflist cbr0)
    kubelet.py  KubeletPods: pods on a world's host made as a kubelet's runtime makes them (CNI ADD/DEL)
    leftovers.py  finding and removing what worlds leave: processes, mounts, cgroups, namespaces
    registry.py   LabRegistry: Debian's docker-registry in one of a world's namespaces (TLS, htpasswd,
                  or Bearer tokens from registry_token.py)
A scenario's world (netdiag/scenario/world.py) and a snapshot's replica (scenario/replay.py
Replica) implement the same interface; the fault worlds (netdiag/faults/world.py FaultWorld) are
built on host labs, clusters and Docker labs through it.

May import runtime.kernel, runtime.records and runtime.containers.cgroups (lazily); nothing of
netdiag outside this package: the layers above import it, never the other way round.
"""
from .base import World
from .cluster import STORE_IP, UNDERLAY_PREFIX, ClusterHost, ClusterLab
from .docker import DockerLab
from .host import BRIDGE_NF_SYSCTLS, FRESH_SYSCTLS, HOST_IP, OUTSIDE_IP, Lab, fresh_sysctls
from .podman import PodmanDockerLab, PodmanLab

__all__ = ["World", "Lab", "ClusterLab", "ClusterHost", "DockerLab", "PodmanLab", "PodmanDockerLab", "fresh_sysctls", "FRESH_SYSCTLS",
           "BRIDGE_NF_SYSCTLS", "HOST_IP", "OUTSIDE_IP", "STORE_IP", "UNDERLAY_PREFIX"]
