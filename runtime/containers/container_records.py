"""Container records in the state store, and the truth about their state.

NETDIAG_ROOT/containers/<id>/config.json is written once at create (plus renames); state.json is
written by whoever changes the state (the monitor, stop, rm). `load` checks the recorded pids
against the kernel, so `ps` and `inspect` tell the truth even after a monitor was killed.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from .. import paths, state
from ..errors import Conflict, InvalidArgument, NotFound
from ..kernel.procs import pid_alive  # not syscalls: ps needs no ctypes

RUNNING, CREATED, EXITED, DEAD = "running", "created", "exited", "dead"

_ADJ = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "proud", "quirky", "serene", "sharp", "tender", "upbeat", "vivid", "witty", "zealous")
_NOUN = ("turing", "hopper", "lovelace", "torvalds", "ritchie", "thompson", "knuth", "dijkstra",
         "cerf", "kahn", "metcalfe", "postel", "hamilton", "liskov", "perlman", "baran", "clark",
         "floyd", "jacobson", "mockapetris")


now_iso = state.now_iso


def _utc_iso(timestamp: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


class Container:
    """A container's record (a plain class: a dataclass would import dataclasses and inspect on
    every `ps` and `run`)."""

    _FIELDS = ("id", "config", "state", "broken", "unsupervised")

    def __init__(self, id: str, config: dict, state: dict, broken: str = "", unsupervised: bool = False):
        self.id, self.config, self.state = id, config, state
        self.broken = broken  # why its record cannot be used ("" when it can): shown as a dead container
        self.unsupervised = unsupervised  # running, but its monitor died: no logs, health checks or exit record

    def __repr__(self) -> str:
        return f"Container(id={self.id!r}, broken={self.broken!r}, unsupervised={self.unsupervised!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Container) and all(getattr(self, k) == getattr(other, k) for k in self._FIELDS)

    __hash__ = None  # mutable, like the dataclass it was

    @property
    def name(self) -> str:
        return self.config["Name"]

    @property
    def dir(self) -> Path:
        return paths.containers_dir() / self.id

    @property
    def status(self) -> str:
        return DEAD if self.broken else self.state.get("Status", CREATED)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def pid(self) -> int:
        return int(self.state.get("Pid") or 0)

    def save_state(self, *, must_land: bool = False, **changes) -> None:
        """Update the record. `must_land` (the monitor's start and exit records) falls back to the
        record's spare when the disk is full, so a container's exit is kept however full it is."""
        self.state.update(changes)
        (state.write_json_reserved if must_land else state.write_json)(self.dir / "state.json", self.state)


def new_id() -> str:
    return os.urandom(32).hex()  # what secrets.token_hex(32) does, without importing secrets (hmac, hashlib, random)


def _below(n: int) -> int:
    """A random number in [0, n) for names (a modulo bias this small does not matter there)."""
    return int.from_bytes(os.urandom(8), "little") % n


def _free_name(used) -> str:
    """Docker-style adjective_noun; once those run low (400 of them), a number is appended."""
    for attempt in range(1000):
        name = f"{_ADJ[_below(len(_ADJ))]}_{_NOUN[_below(len(_NOUN))]}"
        if attempt >= 20:
            name += str(1 + _below(10 ** (2 + attempt // 100) - 1))
        if name not in used:
            return name
    return f"{_ADJ[_below(len(_ADJ))]}_{_NOUN[_below(len(_NOUN))]}_{os.urandom(4).hex()}"


def _names_in_use() -> dict[str, str]:
    """{name: id} of every record, from the configs alone: a name is taken whatever the container's
    state, so the state records and the processes (two /proc reads each) of N containers are not
    read on every `run`. An unusable config is read as list_all() reads it."""
    d = paths.containers_dir()
    out = {}
    for sub in (d.iterdir() if d.is_dir() else ()):
        if not sub.is_dir() or sub.name.startswith("."):
            continue
        try:
            cfg = state.read_json(sub / "config.json", expect=dict)
        except state.CorruptRecord:
            cfg = {}
        if cfg is None:  # being created: its name is not reserved yet (list_all skips it too)
            continue
        if all(isinstance(cfg.get(k), kind) for k, kind in _CONFIG_SHAPE):
            out[cfg["Name"]] = sub.name
        else:
            c = _load_dir(sub)
            if c:
                out[c.name] = c.id
    return out


def create_record(config: dict, name: str | None) -> Container:
    """Reserve a unique name and id and write the record (under the names lock)."""
    with state.locked("names"):
        used = _names_in_use()
        if name:
            if name in used:
                raise Conflict(
                    f"The container name {name!r} is already in use by container {used[name][:12]}",
                    "names are unique",
                    f"remove that container ('netdiag rm -f {name}') or choose another name",
                )
        else:
            name = _free_name(used)
        cid = new_id()
        c = Container(cid, {**config, "Id": cid, "Name": name, "Created": now_iso()}, {"Status": CREATED})
        c.dir.mkdir(parents=True)
        try:
            with state.space_for(f"create container {name}"):
                state.write_json(c.dir / "state.json", c.state)
                if not state.reserve(c.dir / "state.json"):  # the room its exit record will need
                    raise OSError(errno.ENOSPC, "no room for the state record's spare", str(c.dir))
                state.write_json(c.dir / "config.json", c.config)  # last: it makes the record visible
        except BaseException:
            import shutil

            shutil.rmtree(c.dir, ignore_errors=True)
            raise
    return c


def _load_dir(d: Path) -> Container | None:
    """The container in `d`; None while it is being created (no config.json yet: prune removes those
    a killed `run` left). A corrupt record becomes a dead container carrying the reason, so one bad
    file never breaks commands about the others, and `rm -f` and `system prune` can remove it."""
    try:
        cfg = state.read_json(d / "config.json", expect=dict)
        if cfg is None:
            return None
        missing = [k for k, kind in _CONFIG_SHAPE if not isinstance(cfg.get(k), kind)]
        if missing:
            raise state.CorruptRecord(d / "config.json", f"it lacks {', '.join(missing)}")
    except state.CorruptRecord as e:
        return _broken(d, {}, e)
    try:
        st = state.read_json(d / "state.json", {}, expect=dict)
    except state.CorruptRecord as e:
        return _broken(d, cfg, e)
    c = Container(d.name, cfg, st)
    _settle_dead(c)
    return c


_CONFIG_SHAPE = (("Name", str), ("Config", dict), ("HostConfig", dict))


def _broken(d: Path, cfg: dict, e: state.CorruptRecord) -> Container:
    """A dead container for an unusable record: what config there is, else a skeleton named by its
    short id (the name is in the lost file)."""
    try:
        created = _utc_iso(d.stat().st_mtime)
    except OSError:
        created = ""
    skeleton = {"Id": d.name, "Name": d.name[:12], "Created": created, "Path": "", "Args": [], "Image": "",
                "ImageRef": "", "Config": {}, "HostConfig": {}, "NetworkSettings": {"Networks": {}}}
    why = f"its {e.path.name} is unusable: {e.why}"
    return Container(d.name, {**skeleton, **cfg}, {"Status": DEAD, "Error": why}, broken=why)


UNKNOWN_EXIT = 255  # what Docker records when an exit code was lost (a daemon that died)
UNSUPERVISED = "its monitor died: nothing keeps its logs, runs its health checks or records its exit"
_EXIT_MARK = ".exit-unrecorded-"  # + code: a monitor's last word when even its record's spare failed


def exit_marker(c: Container, code: int) -> bool:
    """The monitor's last resort when no exit record could be written: an empty file whose name
    holds the exit code (it needs an inode, no data block). True when it was made."""
    try:
        (c.dir / f"{_EXIT_MARK}{int(code)}").touch()
        return True
    except OSError:
        return False


def _exit_mark(c: Container) -> tuple[int, str] | None:
    """(exit code, when) from the newest marker a monitor left, if any."""
    found = []
    for m in c.dir.glob(_EXIT_MARK + "*"):
        try:
            found.append((m.stat().st_mtime, int(m.name[len(_EXIT_MARK):])))
        except (OSError, ValueError):  # removed meanwhile (a start), or not one of ours
            continue
    if not found:
        return None
    mtime, code = max(found)
    return code, _utc_iso(mtime)


def clear_exit_markers(c: Container) -> None:
    for m in c.dir.glob(_EXIT_MARK + "*"):
        m.unlink(missing_ok=True)


def _settle_dead(c: Container) -> None:
    """A record that says running while its monitor and process are gone is a dead container; one
    whose process runs without its monitor is unsupervised (shown so, and `system repair` adopts it)."""
    if c.status != RUNNING:
        return
    alive = pid_alive(c.pid, c.state.get("PidStart"))
    monitor = pid_alive(int(c.state.get("MonitorPid") or 0), c.state.get("MonitorStart"))
    if alive and not monitor:
        c.unsupervised = True
        return
    if alive or monitor:
        return
    kept = _exit_mark(c)
    if kept is not None:
        code, when = kept
        c.state.update(Status=EXITED, ExitCode=int(code), FinishedAt=when, Pid=0,
                       Error="its monitor could not write the exit record (the state directory was full): "
                             "the exit code was kept, its logs may be incomplete")
        return
    c.state.update(Status=EXITED, ExitCode=UNKNOWN_EXIT,
                   Error="the container's monitor process died; exit code unknown",
                   FinishedAt=c.state.get("FinishedAt") or now_iso(), Pid=0)


def list_all() -> list[Container]:
    d = paths.containers_dir()
    if not d.is_dir():
        return []
    out = []
    for sub in d.iterdir():
        if sub.is_dir() and not sub.name.startswith("."):
            c = _load_dir(sub)
            if c:
                out.append(c)
    out.sort(key=lambda c: str(c.config.get("Created", "")), reverse=True)
    return out


def get(ref: str) -> Container:
    """By exact name, full id, or unique id prefix (like Docker)."""
    if not ref:
        raise InvalidArgument("A container name or id is required")
    ref = ref.removeprefix("/")
    full = paths.containers_dir() / ref
    if len(ref) == 64 and full.is_dir():
        c = _load_dir(full)
        if c:
            return c
    every = list_all()
    for c in every:
        if c.name == ref:
            return c
    hits = [c for c in every if c.id.startswith(ref)] if all(ch in "0123456789abcdef" for ch in ref) else []
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise Conflict(f"Container id prefix {ref!r} is ambiguous", f"{len(hits)} containers match", "give more characters of the id, or the name")
    raise NotFound(f"No such container: {ref}", "", "list containers with 'netdiag ps -a'")


def delete_record(c: Container) -> None:
    import shutil

    shutil.rmtree(c.dir, ignore_errors=True)


def human_duration(seconds: float) -> str:
    """Docker's words for a duration (go-units HumanDuration): "2 hours", "3 weeks", "2 years"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} second{'s' if s > 1 else ''}"
    minutes, hours = s // 60, s // 3600
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _days_since_epoch(y: int, m: int, d: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def parse_iso(ts: str) -> float:
    """Seconds since the epoch of a record's timestamp. The form now_iso writes is read by hand:
    `ps` reads one per container, and datetime's import would be most of that work."""
    if isinstance(ts, str) and len(ts) == 27 and ts[4] + ts[7] + ts[10] + ts[13] + ts[16] + ts[19] + ts[26] == "--T::.Z":
        try:
            fields = [int(ts[a:b]) for a, b in ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19), (20, 26))]
        except ValueError:
            fields = None
        if fields and 1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60 and fields[5] < 60:
            y, mo, d, h, mi, sec, us = fields
            return _days_since_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec + us / 1e6
    from datetime import datetime

    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return time.time()


