"""Pods of a Kubernetes node in a one-host scenario world, not netdiag's containers:

    world:
      cni: {network: k8s-pod-network, subnet: 10.88.0.0/24}   # the node's conflist
      pods:
        - {name: web, ports: ["8080:80"], body: "web v2"}     # hostPorts; a busybox httpd answering body

`cni` is the conflist a kubeadm node with the reference plugins has (bridge cni0 with host-local
IPAM and ipMasq, portmap, firewall), in the scenario's directory (NETDIAG_CNI_CONF_DIR); each pod
is made as its kubelet's runtime makes one (netdiag.worlds.kubelet: a namespace
/run/netns/cni-<uuid>, the plugins' ADD with its hostPorts, the result in the lab's CNI cache).
What they are is kept in the scenario's directory (pods.json) for every later process (check,
stop): ${pod:NAME} (cni:<short id>, the name netdiag gives it), ${pod_id:NAME} (its sandbox id),
${pod_ns:NAME} (its namespace's name under /run/netns), ${ip:NAME}; a step's `in: NAME` runs in its namespace.
"""
from __future__ import annotations

import json
from pathlib import Path

from runtime.errors import InvalidArgument

from .common import kill_in, netns_inodes

RECORD = "pods.json"
VARIABLES = ("pod", "pod_id", "pod_ns")


def conf_dir(root: Path) -> Path:
    return root / "net.d"


def env(root: Path, spec: dict) -> dict:
    """What the world's commands need to find the node's conflist."""
    return {"NETDIAG_CNI_CONF_DIR": str(conf_dir(root))} if spec["world"].get("cni") else {}


def build(session, say) -> None:
    """The conflist, then the pods, recorded as each is made (a failure half-way leaves them removable)."""
    from ..worlds.kubelet import KubeletPods

    world = session.scenario.spec["world"]
    if not world.get("cni"):
        return
    cni = world["cni"]
    conf = {"cniVersion": "1.0.0", "name": cni["network"], "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": cni["subnet"]}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(session.lab.state_dir / "cni-ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"}]}
    conf_dir(session.root).mkdir(parents=True, exist_ok=True)
    (conf_dir(session.root) / f"10-{cni['network']}.conflist").write_text(json.dumps(conf, indent=2))
    kubelet = KubeletPods(session)
    for spec in world.get("pods", []):
        say(f"pod {spec['name']} (made by the node's kubelet, not by netdiag)" +
            (f", hostPorts {', '.join(spec['ports'])}" if spec.get("ports") else ""))
        pod = kubelet.add(cni["network"], spec.get("ports", []), serve=spec.get("body"))
        _save(session.root, {**_load(session.root), spec["name"]: {"id": pod.id, "netns": pod.netns, "ip": pod.ip,
                                                                   "network": pod.network}})


def _load(root: Path) -> dict:
    try:
        return json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _save(root: Path, pods: dict) -> None:
    (root / RECORD).write_text(json.dumps(pods, indent=1))


def has(root: Path, name: str) -> bool:
    return name in _load(root)


def netns_names(root: Path) -> list[str]:
    return [p["netns"].rsplit("/", 1)[-1] for p in _load(root).values()]


def namespace(root: Path, name: str) -> str:
    return _load(root)[name]["netns"]


def var(root: Path, key: str, name: str) -> str:
    """${pod:NAME} ${pod_id:NAME} ${pod_ns:NAME} ${ip:NAME} of a pod."""
    pods = _load(root)
    if name not in pods:
        raise InvalidArgument(f"${{{key}:{name}}}: no pod {name} in this world", f"pods: {', '.join(pods) or 'none'}", "")
    p = pods[name]
    return {"pod": f"cni:{p['id'][:12]}", "pod_id": p["id"], "pod_ns": p["netns"].rsplit("/", 1)[-1], "ip": p["ip"]}[key]


def remove(root: Path) -> None:
    """What runs in the pods (their servers, a learner's shells), then their namespaces. The
    plugins' state (veths, rules, addresses) goes with the lab host's namespace and directory."""
    from runtime.kernel import ns

    names = netns_names(root)
    kill_in(netns_inodes(names))
    for name in names:
        ns.remove(name)
