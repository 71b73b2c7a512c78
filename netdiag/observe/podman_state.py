"""Rootful Podman's containers and networks read from its own files, without running podman:
libpod's state database (bolt_state.db under the storage's graph root: each container's config
and state, JSON) and netavark's network configs (/etc/containers/networks/*.json). Same shapes as
podman_cli's (`podman inspect`, `podman network ls`), which stays the way when these files are
not there or not readable (a Podman with the sqlite database, a file this reader cannot read).

Why: every `podman` call starts a Go program that opens and refreshes the same database, about
15 ms per call plus more per container (325 ms for 20 containers here), while the files hold
the same facts in a few pages. Podman writes a container's state there at every change of it
(start, stop, network setup); a container whose process died without Podman noticing still says
"running" there, so a running one counts only while its pid is alive with conmon as its parent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .boltdb import BoltDB, BoltError

RUNNING = 3  # libpod's ContainerStateRunning
DEFAULT_NETWORK = {"name": "podman", "id": "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
                   "driver": "bridge", "network_interface": "podman0",
                   "subnets": [{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]}


def _toml(path: str) -> dict:
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _first_conf(env: str, name: str) -> dict:
    """A containers config file as Podman picks it: $ENV, else /etc/containers/NAME, else the distribution's."""
    for path in (os.environ.get(env), f"/etc/containers/{name}", f"/usr/share/containers/{name}"):
        if path and os.path.isfile(path):
            return _toml(path)
    return {}


def _graph_root() -> str:
    conf = _first_conf("CONTAINERS_STORAGE_CONF", "storage.conf")
    return str((conf.get("storage") or {}).get("graphroot") or "/var/lib/containers/storage")


def database() -> str | None:
    """libpod's bolt database, when this host's Podman keeps one."""
    path = os.path.join(_graph_root(), "libpod", "bolt_state.db")
    return path if os.path.isfile(path) else None


def containers(db_path: str) -> list[dict]:
    """Running containers in podman_cli.container_from_inspect's shape; OSError/ValueError when
    the database cannot be read (the caller then asks podman)."""
    out = []
    try:
        with BoltDB(db_path) as db:
            pods = _pods(db)
            ctrs = db.root.bucket(b"ctr")
            for cid, bucket in (ctrs.buckets() if ctrs else ()):
                state = json.loads(bucket.get(b"state") or b"{}")
                if state.get("state") != RUNNING or not _alive(state.get("pid") or 0, state.get("conmonPid") or 0):
                    continue
                config = json.loads(bucket.get(b"config") or b"{}")
                nets = bucket.bucket(b"networks")
                options = {k.decode(): json.loads(v) for k, v, sub in (nets.items() if nets else ()) if not sub}
                out.append(_container(config, state, options, pods.get(config.get("pod") or "")))
    except BoltError as e:
        raise ValueError(str(e)) from e
    return share_namespaces(out)


def name_pods(refs: dict, found: list[dict]) -> None:
    """A Podman pod is one endpoint: the namespace its infra container holds is named after the
    pod, and the containers sharing it (its members) are listed on the infra container."""
    for infra in found:
        if infra.get("runtime") != "podman" or not infra.get("infra") or not infra.get("ns"):
            continue
        infra["members"] = sorted(c["name"] for c in found if c.get("network_mode") == f"container:{infra['id']}")
        ref = refs.get(int(infra["ns"].removeprefix("ns-")))
        if ref is not None and ref.container is infra:
            ref.name = infra["pod"]


def _pods(db) -> dict[str, tuple[str, str]]:
    """Podman's pods: id -> (name, its infra container's id)."""
    out = {}
    bucket = db.root.bucket(b"pod")
    for pid, pod in (bucket.buckets() if bucket else ()):
        config, state = json.loads(pod.get(b"config") or b"{}"), json.loads(pod.get(b"state") or b"{}")
        out[pid.decode()] = (str(config.get("name") or ""), str(state.get("InfraContainerID") or ""))
    return out


def share_namespaces(found: list[dict]) -> list[dict]:
    """A container in another's network namespace (a pod's member, in its infra container's) has
    that one's networks and published ports, as `podman inspect` shows them."""
    by_id = {c["id"]: c for c in found}
    for c in found:
        owner = by_id.get(str(c.get("network_mode") or "").removeprefix("container:"))
        if owner is not None and owner is not c:
            c["networks"], c["ports"] = owner["networks"], owner["ports"]
    return found


def _alive(pid: int, conmon: int) -> bool:
    from runtime.kernel.procs import stat_fields

    fields = stat_fields(pid) if pid else None
    return bool(fields) and int(fields[1]) == conmon


