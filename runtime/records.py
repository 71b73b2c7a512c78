"""The runtime's records as the rest of netdiag reads them: the one reader of NETDIAG_ROOT for code
outside the runtime (observation, the lab, snapshots), so none of them parses the record files
itself. Read-only."""
from __future__ import annotations

import json
import os
from pathlib import Path


def containers() -> list[dict]:
    """Running netdiag containers with their pid, command, networks and published ports."""
    from .containers import container_records
    from .networks import network_records as nets

    by_container: dict[str, dict] = {}  # every network record read once, not once per container
    for n in nets.attachable():
        for cid, e in n["Containers"].items():
            by_container.setdefault(cid, {})[n["Name"]] = e
    out = []
    for c in container_records.list_all():
        if not container_records.proc_ok(c):
            continue
        # an endpoint still being made (a CNI ADD under way) has no address yet
        eps = {n: e for n, e in by_container.get(c.id, {}).items() if "/" in e.get("IPv4Address", "")}
        out.append({
            "runtime": "netdiag", "id": c.id, "name": c.name, "image": c.config.get("ImageRef", ""), "pid": c.pid,
            "command": [c.config.get("Path", "")] + list(c.config.get("Args") or []) if c.config.get("Path") else [],
            "state": c.status, "network_mode": c.config["HostConfig"].get("NetworkMode", ""),
            **compose_identity((c.config.get("Config") or {}).get("Labels")),
            "networks": {n: {"ip": e["IPv4Address"].split("/")[0], "prefix": int(e["IPv4Address"].split("/")[1]),
                             "mac": e["MacAddress"], "host_veth": e["HostVeth"], "interface": e.get("Interface", ""),
                             "aliases": e.get("Aliases", [])} for n, e in eps.items()},
            "ports": [{"proto": p["proto"], "ctr_port": p["ctr_start"], "ctr_end": p["ctr_end"], "host_ip": p["host_ip"] or "",
                       "host_port": p["host_start"], "host_end": p["host_end"]} for e in eps.values() for p in e.get("Ports", [])],
        })
    return out


