"""Kubernetes nodes wired the way flannel's vxlan backend wires them, without Kubernetes or flannel:
a ClusterLab (nodes on one underlay bridge, no store) where each node has

- a pod subnet, its /24 of the cluster's /16 (node1 10.244.1.0/24, node2 10.244.2.0/24 ...);
- `flannel.1`, a VXLAN device (VNI 1, UDP 8472, nolearning) with address 10.244.N.0/32 and the
  underlay's MTU - 50;
- for every other node: a route to its /24 via its 10.244.M.0 onlink on flannel.1, a permanent ARP
  entry 10.244.M.0 -> its flannel.1 MAC, and an FDB entry that MAC -> its underlay address (what
  flanneld programs from the node leases);
- a conflist `cbr0` in its state dir (NETDIAG_CNI_CONF_DIR set in its environment): the bridge
  plugin on `cni0` with host-local IPAM of the node's /24 and the flannel MTU, and portmap: the
  configuration flannel's CNI plugin hands its delegate, used directly (Debian has no flannel
  plugin). Pods are `netdiag run --network cni:cbr0` on a node.

Nothing here needs etcd: the layout flanneld would derive from its leases is written statically.
"""
from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

from .cluster import ClusterLab

CLUSTER_CIDR = "10.244.0.0/16"
VNI, PORT = 1, 8472  # flannel's defaults (8472: Linux's own, pre-IANA VXLAN port)
DEVICE = "flannel.1"
NETWORK = "cbr0"


def pod_subnet(n: int) -> str:
    """Node n's (1-based) pod /24."""
    return f"10.244.{n}.0/24"


def vtep_ip(n: int) -> str:
    return f"10.244.{n}.0"


def vtep_mac(n: int) -> str:
    return f"0a:f1:00:00:00:{n:02x}"


class FlannelLab(ClusterLab):
    """Nodes node1..nodeN with flannel's layout (see the module's docstring)."""

    def __init__(self, nodes: int = 2, name: str | None = None, state_dir: Path | None = None, mtu: int = 1500,
                 pod_mtu: int | None = None, names: list[str] | None = None):
        """`pod_mtu` larger than the VXLAN's (underlay - 50) plants the classic fault: pods send
        frames flannel.1 cannot carry. `names`: the nodes' names (default node1..nodeN)."""
        super().__init__(name=name, state_dir=state_dir, mtu=mtu, names=names or [f"node{i + 1}" for i in range(nodes)])
        self.vxlan_mtu = mtu - 50
        self.pod_mtu = pod_mtu or self.vxlan_mtu
        for host in self.hosts:  # known before the build: another process attached to the world finds it too
            host.env["NETDIAG_CNI_CONF_DIR"] = str(host.state_dir / "net.d")

    def start_store(self, timeout: float = 20.0) -> None:
        """No cluster store: the overlay is programmed statically, as flanneld would from its leases."""

    def _build(self) -> None:
        super()._build()
        for n, host in enumerate(self.hosts, start=1):
            self._wire(n, host)
            self.write_conflist(n)

    def _wire(self, n: int, host) -> None:
        from runtime.kernel import addr, fdb, link, neigh, ns, route, sysctl, vxlan

        with ns.netns(host.namespace()):
            sysctl.write("net/ipv4/ip_forward", "1")
            vxlan.create(DEVICE, VNI, PORT, host.address, "eth0", learning=False, mtu=self.vxlan_mtu, mac=vtep_mac(n))
            idx = link.require_index(DEVICE)
            addr.add(idx, IPv4Address(vtep_ip(n)), 32)
            link.set_up(idx)
            for m, other in enumerate(self.hosts, start=1):
                if m == n:
                    continue
                neigh.add(DEVICE, vtep_ip(m), vtep_mac(m))
                fdb.append(DEVICE, vtep_mac(m), other.address)
                route.add({"dst": pod_subnet(m), "table": route.RT_TABLE_MAIN, "type": "unicast", "gateway": vtep_ip(m),
                           "dev": DEVICE})

    def write_conflist(self, n: int) -> Path:
        host = self.hosts[n - 1]
        conf = {"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
            {"type": "bridge", "bridge": "cni0", "mtu": self.pod_mtu, "isGateway": True, "isDefaultGateway": True,
             "hairpinMode": True, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_subnet(n)}]], "routes": [{"dst": CLUSTER_CIDR}],
                      "dataDir": str(host.state_dir / "cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}
        d = host.state_dir / "net.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"10-{NETWORK}.conflist").write_text(json.dumps(conf, indent=2))
        return d