def status_line(c: Container) -> str:
    now = time.time()
    if c.status == RUNNING:
        line = f"Up {human_duration(now - parse_iso(c.state.get('StartedAt', '')))}"
        if c.unsupervised:  # its Health is stale: nobody runs the checks
            return f"{line} (unsupervised: monitor died; run 'netdiag system repair')"
        health = (c.state.get("Health") or {}).get("Status")
        return f"{line} ({health})" if health else line
    if c.status == EXITED:
        return f"Exited ({c.state.get('ExitCode', 0)}) {human_duration(now - parse_iso(c.state.get('FinishedAt', '')))} ago"
    return c.status.capitalize()


def proc_ok(c: Container) -> bool:
    return c.running and pid_alive(c.pid, c.state.get("PidStart")) and os.path.exists(f"/proc/{c.pid}/ns/net")


SHARED_NETNS = "container:"  # --network container:ID: the network namespace of another container (Docker's)


def netns_owner(host_config: dict) -> str | None:
    """The id of the container whose network namespace this one joins, or None."""
    mode = host_config.get("NetworkMode") or ""
    return mode[len(SHARED_NETNS):] if mode.startswith(SHARED_NETNS) else None


def running_netns_owner(host_config: dict) -> Container | None:
    """The running container whose network namespace a container joins (None: it has its own or
    the host's); a clear error when that container is gone or stopped."""
    from ..errors import ContainerError

    ref = netns_owner(host_config)
    if ref is None:
        return None
    owner = get(ref)
    if not proc_ok(owner):
        raise ContainerError(f"Cannot join the network namespace of container {owner.name}", f"it is {owner.status}",
                             f"start it first ('netdiag start {owner.name}')")
    return owner


def extra_hosts(config: dict) -> list[str]:
    """/etc/hosts lines of HostConfig.ExtraHosts (--add-host, Compose's extra_hosts: HOST:IP), as Docker writes them."""
    return [f"{entry.partition(':')[2]}\t{entry.partition(':')[0]}" for entry in (config.get("HostConfig") or {}).get("ExtraHosts") or []]
