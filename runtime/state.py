"""Atomic JSON files and a state lock, so parallel commands never see half-written state."""
import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from . import paths
from .errors import NetdiagError


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class CorruptRecord(NetdiagError, ValueError):
    """A state file that exists but cannot be used (truncated, not JSON, the wrong shape, unreadable).

    Raised where it is read, naming the file: code that lists many objects (containers, networks)
    catches it per object and shows that object as broken; anywhere else it reaches the CLI as an
    error (exit 1), never as a traceback. A ValueError too, for callers that treat any bad
    content alike (caches)."""

    def __init__(self, path: Path, why: str, fix: str = ""):
        self.path = Path(path)
        super().__init__(f"The state file {path} is unusable", why,
                         fix or "remove the object it belongs to, or restore the file from a backup")


_KINDS = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
          type(None): "null"}


def read_json(path: Path, default: Any = None, *, expect: type | None = None) -> Any:
    """The JSON in `path`, or `default` when there is no such file. Raises CorruptRecord when the
    file cannot be read or parsed, or (with `expect`) holds another type than `expect`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return default
    except OSError as e:
        raise CorruptRecord(path, f"it cannot be read ({e.strerror or e})") from None
    if not data.strip():
        raise CorruptRecord(path, "it is empty")
    try:
        value = json.loads(data)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise CorruptRecord(path, f"it is not valid JSON ({e})") from None
    if expect is not None and not isinstance(value, expect):
        raise CorruptRecord(path, f"it holds {_KINDS.get(type(value), 'value')} where netdiag writes {_KINDS.get(expect, expect.__name__)}")
    return value


@contextlib.contextmanager
def locked(name: str = "state", *, shared: bool = False) -> Iterator[None]:
    """An exclusive lock over a piece of state (e.g. names and ids, an IPAM pool); `shared` for
    the many holders that only need to keep an exclusive one out."""
    lock_dir = paths.root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_SCRATCH = ".scratch-"


@contextlib.contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A private directory under NETDIAG_ROOT for a command's temporary files, removed on the way
    out (Ctrl-C included). Its name carries the owner's pid and start time, so `sweep_scratch`
    removes exactly those whose command was killed."""
    import shutil
    import tempfile

    from .kernel.syscalls import proc_start_time

    paths.root().mkdir(parents=True, exist_ok=True)
    me = os.getpid()
    d = Path(tempfile.mkdtemp(dir=paths.root(), prefix=f"{_SCRATCH}{kind}-{me}-{proc_start_time(me)}-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sweep_scratch() -> list[Path]:
    """Remove the scratch directories of commands that are gone; returns them."""
    import shutil

    from .kernel.syscalls import pid_alive

    gone = []
    root = paths.root()
    for d in root.glob(_SCRATCH + "*") if root.is_dir() else ():
        fields = d.name[len(_SCRATCH):].split("-")
        try:
            pid, start = int(fields[-3]), int(fields[-2])
        except (IndexError, ValueError):
            continue  # not one of ours
        if not pid_alive(pid, start):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone
