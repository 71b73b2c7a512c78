"""`inspect` output with Docker's field names (plus nothing Docker users would not recognise)."""
from __future__ import annotations

from . import model


def container_json(c: model.Container) -> dict:
    st, host = c.state, c.config["HostConfig"]
    lower = []
    try:
        from .lifecycle import lower_dirs

        lower = [str(p) for p in lower_dirs(c)]
    except Exception:  # noqa: BLE001 - an image removed under a stopped container still inspects
        pass
    state = {
        "Status": c.status,
        "Running": c.status == model.RUNNING,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": bool(st.get("OOMKilled")),
        "Dead": c.status == model.DEAD,
        "Pid": c.pid if c.status == model.RUNNING else 0,
        "ExitCode": st.get("ExitCode", 0),
        "Error": st.get("Error", ""),
        "StartedAt": st.get("StartedAt") or "0001-01-01T00:00:00Z",
        "FinishedAt": st.get("FinishedAt") or "0001-01-01T00:00:00Z",
    }
    if st.get("Health"):
        state["Health"] = st["Health"]
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
        "RestartCount": 0,
        "Driver": "overlay",
        "HostConfig": host,
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
        "NetworkSettings": {"Networks": {host.get("NetworkMode", "none"): {}}, "Ports": {}},
    }


def image_json(img) -> dict:
    cfg = img.config
    return {
        "Id": img.id,
        "RepoTags": img.tags,
        "Created": cfg.get("created", ""),
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Size": img.size,
        "Config": cfg.get("config", {}),
        "RootFS": {"Type": "layers", "Layers": img.layers},
        "History": cfg.get("history", []),
        "Manifest": img.manifest_digest,
    }
