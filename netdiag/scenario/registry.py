"""Which scenarios are running: NETDIAG_ROOT/scenarios/<name>.json holds each one's lab name, its
state directory, when it started and how many hints were shown. Written atomically under a lock,
so two `start`s of one scenario cannot both win."""
from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from runtime import paths, state
from runtime.errors import Conflict, NotFound


def home() -> Path:
    """The NETDIAG_ROOT scenarios are started from (their registry, progress and worlds' state)."""
    return paths.root()


def _dir() -> Path:
    return home() / "scenarios"


def record_path(name: str) -> Path:
    return _dir() / f"{name}.json"


def get(name: str) -> dict | None:
    try:
        return state.read_json(record_path(name), None, expect=dict)
    except state.CorruptRecord:
        return {"name": name, "corrupt": True}


def running() -> list[dict]:
    d = _dir()
    if not d.is_dir():
        return []
    return [r for p in sorted(d.glob("*.json")) if (r := get(p.stem))]


@contextlib.contextmanager
def locked() -> Iterator[None]:
    with state.locked("scenarios"):
        yield


def save(rec: dict) -> None:
    state.write_json(record_path(rec["name"]), rec)


def forget(name: str) -> None:
    record_path(name).unlink(missing_ok=True)


def claim(name: str, slug: str, make_lab, **extra):
    """Reserve scenario `name` (refused while it runs): the lab `make_lab(state_root)` returns,
    recorded as building, so a stop from any process finds it even if the start dies."""
    with locked():
        if get(name):
            raise Conflict(f"Scenario {name} is already running", "one copy of a scenario runs at a time",
                           f"use it ('netdiag scenario shell {slug}'), or 'netdiag scenario stop {slug}'")
        lab = make_lab(record_path(name).with_suffix("") / "root")
        save({"name": name, "lab": lab.name, "state_dir": str(lab.state_dir), "started": now(), "hints": 0,
              "building": True, **extra})
    return lab


def built(name: str) -> None:
    """The scenario's world is complete."""
    rec = get(name) or {"name": name}
    rec.pop("building", None)
    save(rec)


def of_running(name: str, slug: str) -> dict:
    """The record of a running scenario, or NotFound that says how to start it."""
    rec = get(name)
    if not rec or rec.get("corrupt"):
        raise NotFound(f"Scenario {name} is not running", "", f"start it with 'netdiag scenario start {slug}'")
    return rec


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- progress: which scenarios were fixed, with how many hints (kept after stop) ------------------
def _progress_path() -> Path:
    return paths.root() / "scenario-progress.json"


def progress() -> dict:
    try:
        return state.read_json(_progress_path(), {}, expect=dict)
    except state.CorruptRecord:
        return {}


def mark_done(name: str, hints: int) -> None:
    with locked():
        done = progress()
        best = done.get(name, {}).get("hints")
        done[name] = {"fixed_at": now(), "hints": hints if best is None else min(best, hints)}
        state.write_json(_progress_path(), done)


# -- replays: worlds rebuilt from a snapshot (`scenario replay`), by prefix -------------------------
def _replay_path(prefix: str) -> Path:
    return paths.root() / "replays" / f"{prefix}.json"


def save_replay(rec: dict) -> None:
    state.write_json(_replay_path(rec["prefix"]), rec)


def replay(prefix: str) -> dict | None:
    try:
        return state.read_json(_replay_path(prefix), None, expect=dict)
    except state.CorruptRecord:
        return None


def replays() -> list[dict]:
    d = paths.root() / "replays"
    return [r for p in sorted(d.glob("*.json")) if (r := replay(p.stem))] if d.is_dir() else []


def forget_replay(prefix: str) -> None:
    _replay_path(prefix).unlink(missing_ok=True)
