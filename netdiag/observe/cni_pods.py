"""Pods that the CNI plugins wired for another runtime (a kubelet's containerd or CRI-O): a
namespace with an attachment in the CNI result cache (libcni's files, in the cache directory of
the host observed: /var/lib/cni, or a lab's own, see runtime.networks.cni.conflist.cache_dir)
becomes an endpoint of the model, named `cni:<short id>` (and still `ns:<name>` by its namespace),
owned by "cni" with its network name. netdiag's own CNI attachments are its containers already
(their endpoints get the conflist's rule-writing plugins, as pods have them);
an entry whose namespace is gone (a DEL that never ran) names nothing that can be traced and is
reported as such."""
from __future__ import annotations

import os

PREFIX = "cni:"
RECORD_PREFIX = "cni:"  # netdiag's record of conflist NAME (runtime.networks.cni.driver.record_name)
SHORT = 12


def pod_name(container_id: str) -> str:
    return PREFIX + container_id[:SHORT]


def add_pods(refs: dict, containers: list[dict], outside: set, errors: list[dict]) -> list[dict]:
    """Turn the namespaces (discover's NsRefs, by inode) of cached CNI attachments into "cni" containers (added to `containers`,
    their refs renamed); returns the CNI networks they are on (those no netdiag network records)."""
    from runtime import records

    try:
        attachments = records.cni_attachments()
    except Exception as e:  # noqa: BLE001 - a broken cache must not hide the rest
        errors.append({"what": "the CNI result cache", "error": str(e)})
        return []
    mine = {c["id"]: c for c in containers if c.get("runtime") == "netdiag"}
    pods: dict[str, dict] = {}
    for a in attachments:
        if a["container_id"] in mine:
            _add_rule_writers(mine[a["container_id"]], a)
            continue
        if a["own"] or not a["container_id"]:
            continue
        try:
            ino = os.stat(a["netns"]).st_ino if a["netns"] else None
        except OSError:
            ino = None
        if ino is None or ino in outside or ino not in refs:
            errors.append({"what": f"CNI attachment {pod_name(a['container_id'])} ({a['network']}, {a['file']})",
                           "error": f"its namespace {a['netns'] or '(none recorded)'} is gone: a DEL that never ran left "
                                    "the cached result (and maybe its address and rules)"})
            continue
        ref = refs[ino]
        if ref.kind in ("host", "container"):
            continue  # another runtime's container (Docker's, netdiag's) or the host: already named
        pod = pods.get(a["container_id"])
        if pod is None:
            pod = pods[a["container_id"]] = _pod(a, ref, ino)
            containers.append(pod)
        pod["networks"][a["network"]] = _endpoint(a)
        pod["ports"] += [{"proto": str(p.get("protocol") or "tcp").lower(), "ctr_port": int(p["containerPort"]),
                          "host_ip": str(p.get("hostIP") or ""), "host_port": int(p["hostPort"])}
                         for p in a["port_mappings"] if str(p.get("hostPort", "")).isdigit() and str(p.get("containerPort", "")).isdigit()]
        ref.kind, ref.name, ref.runtime, ref.container, ref.path = "container", pod["name"], "cni", pod, a["netns"]
    return _networks(attachments, pods)


def _add_rule_writers(container: dict, a: dict) -> None:
    """netdiag's own `run --network cni:NAME` container: what its conflist's plugins write into the
    host's iptables (cni_plugins names them when missing), as for a kubelet's pod, on its endpoint."""
    e = (container.get("networks") or {}).get(RECORD_PREFIX + a["network"])
    if e is not None and e.get("ip") and e.get("interface", a["ifname"]) == a["ifname"]:
        e.update(plugins=a["plugins"], ip_masq=a["ip_masq"], firewall_admin_chain=a["firewall_admin_chain"],
                 cni_network=a["network"])


def _pod(a: dict, ref, ino: int) -> dict:
    return {"runtime": "cni", "id": a["container_id"], "name": pod_name(a["container_id"]), "image": "",
            "pid": ref.pids[0] if ref.pids else 0, "ns": f"ns-{ino}", "state": "running", "network_mode": "",
            "netns": a["netns"], "netns_names": list(ref.netns_names), "networks": {}, "ports": []}


def _endpoint(a: dict) -> dict:
    e = a["endpoint"]
    ip, _, prefix = e["IPv4Address"].partition("/")
    return {"ip": ip, "prefix": int(prefix) if prefix.isdigit() else 0, "mac": e["MacAddress"], "gateway": e["Gateway"],
            "host_veth": e["HostVeth"], "interface": a["ifname"], "plugins": a["plugins"], "aliases": [],
            "ip_masq": a["ip_masq"], "firewall_admin_chain": a["firewall_admin_chain"]}


def _networks(attachments: list[dict], pods: dict[str, dict]) -> list[dict]:
    """One entry per CNI network with a pod here: its bridge and range from the cached conflist."""
    out: dict[str, dict] = {}
    for a in attachments:
        if a["container_id"] in pods and a["network"] not in out:
            out[a["network"]] = {"runtime": "cni", "id": a["network"], "name": a["network"],
                                 "driver": a["plugins"][0] if a["plugins"] else "", "subnet": a["subnet"],
                                 "gateway": a["gateway"], "internal": False, "options": {}, "bridge": a["bridge"],
                                 "plugins": a["plugins"],
                                 "endpoints": {cid: {"name": p["name"], "ip": p["networks"][a["network"]]["ip"],
                                                     "host_veth": p["networks"][a["network"]]["host_veth"]}
                                               for cid, p in pods.items() if a["network"] in p["networks"]}}
    return list(out.values())