def containers_at(root: Path) -> list[dict]:
    """The running containers (id, name, pid) that another netdiag state root on this machine records,
    e.g. a lab node's netdiag seen from the next node. Read-only: a record that cannot be read is
    skipped, nothing of that root is settled or changed."""
    from . import state

    out = []
    try:
        subs = [d for d in (root / "containers").iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return []
    for d in subs:
        try:
            cfg = state.read_json(d / "config.json", expect=dict)
            st = state.read_json(d / "state.json", {}, expect=dict)
        except state.CorruptRecord:
            continue
        if cfg and isinstance(cfg.get("Name"), str) and st.get("Status") == "running" and str(st.get("Pid", "")).isdigit():
            out.append({"id": d.name, "name": cfg["Name"], "pid": int(st["Pid"])})
    return out


def compose_identity(labels: dict | None) -> dict:
    """{"compose": {"project", "service", "number"}} for a container of a Compose project (Docker
    Compose's labels, which netdiag's compose sets too), so diagnosis finds it by service name; {}
    for any other container."""
    labels = labels or {}
    if not labels.get("com.docker.compose.project") or not labels.get("com.docker.compose.service"):
        return {}
    number = labels.get("com.docker.compose.container-number", "1")
    return {"compose": {"project": labels["com.docker.compose.project"], "service": labels["com.docker.compose.service"],
                        "number": int(number) if number.isdigit() else 1}}


def networks() -> list[dict]:
    """netdiag's bridge and overlay networks: subnet, gateway, options, bridge device and endpoints
    (an overlay's: this host's only; its VNI and VXLAN device too)."""
    from .networks import network_records

    out = []
    for n in network_records.attachable():
        cfg = network_records.ipam(n)
        entry = {"runtime": "netdiag", "id": n["Id"], "name": n["Name"], "driver": n["Driver"],
                 "subnet": cfg.get("Subnet", ""), "gateway": cfg.get("Gateway", ""), "internal": n["Internal"],
                 "options": n["Options"], "bridge": n["netdiag"].get("Bridge", ""),
                 "endpoints": {cid: {"name": e["Name"], "ip": e["IPv4Address"], "host_veth": e["HostVeth"]}
                               for cid, e in n["Containers"].items()}}
        if n["Driver"] == "overlay":
            entry.update(vni=n["netdiag"].get("VNI"), vxlan=n["netdiag"].get("Vxlan", ""))
        out.append(entry)
    return out


def cluster() -> dict | None:
    """The overlay cluster as the store lists it now, when this host is a member (None otherwise):
    members with their VTEPs, overlay networks with their VNIs, every endpoint with its host. One
    read of the store; its error (ClusterUnreachable) when it does not answer."""
    from .cluster import keys, local
    from .cluster.store import Store

    member = local.member()
    if member is None:
        return None
    found, _ = Store(member["store"]).prefix(keys.ROOT)
    out = {"store": member["store"], "host": member["host"], "hosts": [], "networks": [], "endpoints": []}
    for key, v, _ in found:
        kind, rest = keys.split(key)
        if not isinstance(v, dict):
            continue
        if kind == "hosts" and v.get("id") and v.get("vtep"):
            out["hosts"].append({"id": v["id"], "name": v.get("name", ""), "vtep": v["vtep"]})
        elif kind == "networks" and v.get("Id"):
            out["networks"].append({"id": v["Id"], "name": v.get("Name", ""), "vni": v.get("VNI"), "subnet": v.get("Subnet", "")})
        elif kind == "endpoints" and len(rest) == 2 and v.get("ip") and v.get("mac"):
            out["endpoints"].append({"network": rest[0], "id": v.get("id", ""), "container": v.get("container", ""),
                                     "name": v.get("name", ""), "ip": v["ip"].split("/")[0], "mac": v["mac"].lower(),
                                     "host": v.get("host", "")})
    return out


def recorded_pids(root: Path) -> set[int]:
    """Every process a state root's records name (monitors, containers, DNS resolvers), read
    tolerantly: records may be half-written or corrupt when a lab is torn down."""
    def load(path: Path):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    pids: set[int] = set()
    cdir = Path(root) / "containers"
    if cdir.is_dir():
        for d in cdir.iterdir():
            st = load(d / "state.json") or {}
            pids.update(int(st.get(k) or 0) for k in ("MonitorPid", "Pid"))
    for rec in (Path(root) / "networks").glob("*.json"):
        net = load(rec) or {}
        extra = net.get("netdiag") if isinstance(net.get("netdiag"), dict) else {}
        pids.add(int(extra.get("DnsPid") or 0))
    resolver = (load(Path(root) / "networks" / "overlays.dns.json") or {}).get("resolver")  # the overlays' DNS
    pids.add(int(resolver.get("pid") or 0) if isinstance(resolver, dict) else 0)
    member = load(Path(root) / "cluster" / "member.json") or {}
    pids.add(int(member.get("agent_pid") or 0))
    return pids - {0, os.getpid()}


def cni_attachments() -> list[dict]:
    """Every attachment in the CNI result cache (libcni's files: a kubelet's runtime's, Podman's,
    netdiag's own) with what made it: network name, container id, interface, the namespace (the
    cache's `netns`, else the result's sandbox), its endpoint (address, gateway, MAC, host veth), the hostPorts asked for and
    the conflist's plugins, bridge and range. `own` marks netdiag's (its pinned namespaces)."""
    import base64

    from . import paths
    from .errors import NetdiagError
    from .networks.cni import conflist, driver, invoke

    pins = str(paths.root() / "cni" / "netns") + "/"
    out = []
    for path, doc in invoke.cached_all():
        result, ifname = doc["result"], str(doc.get("ifName") or "")
        sandbox = next((i.get("sandbox") for i in result.get("interfaces") or []
                        if isinstance(i, dict) and i.get("sandbox") and i.get("name") == ifname), "")
        netns = str(doc.get("netns") or sandbox or "")
        try:
            conf = conflist.from_cache(base64.b64decode(str(doc.get("config", ""))), path)
        except (ValueError, NetdiagError):
            conf = None
        subnet, gateway = conf.ipam_range() if conf else ("", "")
        caps = doc.get("capabilityArgs") if isinstance(doc.get("capabilityArgs"), dict) else {}
        out.append({"file": path, "network": str(doc.get("networkName") or ""), "container_id": str(doc.get("containerId") or ""),
                    "ifname": ifname, "netns": netns, "own": netns.startswith(pins),
                    "endpoint": driver.endpoint_from_result(result, ifname, conf.bridge_device() if conf else ""),
                    "port_mappings": [p for p in caps.get("portMappings") or [] if isinstance(p, dict)],
                    "plugins": [p["type"] for p in conf.plugins] if conf else [], **_rule_writers(conf),
                    "bridge": conf.bridge_device() if conf else "", "subnet": subnet, "gateway": gateway})
    return out


def _rule_writers(conf) -> dict:
    """What decides the iptables rules a conflist's plugins write for a pod: the bridge plugin's
    ipMasq (its CNI-<hash> masquerade chain), the firewall plugin's iptables admin chain ("" when
    it has no firewall plugin, or one whose backend is firewalld)."""
    plugins = conf.plugins if conf else ()
    firewall = next((p for p in plugins if p["type"] == "firewall"), None)
    return {"ip_masq": any(p["type"] == "bridge" and p.get("ipMasq") is True for p in plugins),
            "firewall_admin_chain": str(firewall.get("iptablesAdminChainName") or "CNI-ADMIN")
            if firewall is not None and firewall.get("backend", "iptables") == "iptables" else ""}
