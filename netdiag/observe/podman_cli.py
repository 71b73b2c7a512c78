"""Rootful Podman's containers and networks, read through its CLI (`podman inspect`, `podman
network ls`, JSON), in the shapes docker_api gives Docker's (runtime "podman").

Podman has no daemon: its CLI reads the state of the mount namespace it runs in. netdiag asks it
only when a Podman container runs on this host, i.e. a conmon (Podman's per-container monitor)
shares our network and mount namespaces: on a host (or a lab) without one, podman is never run,
so discovery cannot start Podman's boot-time refresh or touch another host's state.
"""
from __future__ import annotations

import json
import os
import subprocess

TIMEOUT = 20.0


def _ns_inodes(pid: int | str) -> tuple[int, int] | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino, os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def conmon_here() -> bool:
    """A Podman container runs on this host: a conmon shares our network and mount namespaces."""
    from runtime.kernel.procs import pids_named

    mine = _ns_inodes("self")
    return any(_ns_inodes(pid) == mine for pid in pids_named(lambda comm: comm == "conmon"))


def podman_here() -> str | None:
    """The podman CLI when a Podman container runs on this host (see the module's docstring)."""
    from runtime.kernel import tools

    return tools.find("podman") if conmon_here() else None


def _podman_json(podman: str, *args: str):
    p = subprocess.run([podman, *args], capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise OSError(f"podman {args[0]} exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout or "[]")


def containers(podman: str) -> list[dict]:
    """Running containers with their pid, networks and published ports (Podman's own words)."""
    running = {c["Id"]: c for c in _podman_json(podman, "ps", "--pod", "--format", "json") if c.get("State") == "running"}
    found = [container_from_inspect(d) for d in (_podman_json(podman, "inspect", "--type", "container", *running) if running else [])]
    for c in found:  # the pod it is in, and whether it is the pod's infra container (holding its namespaces)
        listed = running.get(c["id"]) or {}
        c["pod"], c["infra"] = str(listed.get("PodName") or ""), bool(listed.get("IsInfra"))
    return found


def inspect(cid: str) -> dict:
    """`podman inspect` of one container (explain reads its health check from it)."""
    podman = podman_here()
    if podman is None:
        raise OSError("no Podman container runs on this host (no conmon in this network and mount namespace)")
    return _podman_json(podman, "inspect", "--type", "container", cid)[0]


def container_from_inspect(d: dict) -> dict:
    """One `podman inspect` record as the model's container (docker_api's shape)."""
    settings, config, host = d.get("NetworkSettings") or {}, d.get("Config") or {}, d.get("HostConfig") or {}
    entrypoint = config.get("Entrypoint") or []
    return {
        "runtime": "podman", "id": d["Id"], "name": d["Name"], "image": d.get("ImageName") or config.get("Image", ""),
        "pid": (d.get("State") or {}).get("Pid") or 0,
        "monitor_pid": (d.get("State") or {}).get("ConmonPid") or 0,  # conmon: it holds the published ports
        "command": [d["Path"], *(d.get("Args") or [])] if d.get("Path") else [],
        "entrypoint": [entrypoint] if isinstance(entrypoint, str) and entrypoint else list(entrypoint or []),
        "state": (d.get("State") or {}).get("Status", ""),
        "networks": {name: {"ip": n.get("IPAddress", ""), "prefix": n.get("IPPrefixLen", 0), "mac": n.get("MacAddress", ""),
                            "gateway": n.get("Gateway", ""), "network_id": n.get("NetworkID", ""),
                            "aliases": n.get("Aliases") or []}
                     for name, n in (settings.get("Networks") or {}).items()},
        "ports": [{"proto": key.split("/")[1], "ctr_port": int(key.split("/")[0]), "host_ip": b.get("HostIp", ""),
                   "host_port": int(b["HostPort"])}
                  for key, binds in (settings.get("Ports") or {}).items() for b in (binds or []) if b.get("HostPort")],
        # Podman says "bridge" for any netavark network; the model (and a recreate) names the network, as Docker does
        "network_mode": next(iter(settings.get("Networks") or {}), "") if host.get("NetworkMode") == "bridge"
        else host.get("NetworkMode", ""),
    }


def networks(podman: str) -> list[dict]:
    return [network_from_ls(n) for n in _podman_json(podman, "network", "ls", "--format", "json")]


def network_from_ls(n: dict) -> dict:
    """One `podman network ls --format json` record (netavark's network config) as the model's network."""
    subnet = (n.get("subnets") or [{}])[0]
    return {"runtime": "podman", "id": n["id"], "name": n["name"], "driver": n.get("driver", ""),
            "subnet": subnet.get("subnet", ""), "gateway": subnet.get("gateway", ""),
            "internal": bool(n.get("internal")), "options": n.get("options") or {},
            "bridge": n.get("network_interface", "")}
