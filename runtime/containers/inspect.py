"""`inspect` output with Docker's field names (plus nothing Docker users would not recognise)."""
from __future__ import annotations

from . import container_records


def docker_host_config(host: dict) -> dict:
    """HostConfig in Docker's words: the published ports as PortBindings ({"80/tcp": [{"HostIp",
    "HostPort"}]}, a host port left to the runtime is ""); netdiag's own record of them stays out."""
    out = {k: v for k, v in host.items() if k != "Publish"}
    bindings: dict[str, list] = {}
    for p in host.get("Publish") or []:
        for offset in range(p["ctr_end"] - p["ctr_start"] + 1):
            port = p["host_start"] + offset if p.get("host_start") else None
            bindings.setdefault(f"{p['ctr_start'] + offset}/{p['proto']}", []).append(
                {"HostIp": p.get("host_ip") or "", "HostPort": str(port) if port else ""})
    out["PortBindings"] = bindings
    return out


def container_json(c: container_records.Container) -> dict:
    st, host = c.state, c.config["HostConfig"]
    lower = []
    try:
        from .lifecycle import lower_dirs

        lower = [str(p) for p in lower_dirs(c)]
    except Exception:  # noqa: BLE001 - an image removed under a stopped container still inspects
        pass
    state = {
        "Status": c.status,
        "Running": c.status == container_records.RUNNING,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": bool(st.get("OOMKilled")),
        "Dead": c.status == container_records.DEAD,
        "Pid": c.pid if c.status == container_records.RUNNING else 0,
        "ExitCode": st.get("ExitCode", 0),
        "Error": (f"{container_records.UNSUPERVISED}; run 'netdiag system repair' to adopt it" if c.unsupervised
                  else st.get("Error", "")),
        "StartedAt": st.get("StartedAt") or "0001-01-01T00:00:00Z",
        "FinishedAt": st.get("FinishedAt") or "0001-01-01T00:00:00Z",
    }
    if st.get("Health"):
        state["Health"] = st["Health"]
    if st.get("LogLinesDropped"):  # netdiag's own: output lost while the state directory was full
        state["LogLinesDropped"] = st["LogLinesDropped"]
    return {
        "Id": c.id,
        "Created": c.config.get("Created"),
        "Path": c.config.get("Path", ""),
        "Args": c.config.get("Args", []),
        "State": state,
        "Image": c.config.get("Image"),
        "ResolvConfPath": str(c.dir / "resolv.conf"),
        "HostnamePath": str(c.dir / "hostname"),
        "HostsPath": str(c.dir / "hosts"),
        "LogPath": str(c.dir / "container.log"),
        "Name": "/" + c.name,
        "RestartCount": st.get("RestartCount", 0),
        "Driver": "overlay",
        "HostConfig": docker_host_config(host),
        "Mounts": [{**m, "Mode": "" if m["Type"] == "volume" else "rw" if m["RW"] else "ro", "Propagation": "rprivate",
                    **({"Driver": "local"} if m["Type"] == "volume" else {})} for m in c.config.get("Mounts") or []],
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": ":".join(reversed(lower)),
                "UpperDir": str(c.dir / "upper"),
                "WorkDir": str(c.dir / "work"),
                "MergedDir": str(c.dir / "merged"),
            },
        },
        "Config": c.config["Config"],
        "NetworkSettings": _network_settings(c),
        "Confinement": _confinement(host),
    }


def _confinement(host: dict) -> dict:
    """What Docker leaves the reader to derive from HostConfig: the capability set, which seccomp
    profile, no_new_privs, the masked and read-only paths and the device rules that apply."""
    from . import security

    return security.describe(host)


def _repo_digests(image_id: str) -> list[str]:
    from ..images import repodigests

    return repodigests.of(image_id)


def image_json(img) -> dict:
    cfg = img.config
    return {
        "Id": img.id,
        "RepoTags": img.tags,
        "RepoDigests": _repo_digests(img.id),
        "Created": cfg.get("created", ""),
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Size": img.size,
        "Config": cfg.get("config", {}),
        "RootFS": {"Type": "layers", "Layers": img.layers},
        "History": cfg.get("history", []),
        "Manifest": img.manifest_digest,
    }


def _network_settings(c: container_records.Container) -> dict:
    """Docker's NetworkSettings, plus the host-side veth of each endpoint (Docker lacks it)."""
    from . import endpoints
    from ..networks import network_records as nets

    mode = c.config["HostConfig"].get("NetworkMode", "none")
    eps = endpoints.endpoints(c) if c.running else {}
    networks, ports = {}, {}
    if mode in ("host", "none"):
        networks[mode] = {}
    for name in endpoints.bridge_networks(c):
        e = eps.get(name) or {}
        net = nets.find(name)
        networks[name] = {
            "Aliases": (c.config["NetworkSettings"]["Networks"][name] or {}).get("Aliases") or [],
            "NetworkID": net["Id"] if net else "",
            "EndpointID": e.get("EndpointID", ""),
            "Gateway": e.get("Gateway") or (nets.ipam(net).get("Gateway", "") if net and e else ""),  # a CNI result says it
            "IPAddress": e.get("IPv4Address", "").split("/")[0],
            "IPPrefixLen": int(e["IPv4Address"].split("/")[1]) if "/" in e.get("IPv4Address", "") else 0,
            "MacAddress": e.get("MacAddress", ""),
            "Interface": e.get("Interface", ""),
            "HostVeth": e.get("HostVeth", ""),
        }
        for p in e.get("Ports", []):
            for offset in range(p["ctr_end"] - p["ctr_start"] + 1):
                ports.setdefault(f"{p['ctr_start'] + offset}/{p['proto']}", []).append(
                    {"HostIp": p["host_ip"] or "0.0.0.0", "HostPort": str(p["host_start"] + offset)})
    return {"Networks": networks, "Ports": ports}
