"""Volumes as Docker's `-v`: a host path bound into the container (a bind mount) or a named volume,
a directory netdiag owns under NETDIAG_ROOT/volumes/NAME/_data (Docker's layout), made on first use
and kept until removed. A spec is parsed and checked before a container exists; the mounts are
made by the container's init inside its own mount namespace (rootfs.setup), so nothing is mounted
on the host and nothing is left when the container ends."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .. import paths, state
from ..errors import Conflict, InvalidArgument, NotFound

NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # Docker's volume names
ANONYMOUS = "com.docker.volume.anonymous"  # Docker's label on a volume made for `-v /path` alone
_FIX = "use -v /host/path:/in/container[:ro] or -v VOLUME:/in/container[:ro]"


def parse(spec: str) -> dict:
    """A `-v` spec as Docker's inspect shows a mount: {"Type": "bind"|"volume", "Name" (volumes),
    "Source", "Destination", "RW"}. A lone container path is an anonymous volume (a fresh name)."""
    parts = spec.split(":")
    mode = "rw"
    if len(parts) == 3:
        *parts, mode = parts
    if len(parts) not in (1, 2) or mode not in ("rw", "ro") or not all(parts):
        raise InvalidArgument(f"Invalid volume specification {spec!r}", "it is SOURCE:DESTINATION[:ro|rw] or DESTINATION", _FIX)
    source, dest = (parts if len(parts) == 2 else ["", parts[0]])
    if not dest.startswith("/") or dest == "/":
        raise InvalidArgument(f"Invalid volume specification {spec!r}", f"the destination {dest!r} must be an absolute path "
                              "other than /", _FIX)
    if source.startswith("/"):
        return {"Type": "bind", "Source": source, "Destination": dest, "RW": mode == "rw"}
    name = source or os.urandom(32).hex()  # Docker names an anonymous volume by 64 hex digits
    if not NAME.fullmatch(name):
        raise InvalidArgument(f"Invalid volume name {name!r}", "a volume name is letters, digits and _.- (a host path starts with /)",
                              _FIX)
    return {**named(name), "Destination": dest, "RW": mode == "rw"}


def named(name: str) -> dict:
    """A named volume as a mount (without its destination): what ensure() takes."""
    return {"Type": "volume", "Name": name, "Source": str(data_dir(name))}


def data_dir(name: str) -> Path:
    return paths.root() / "volumes" / name / "_data"


def ensure(mount: dict, labels: dict | None = None) -> bool:
    """Make what a mount needs on the host: a named volume's directory (with its record), or a bind
    source that does not exist yet, as a directory (what Docker's -v does). True when a volume was made.
    An anonymous volume (64 hex digits, from `-v /path`) carries Docker's label saying so."""
    if mount["Type"] == "bind":
        if not os.path.lexists(mount["Source"]):
            Path(mount["Source"]).mkdir(parents=True)
        return False
    record = data_dir(mount["Name"]).parent / "volume.json"
    if record.exists():
        return False
    with state.locked("volumes"):
        if record.exists():
            return False
        data_dir(mount["Name"]).mkdir(parents=True, exist_ok=True)
        if re.fullmatch(r"[0-9a-f]{64}", mount["Name"]):
            labels = {**(labels or {}), ANONYMOUS: ""}
        state.write_json(record, {"Name": mount["Name"], "Driver": "local", "Mountpoint": mount["Source"],
                                  "Labels": dict(labels or {}), "Scope": "local"})
    return True


def get(name: str) -> dict:
    record = state.read_json(data_dir(name).parent / "volume.json", expect=dict) if NAME.fullmatch(name) else None
    if record is None:
        raise NotFound(f"No such volume: {name}", "", "list the volumes a stack uses with 'netdiag compose ps'")
    return record


def list_all() -> list[dict]:
    base = paths.root() / "volumes"
    return [get(d.name) for d in sorted(base.iterdir()) if (d / "volume.json").exists()] if base.is_dir() else []


def remove(name: str) -> None:
    """Remove a named volume and its data; refused while a container (running or not) uses it."""
    from . import container_records

    get(name)
    users = [c.name for c in container_records.list_all()
             if any(m.get("Name") == name for m in c.config.get("Mounts") or [])]
    if users:
        raise Conflict(f"Volume {name} is in use", f"used by {', '.join(users)}", "remove those containers first")
    shutil.rmtree(data_dir(name).parent)


def remove_anonymous(c) -> list[str]:
    """Remove the anonymous volumes a removed container had (Docker's `run --rm`, `compose down
    -v`); a named volume, or one another container still uses, stays. Their names."""
    from ..errors import NetdiagError

    removed = []
    for m in c.config.get("Mounts") or []:
        if m.get("Type") != "volume":
            continue
        try:
            if ANONYMOUS in (get(m["Name"]).get("Labels") or {}):
                remove(m["Name"])
                removed.append(m["Name"])
        except NetdiagError:  # already gone, or in use by another container
            continue
    return removed
