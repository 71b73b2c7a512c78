"""A cluster lab: several lab hosts on one underlay bridge, and a real etcd, for overlay networks.

An underlay bridge in its own namespace, N host namespaces on it (`netdiag(..., where=HOST)` runs
the CLI as that host: its namespace, its netdiag state and cgroup parent) and a real etcd
(Debian's etcd-server) in a namespace of its own, listening only on the underlay (its data in
the lab's state dir). Every namespace gets the lab's sysctls (host.fresh_sysctls). `destroy()`
stops etcd, kills what the hosts ran and removes everything, also after a failure half-way.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from .base import World
from .host import Lab, fresh_sysctls
from .leftovers import netns_left, processes_left

UNDERLAY_PREFIX = "198.51.100."  # TEST-NET-2: never routed anywhere, only on the lab's underlay bridge
STORE_IP = UNDERLAY_PREFIX + "254"


class ClusterHost(Lab):
    """A lab host on the cluster's underlay: its own namespace, eth0 on the underlay bridge (no
    "outside" namespace), its own netdiag state and cgroup parent."""

    def __init__(self, name: str, state_dir: Path, address: str):
        super().__init__(name, state_dir)
        self.address = address
        self.env["NETDIAG_DNS_UPSTREAM"] = ""  # no upstream on the underlay: nothing leaves the lab


class ClusterLab(World):
    """The cluster (see the module's docstring). `where` names a host by its namespace name or its
    short name (h1, or the names given), "underlay" or "store"; None is the first host."""

    def __init__(self, hosts: int = 3, name: str | None = None, state_dir: Path | None = None, mtu: int = 1500,
                 names: list[str] | None = None):
        tag = secrets.token_hex(3)
        self.name = name or f"ndcl-{tag}"
        self.state_dir = Path(state_dir or f"/tmp/{self.name}")
        self.underlay, self.kv = f"{self.name}-ul", f"{self.name}-kv"
        self.mtu = mtu
        names = names if names is not None else [f"h{i + 1}" for i in range(hosts)]
        self.hosts = [ClusterHost(f"{self.name}-{n}", self.state_dir / n, f"{UNDERLAY_PREFIX}{i + 1}")
                      for i, n in enumerate(names)]
        self.etcd: subprocess.Popen | None = None
        self.store_url = f"etcd://{STORE_IP}:2379"

    @property
    def env(self) -> dict:
        return self.hosts[0].env

    def _build(self) -> None:
        import ipaddress

        from runtime.kernel import addr, bridge, link, ns

        self.state_dir.mkdir(parents=True, exist_ok=True)
        ul = ns.create(self.underlay)
        fresh_sysctls(ul)
        with ns.netns(ul):
            bridge.ensure("ul0", None, None, self.mtu)
            link.set_up(link.index("lo"))
        ends = [(h.name, h.address) for h in self.hosts] + [(self.kv, STORE_IP)]
        for i, (name, address) in enumerate(ends):
            path = ns.create(name)
            fresh_sysctls(path)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with ns.netns(ul):
                    link.create_veth(f"p{i}", "eth0", fd, self.mtu)
                    link.set_up(link.index(f"p{i}"), master=link.index("ul0"))
            finally:
                os.close(fd)
            with ns.netns(path):
                eth0 = link.index("eth0")
                addr.add(eth0, ipaddress.IPv4Address(address), 24)
                link.set_up(eth0)
                link.set_up(link.index("lo"))
        for h in self.hosts:
            h.state_dir.mkdir(parents=True, exist_ok=True)
        self.start_store()

    # -- the store ----------------------------------------------------------------------------------
    def start_store(self, timeout: float = 20.0) -> None:
        import socket

        from runtime.kernel import ns, tools

        etcd = tools.find("etcd")
        if etcd is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server; scripts/setup does it)")
        data = self.state_dir / "etcd"
        log = open(self.state_dir / "etcd.log", "ab")
        peer = "http://127.0.0.1:2380"  # peers only inside the store's own namespace: one member
        self.etcd = subprocess.Popen(
            [etcd, "--name", "kv", "--data-dir", str(data), "--logger", "zap", "--log-level", "error",
             "--listen-client-urls", f"http://{STORE_IP}:2379", "--advertise-client-urls", f"http://{STORE_IP}:2379",
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"kv={peer}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=self.enter("store"), start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.etcd.poll() is not None:
                raise RuntimeError(f"etcd exited with status {self.etcd.returncode}: see {self.state_dir / 'etcd.log'}")
            with ns.netns(self.namespace("store")):
                try:
                    socket.create_connection((STORE_IP, 2379), timeout=0.5).close()
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not listen on {STORE_IP}:2379 within {timeout:g} s")

    def stop_store(self) -> None:
        if self.etcd is None:
            return
        if self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait()
        self.etcd = None

    # -- running things ------------------------------------------------------------------------------
    def host(self, where: str | None = None) -> ClusterHost | None:
        """The host `where` names (its namespace name or short name; None: the first), else None."""
        if where is None:
            return self.hosts[0]
        return next((h for h in self.hosts if where in (h.name, h.name.removeprefix(f"{self.name}-"))), None)

    def namespace(self, where: str | None = None) -> str:
        h = self.host(where)
        if h is not None:
            return h.namespace()
        return super().namespace({"underlay": self.underlay, "store": self.kv}.get(where, where))

    def env_of(self, where: str | None = None) -> dict:
        h = self.host(where)
        return (h or self.hosts[0]).env

    def join_all(self, ttl: int | None = None) -> None:
        for h in self.hosts:
            if ttl is not None:
                h.env["NETDIAG_CLUSTER_TTL"] = str(ttl)
            p = h.netdiag("cluster", "join", "--store", self.store_url, "--advertise", h.address, "--name", h.name.rsplit("-", 1)[1],
                          timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"{h.name}: cluster join failed: {p.stderr.strip()}")

    def underlay_run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.run_in("underlay", argv, **kw)

    def destroy(self) -> None:
        from runtime.kernel import ns

        self.stop_store()
        for h in self.hosts:
            h.destroy()
        for name in (self.underlay, self.kv):
            ns.remove(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _leftovers(self) -> list[str]:
        """Namespaces, cgroups, mounts, state, and processes that mention the state dir (etcd, agents)."""
        out = netns_left((self.underlay, self.kv))
        for h in self.hosts:
            out += h._leftovers()
        if self.state_dir.exists():
            out.append(str(self.state_dir))
        return list(dict.fromkeys(out + processes_left(str(self.state_dir))))  # a host's process is the cluster's too
