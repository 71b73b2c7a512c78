"""A host lab: a network namespace that plays a whole host, so trying netdiag never touches the real one.

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
from pathlib import Path

from .base import World
from .leftovers import (cgroup_parents, kill_recorded, mounts_under, namespace_ids, netns_left, processes_in, processes_left,
                        remove_cgroups, unmount_under)

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


class Lab(World):
    """The host lab (see the module's docstring): `netdiag(...)` runs the CLI on the lab host,
    `run_in("outside" or None, argv)` a program in the outside namespace or on the host."""

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
    def _build(self) -> None:
        import ipaddress

        from runtime.kernel import addr, link, ns, route

        host, outside = ns.create(self.name), ns.create(self.outside)
        self._namespaces = namespace_ids((host, outside))  # what leaks() looks for processes in
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

    def destroy(self) -> None:
        """Kill every process netdiag started in the lab, remove its cgroups, namespaces, state."""
        from runtime.kernel import ns

        kill_recorded(self.state_dir, self.cgroup_parent)
        remove_cgroups(self.cgroup_parent, lambda: kill_recorded(self.state_dir, self.cgroup_parent))
        for name in (self.name, self.outside):
            ns.remove(name)
        # CNI attachments pin their container's namespace until DEL: a world torn down without it keeps them
        unmount_under(self.state_dir / "cni" / "netns")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _leftovers(self) -> list[str]:
        """Namespaces, cgroups, mounts under the state dir, the state dir, processes that name it
        (netdiag's monitors and agents carry it in their environment), and processes still in the
        host's or the outside's namespace (a server's forked child)."""
        out = netns_left((self.name, self.outside))
        out += [f"cgroup {p}" for p in cgroup_parents(self.cgroup_parent) if p.exists()]
        out += [f"mount {m}" for m in mounts_under(self.state_dir)]
        if self.state_dir.exists():
            out.append(str(self.state_dir))
        return out + processes_left(str(self.state_dir)) + processes_in(getattr(self, "_namespaces", {}))

    # -- running things in it ---------------------------------------------------------------------
    def namespace(self, where: str | None = None) -> str:
        """None or "host": the lab host; "outside": the outside namespace; else a namespace by name."""
        return super().namespace({None: self.name, "host": self.name, "outside": self.outside}.get(where, where))

    def outside_run(self, *argv: str, **kw):
        return self.run_in("outside", argv, **kw)
