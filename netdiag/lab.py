"""A lab: a network namespace that plays a whole host, so trying netdiag never touches the real one.

The lab host has its own `eth0`, a veth to an "outside" namespace that plays the internet
(203.0.113.1, TEST-NET-3; the lab host is 203.0.113.2 behind it), its own nftables and its own
netdiag state (NETDIAG_ROOT, cgroup parent). Nothing is routed off the machine: the outside
namespace has no other interface. `destroy()` kills what ran in the lab and removes everything.

Sysctls. A new network namespace does not start from the kernel's defaults: it inherits the root
namespace's IPv4 `conf/all`, `conf/default` and `ip_forward` (net.core.devconf_inherit_init_net=0),
so a lab on a host where Docker runs would start with forwarding on, and a dockerd started in it
would then leave FORWARD at accept (Docker sets policy drop only when it turns forwarding on
itself). So every namespace a lab makes (`fresh_sysctls`, right after it is made, before any
interface but lo exists, so new interfaces copy `conf/default`) gets explicit values:

  * `net.ipv4.ip_forward=0` and `conf/all|default/forwarding=0`: a host that just booted, like a
    fresh Debian. netdiag's runtime turns forwarding on when it makes a bridge network
    (runtime/networks/bridge.py realize), as Docker does; a scenario fault or a test that needs
    it off or on sets it after the lab is made.
  * `rp_filter`, `route_localnet`, `proxy_arp` = 0 in conf/all, conf/default and lo: the kernel's
    defaults and a fresh Debian's (distributions that ship rp_filter=2 would otherwise change what
    the lab's diagnoses see: netdiag's model reads exactly these).
  * `net.bridge.bridge-nf-call-iptables|ip6tables|arptables=1` where br_netfilter exists: since
    Linux 5.3 they are per namespace and a new one starts at 1 whatever the root holds; written
    anyway so the value is the lab's choice. 1 is what every host where Docker runs has (Docker
    loads br_netfilter, whose default is 1; it does not write these itself: a dockerd started in
    a lab with them at 0 leaves them at 0), and the lab's Docker must drop other bridges' bridged
    frames as a real one does. A fresh Debian has br_netfilter unloaded (no bridged frame reaches
    the ip hooks); a namespace cannot unload a module, and netdiag's own rules work either way
    (icc is a bridge-family rule). Where br_netfilter is not loaded the keys do not exist and
    nothing is written.

Routes need nothing of the kind: a namespace starts with no routes and no firewall, whatever the
machine has (a VPN's routes, firewalld's tables stay in the root namespace, unseen by a lab).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

OUTSIDE_IP, HOST_IP, PREFIX = "203.0.113.1", "203.0.113.2", 24

# What every lab namespace starts with (see the module's docstring), in writing order: ip_forward
# first, since writing it sets conf/all, conf/default and every interface's forwarding.
FRESH_SYSCTLS = (("net/ipv4/ip_forward", "0"),
                 *((f"net/ipv4/conf/{dev}/{key}", "0") for dev in ("all", "default", "lo")
                   for key in ("forwarding", "rp_filter", "route_localnet", "proxy_arp")))
BRIDGE_NF_SYSCTLS = tuple((f"net/bridge/bridge-nf-call-{x}", "1") for x in ("iptables", "ip6tables", "arptables"))


def fresh_sysctls(path: str) -> None:
    """Give the namespace at `path` the lab's explicit sysctls instead of the root namespace's
    (FRESH_SYSCTLS, and BRIDGE_NF_SYSCTLS where br_netfilter exists). Call it right after the
    namespace is made: interfaces made later copy conf/default."""
    from runtime.kernel import ns, sysctl

    with ns.netns(path):
        for key, value in FRESH_SYSCTLS:
            sysctl.write(key, value)
        for key, value in BRIDGE_NF_SYSCTLS:
            if sysctl.read(key) is not None:
                sysctl.write(key, value)


class Lab:
    def __init__(self, name: str | None = None, state_dir: Path | None = None):
        tag = secrets.token_hex(3)
        self.name = name or f"ndlab-{tag}"
        self.outside = f"{self.name}-out"[:32]
        self.state_dir = Path(state_dir or f"/tmp/{self.name}")
        self.cgroup_parent = f"{self.name}"
        # the lab's upstream DNS is the outside namespace, never the machine's own resolver
        self.env = {**os.environ, "NETDIAG_ROOT": str(self.state_dir), "NETDIAG_CGROUP_PARENT": self.cgroup_parent,
                    "NETDIAG_DNS_UPSTREAM": OUTSIDE_IP}

    # -- building and tearing down -------------------------------------------------------------
    def create(self) -> "Lab":
        import ipaddress

        from runtime.kernel import addr, link, ns, route

        try:
            host, outside = ns.create(self.name), ns.create(self.outside)
            for path in (host, outside):
                fresh_sysctls(path)
            with ns.netns(host):
                fd = os.open(outside, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    link.create_veth("eth0", "eth0", fd)
                finally:
                    os.close(fd)
            for path, ip, gateway in ((host, HOST_IP, OUTSIDE_IP), (outside, OUTSIDE_IP, None)):
                with ns.netns(path):
                    eth0 = link.index("eth0")
                    addr.add(eth0, ipaddress.IPv4Address(ip), PREFIX)
                    link.set_up(eth0)
                    link.set_up(link.index("lo"))
                    if gateway:
                        route.add_default(ipaddress.IPv4Address(gateway), eth0)
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Kill every process netdiag started in the lab, remove its cgroups, namespaces, state."""
        from runtime.kernel import ns

        kill_recorded(self.state_dir, self.cgroup_parent)
        remove_cgroups(self.cgroup_parent, lambda: kill_recorded(self.state_dir, self.cgroup_parent))
        for name in (self.name, self.outside):
            ns.remove(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "Lab":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- running things in it ---------------------------------------------------------------------
    def enter(self, ns: str | None = None):
        """A preexec_fn that moves a child process into the lab's (or `ns`'s) network namespace."""
        from runtime.kernel.ns import enter

        return enter(f"/run/netns/{ns or self.name}")

    def netdiag(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run the netdiag CLI as if on the lab host."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("env", self.env)
        return subprocess.run([sys.executable, "-m", "netdiag", *args], preexec_fn=self.enter(), **kw)

    def outside_run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(list(argv), preexec_fn=self.enter(self.outside), **kw)


def kill_recorded(state_dir: Path, cgroup_parent: str) -> None:
    """SIGKILL every monitor and container process a state dir's records or cgroups know."""
    from runtime.records import recorded_pids

    pids = recorded_pids(Path(state_dir))
    for parent in _cgroup_parents(cgroup_parent):
        for procs in parent.glob("*/cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except OSError:
                pass
    for pid in pids - {0}:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _cgroup_parents(cgroup_parent: str) -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base / cgroup_parent]
    from runtime.containers.cgroups import V1_CONTROLLERS

    return [base / c / cgroup_parent for c in V1_CONTROLLERS]


def remove_cgroups(cgroup_parent: str, kill, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for parent in _cgroup_parents(cgroup_parent):
        if not parent.is_dir():
            continue
        for child in sorted(p for p in parent.iterdir() if p.is_dir()):
            while child.is_dir():
                try:
                    child.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    kill()
                    time.sleep(0.02)
        parent.rmdir()


def leaks(lab: Lab) -> list[str]:
    """What a destroyed lab left behind (should be nothing)."""
    out = [f"netns {ns}" for ns in (lab.name, lab.outside) if os.path.exists(f"/run/netns/{ns}")]
    out += [f"cgroup {p}" for p in _cgroup_parents(lab.cgroup_parent) if p.exists()]
    with open("/proc/mounts") as f:
        out += [line.split()[1] for line in f if str(lab.state_dir) in line]
    if lab.state_dir.exists():
        out.append(str(lab.state_dir))
    return out


# -- several hosts on one underlay: a cluster for overlay networks ------------------------------------
UNDERLAY_PREFIX = "198.51.100."  # TEST-NET-2: never routed anywhere, only on the lab's underlay bridge
STORE_IP = UNDERLAY_PREFIX + "254"


class ClusterHost(Lab):
    """A lab host on the cluster's underlay: its own namespace, eth0 on the underlay bridge (no
    "outside" namespace), its own netdiag state and cgroup parent."""

    def __init__(self, name: str, state_dir: Path, address: str):
        super().__init__(name, state_dir)
        self.address = address
        self.env["NETDIAG_DNS_UPSTREAM"] = ""  # no upstream on the underlay: nothing leaves the lab


class ClusterLab:
    """An underlay bridge in its own namespace, N host namespaces on it (`hosts[i].netdiag(...)`
    runs the CLI as that host) and a real etcd (Debian's etcd-server) in a namespace of its own,
    listening only on the underlay (its data in the lab's state dir). Every namespace gets the
    lab's sysctls (fresh_sysctls). `destroy()` stops etcd, kills what the hosts ran and removes
    everything, also after a failure half-way."""

    def __init__(self, hosts: int = 3, name: str | None = None, state_dir: Path | None = None, mtu: int = 1500):
        tag = secrets.token_hex(3)
        self.name = name or f"ndcl-{tag}"
        self.state_dir = Path(state_dir or f"/tmp/{self.name}")
        self.underlay, self.kv = f"{self.name}-ul", f"{self.name}-kv"
        self.mtu = mtu
        self.hosts = [ClusterHost(f"{self.name}-h{i + 1}", self.state_dir / f"h{i + 1}", f"{UNDERLAY_PREFIX}{i + 1}")
                      for i in range(hosts)]
        self.etcd: subprocess.Popen | None = None
        self.store_url = f"etcd://{STORE_IP}:2379"

    def create(self) -> "ClusterLab":
        import ipaddress

        from runtime.kernel import addr, bridge, link, ns

        try:
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
        except BaseException:
            self.destroy()
            raise
        return self

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
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=ns.enter(f"/run/netns/{self.kv}"), start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.etcd.poll() is not None:
                raise RuntimeError(f"etcd exited with status {self.etcd.returncode}: see {self.state_dir / 'etcd.log'}")
            with ns.netns(f"/run/netns/{self.kv}"):
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
    def join_all(self, ttl: int | None = None) -> None:
        for h in self.hosts:
            if ttl is not None:
                h.env["NETDIAG_CLUSTER_TTL"] = str(ttl)
            p = h.netdiag("cluster", "join", "--store", self.store_url, "--advertise", h.address, "--name", h.name.rsplit("-", 1)[1],
                          timeout=60)
            if p.returncode != 0:
                raise RuntimeError(f"{h.name}: cluster join failed: {p.stderr.strip()}")

    def underlay_run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        from runtime.kernel.ns import enter

        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(list(argv), preexec_fn=enter(f"/run/netns/{self.underlay}"), **kw)

    def destroy(self) -> None:
        from runtime.kernel import ns

        self.stop_store()
        for h in self.hosts:
            h.destroy()
        for name in (self.underlay, self.kv):
            ns.remove(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "ClusterLab":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()


def cluster_leaks(lab: ClusterLab) -> list[str]:
    """What a destroyed cluster lab left behind: namespaces, cgroups, mounts, state, processes."""
    out = [f"netns {n}" for n in (lab.underlay, lab.kv) if os.path.exists(f"/run/netns/{n}")]
    for h in lab.hosts:
        out += leaks(h)
    if lab.state_dir.exists():
        out.append(str(lab.state_dir))
    needle = str(lab.state_dir).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in cmd or needle in env:
            text = cmd.replace(b"\0", b" ").decode(errors="replace")[:80]
            out.append(f"process {entry.name}: {text}")
    return out