def _container(config: dict, state: dict, options: dict[str, dict], pod: tuple[str, str] | None) -> dict:
    args = ((config.get("spec") or {}).get("process") or {}).get("args") or []
    entrypoint = config.get("entrypoint") or []
    status = state.get("networkStatus") or {}
    mode = str(config.get("networkMode") or "")
    if config.get("netNsCtr"):
        mode = f"container:{config['netNsCtr']}"
    networks = {}
    for name in dict.fromkeys([*options, *status]):
        iface = next(iter(((status.get(name) or {}).get("interfaces") or {}).values()), {})
        subnet = next((s for s in iface.get("subnets") or [] if ":" not in s.get("ipnet", "")), {})
        ip, _, prefix = str(subnet.get("ipnet") or "").partition("/")
        networks[name] = {"ip": ip, "prefix": int(prefix) if prefix.isdigit() else 0, "mac": iface.get("mac_address", ""),
                          "gateway": subnet.get("gateway", ""), "network_id": name,
                          "aliases": (options.get(name) or {}).get("aliases") or []}
    return {
        "runtime": "podman", "id": config["id"], "name": config["name"],
        "image": config.get("rootfsImageName") or config.get("RawImageName", ""),
        "pid": state.get("pid") or 0, "monitor_pid": state.get("conmonPid") or 0,
        "command": list(args), "entrypoint": [entrypoint] if isinstance(entrypoint, str) else list(entrypoint),
        "state": "running", "networks": networks, "ports": _ports(config.get("newPortMappings") or []),
        # as podman_cli: a netavark network's container names its network, as Docker's do
        "network_mode": next(iter(networks), "") if mode == "bridge" else mode,
        "pod": pod[0] if pod else "", "infra": bool(pod) and pod[1] == config["id"],
    }


def _ports(mappings: list[dict]) -> list[dict]:
    """Podman's port mappings (a range counts `range` ports from both starts) one port each, as inspect lists them."""
    return [{"proto": proto, "ctr_port": int(m["container_port"]) + i, "host_ip": m.get("host_ip") or "",
             "host_port": int(m["host_port"]) + i}
            for m in mappings if m.get("host_port")
            for proto in str(m.get("protocol") or "tcp").split(",")
            for i in range(int(m.get("range") or 1))]


def networks() -> list[dict]:
    """netavark's networks (its config files), and Podman's default network, which has no file
    until someone changes it, in podman_cli.network_from_ls's shape."""
    from .podman_cli import network_from_ls

    found = []
    conf_dir = Path("/etc/containers/networks")
    for path in sorted(conf_dir.glob("*.json")) if conf_dir.is_dir() else ():
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    if not any(n.get("name") == DEFAULT_NETWORK["name"] for n in found):
        found.append(_default_network())
    return [network_from_ls(n) for n in found if n.get("name") and n.get("id")]


def cni_backend() -> bool:
    """Podman set to its CNI network backend: its networks are conflists, not netavark's files."""
    return (_first_conf("CONTAINERS_CONF", "containers.conf").get("network") or {}).get("network_backend") == "cni"


def _default_network() -> dict:
    """Podman's built-in network, with containers.conf's subnet where it sets one."""
    conf = _first_conf("CONTAINERS_CONF", "containers.conf").get("network") or {}
    subnet = str(conf.get("default_subnet") or "")
    if not subnet:
        return dict(DEFAULT_NETWORK)
    import ipaddress

    net = ipaddress.ip_network(subnet, strict=False)
    return {**DEFAULT_NETWORK, "subnets": [{"subnet": str(net), "gateway": str(net.network_address + 1)}]}


def discover(errors: list[dict]) -> tuple[list[dict], list[dict]]:
    """(running Podman containers, Podman's networks) when a Podman container runs on this host
    (podman_cli.conmon_here): from the files, else from the podman CLI; failures go to `errors`."""
    import subprocess

    from . import podman_cli

    if not podman_cli.conmon_here():
        return [], []
    db = database()
    if db is not None and not cni_backend():
        try:
            return containers(db), networks()
        except (OSError, ValueError, KeyError, TypeError) as e:
            errors.append({"what": f"Podman's state database {db} (asking podman instead)", "error": str(e)})
    from runtime.kernel import tools

    podman = tools.find("podman")
    if podman is None:
        return [], []
    try:
        return podman_cli.containers(podman), podman_cli.networks(podman)
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        errors.append({"what": "Podman (podman inspect, podman network ls)", "error": str(e)})
        return [], []
