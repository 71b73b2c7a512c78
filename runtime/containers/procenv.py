"""The environment, the user and the resource limits a container's process runs with, as Docker
reads them from the image config, the container's own /etc/passwd and /etc/group, and
HostConfig.Ulimits (used by the init, exec and health checks)."""
from __future__ import annotations

import resource

from ..errors import ContainerError


def env(cfg: dict) -> dict[str, str]:
    out = {}
    for item in cfg.get("Env") or []:
        k, _, v = item.partition("=")
        out[k] = v
    out.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if cfg.get("Hostname"):
        out.setdefault("HOSTNAME", cfg["Hostname"])
    return out


def user(spec: str) -> tuple[int, int, list[int], str]:
    """USER as Docker reads it: name or uid, optionally :group, looked up in the container's files."""
    if not spec:
        return 0, 0, [], "/root"
    name, _, group = spec.partition(":")
    users = table("/etc/passwd")
    if name.isdigit():
        uid = int(name)
        entry = next((u for u in users if u[2] == name), None)
    else:
        entry = next((u for u in users if u[0] == name), None)
        if entry is None:
            raise ContainerError(f'unable to find user {name}: no matching entries in passwd file')
        uid = int(entry[2])
    gid = int(entry[3]) if entry else uid
    home = entry[5] if entry and len(entry) > 5 else "/"
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in table("/etc/group") if g[0] == group), None)
            if g is None:
                raise ContainerError(f"unable to find group {group}: no matching entries in group file")
            gid = int(g[2])
    return uid, gid, [gid], home


def table(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def set_ulimits(host: dict) -> None:
    """HostConfig.Ulimits on the calling process (-1: unlimited). Lowering needs no privilege,
    raising a hard limit needs CAP_SYS_RESOURCE: a clear error when the host's is lower."""
    for limit in host.get("Ulimits") or []:
        which = getattr(resource, f"RLIMIT_{limit['Name'].upper()}")
        wanted = tuple(resource.RLIM_INFINITY if v == -1 else v for v in (limit["Soft"], limit["Hard"]))
        try:
            resource.setrlimit(which, wanted)
        except (ValueError, OSError) as e:
            hard = resource.getrlimit(which)[1]
            raise ContainerError(f"Cannot set ulimit {limit['Name']}={limit['Soft']}:{limit['Hard']}",
                                 f"{e}; the hard limit here is {'unlimited' if hard == resource.RLIM_INFINITY else hard} "
                                 "and raising it needs CAP_SYS_RESOURCE", "ask for no more than that hard limit") from None
