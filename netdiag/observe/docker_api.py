"""A minimal Docker Engine API client over its unix socket (stdlib only): containers and networks."""
from __future__ import annotations

import http.client
import json
import os
import socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("docker", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


DEFAULT_SOCKET = "/var/run/docker.sock"


def socket_path() -> str | None:
    """The Docker engine of this host: DOCKER_HOST's socket, else the default one when a dockerd
    runs in this network namespace. From a lab (a namespace that plays another host) the machine's
    engine and its containers are another host's: the default socket is the machine's file."""
    host = os.environ.get("DOCKER_HOST")
    if host is None:
        return DEFAULT_SOCKET if os.path.exists(DEFAULT_SOCKET) and _engine_here() else None
    if not host.startswith("unix://"):
        return None
    path = host[len("unix://"):]
    return path if os.path.exists(path) else None


def _dockerd_netns() -> list[int | None]:
    """The network namespace inode of every running dockerd (None where it cannot be read)."""
    from runtime.kernel.procs import pids_named

    out = []
    for pid in pids_named(lambda comm: comm == "dockerd"):
        try:
            out.append(os.stat(f"/proc/{pid}/ns/net").st_ino)
        except OSError:  # not ours to read (not root): it may be this host's
            out.append(None)
    return out


def _engine_here() -> bool:
    mine = os.stat("/proc/self/ns/net").st_ino
    return any(ino in (mine, None) for ino in _dockerd_netns())


def get(path: str, sock: str, timeout: float = 3.0):
    conn = _UnixConnection(sock, timeout)
    try:
        conn.request("GET", path, headers={"Host": "docker"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"Docker API {path}: HTTP {resp.status}")
        return json.loads(body)
    finally:
        conn.close()


def containers(sock: str) -> list[dict]:
    """Running containers with their pid, networks and ports (Docker's own words)."""
    from runtime.records import compose_identity

    out = []
    for summary in get("/containers/json", sock):
        detail = get(f"/containers/{summary['Id']}/json", sock)
        out.append({
            "runtime": "docker", "id": detail["Id"], "name": detail["Name"].lstrip("/"),
            "image": detail["Config"].get("Image", ""), "pid": detail["State"].get("Pid") or 0,
            "command": [detail["Path"]] + list(detail.get("Args") or []) if detail.get("Path") else [],
            "entrypoint": list(detail["Config"].get("Entrypoint") or []),  # the command's head, when the image has one
            "state": detail["State"].get("Status", ""),
            "networks": {name: {"ip": n.get("IPAddress", ""), "prefix": n.get("IPPrefixLen", 0), "mac": n.get("MacAddress", ""),
                                "gateway": n.get("Gateway", ""), "network_id": n.get("NetworkID", ""),
                                "aliases": n.get("Aliases") or []}
                         for name, n in (detail["NetworkSettings"].get("Networks") or {}).items()},
            "ports": [{"proto": key.split("/")[1], "ctr_port": int(key.split("/")[0]), "host_ip": b.get("HostIp", ""),
                       "host_port": int(b["HostPort"])}
                      for key, binds in (detail["NetworkSettings"].get("Ports") or {}).items() for b in (binds or [])],
            "network_mode": detail["HostConfig"].get("NetworkMode", ""),
            **compose_identity(detail["Config"].get("Labels")),
        })
    return out


def networks(sock: str) -> list[dict]:
    out = []
    for n in get("/networks", sock):
        cfg = (n.get("IPAM") or {}).get("Config") or [{}]
        out.append({"runtime": "docker", "id": n["Id"], "name": n["Name"], "driver": n["Driver"],
                    "subnet": cfg[0].get("Subnet", "") if cfg else "", "gateway": cfg[0].get("Gateway", "") if cfg else "",
                    "internal": n.get("Internal", False), "options": n.get("Options") or {},
                    "bridge": (n.get("Options") or {}).get("com.docker.network.bridge.name", "")
                    or ("br-" + n["Id"][:12] if n["Driver"] == "bridge" else "")})
    return out
