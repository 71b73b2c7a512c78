"""Pods of another runtime on a world's host: what a kubelet's container runtime (containerd,
CRI-O) leaves on a Kubernetes node, without Kubernetes. Each pod is a namespace
/run/netns/cni-<uuid> wired by the real CNI plugins of one of the host's conflists (ADD, with its
hostPorts as `portMappings`, cached in the host's CNI cache: the lab's, never the machine's
/var/lib/cni), optionally with a server running in it, as a pod's containers would. netdiag
neither made nor records them: they are the endpoints netdiag's discovery must find by itself.

    pods = KubeletPods(world, where="node1")
    web = pods.add("cbr0", ports=["8080:80"], serve="hello")   # a Pod: id, netns, ip, name
    pods.destroy()                                              # DEL, servers killed, namespaces gone

The plugins run as `python -m runtime.networks.cni.sandbox` in the host's namespace with its
environment (its conflist directory, CNI cache and state root), the way the kubelet's runtime
calls them on the node.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass, field

from .leftovers import netns_left


@dataclass
class Pod:
    id: str            # the sandbox id a kubelet's runtime passes as CNI_CONTAINERID (64 hex)
    network: str       # the conflist's name
    netns: str         # /run/netns/cni-<uuid>
    ip: str
    ports: list[str] = field(default_factory=list)
    server: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        """How netdiag names it: cni:<short id>."""
        return f"cni:{self.id[:12]}"

    @property
    def netns_name(self) -> str:
        return self.netns.rsplit("/", 1)[-1]


class KubeletPods:
    """The pods a kubelet's runtime made on host `where` of `world` (see the module's docstring)."""

    def __init__(self, world, where: str | None = None):
        self.world, self.where = world, where
        self.pods: list[Pod] = []

    def add(self, network: str, ports: list[str] = (), serve: str | None = None, port: int = 80) -> Pod:
        """A pod on `network` with `ports` (HOSTPORT:PORT) as hostPorts; with `serve`, a busybox
        httpd on `port` in it answering that text (a pod's container)."""
        from runtime.kernel import link, ns

        name = f"cni-{uuid.uuid4()}"
        path = ns.create(name)
        pod = Pod(secrets.token_hex(32), network, path, "", list(ports))
        self.pods.append(pod)  # recorded first: destroy() removes a half-made pod too
        with ns.netns(path):
            link.set_up(link.index("lo"))
        p = self._sandbox("add", pod, *ports)
        if p.returncode != 0:
            raise RuntimeError(f"CNI ADD of pod {pod.name} on {network} failed: {p.stderr.strip()}")
        result = json.loads(p.stdout)
        pod.ip = next(ip["address"].split("/")[0] for ip in result["ips"] if "." in ip["address"])
        if serve is not None:
            pod.server = self._serve(pod, serve, port)
        return pod

    def _sandbox(self, command: str, pod: Pod, *extra: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "runtime.networks.cni.sandbox", command, pod.network, pod.id, pod.netns, *extra]
        return self.world.run_in(self.where, argv, env=self.world.env_of(self.where), timeout=120)

    def _serve(self, pod: Pod, body: str, port: int) -> subprocess.Popen:
        """busybox httpd in the pod's namespace, serving `body` as /index.html from a directory of the host's state."""
        from runtime.kernel.ns import Namespace

        www = self.world.env_of(self.where)["NETDIAG_ROOT"] + f"/www-{pod.id[:12]}"
        os.makedirs(www, exist_ok=True)
        with open(f"{www}/index.html", "w") as f:
            f.write(body + "\n")
        return subprocess.Popen(["busybox", "httpd", "-f", "-p", str(port), "-h", www], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=Namespace(pod.netns).preexec())

    def remove(self, pod: Pod) -> None:
        """What the kubelet's runtime does when a pod goes: its containers stop, DEL, the namespace goes."""
        from runtime.kernel import ns

        if pod.server is not None:
            pod.server.kill()
            pod.server.wait()
        self._sandbox("del", pod)  # DEL is idempotent; a lab torn down after takes the rest with it
        ns.remove(pod.netns_name)
        self.pods.remove(pod)

    def destroy(self) -> None:
        for pod in list(self.pods):
            self.remove(pod)

    def leaks(self) -> list[str]:
        return netns_left(p.netns_name for p in self.pods) + \
            [f"process {p.server.pid} (httpd of {p.name})" for p in self.pods if p.server and p.server.poll() is None]

