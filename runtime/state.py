"""Atomic JSON files and a state lock, so parallel commands never see half-written state.

Every file under NETDIAG_ROOT is written by `write_json`/`write_bytes`: a temp file beside it, then
a rename, so a reader sees the old content or the new, never a part. A full disk (ENOSPC, EDQUOT)
removes the temp file and raises DiskFull, which names the state directory and its free space."""
import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
from collections.abc import Iterator

from . import paths
from .errors import NetdiagError


def now_iso() -> str:
    """UTC now, as records and logs write it: datetime's isoformat(timespec="microseconds") with a
    Z, without importing datetime (every `run` writes several: start-up time is measured)."""
    import time

    seconds, ns = divmod(time.time_ns(), 10 ** 9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1000:06d}Z"

_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _FULL


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def free_space(path: Path) -> tuple[int, int] | None:
    """(bytes free to unprivileged writers, filesystem size) of the filesystem holding `path` (or
    its nearest existing parent); None when it cannot be asked."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


class DiskFull(NetdiagError):
    """A write failed for want of space. Names the state directory (or, for a file elsewhere such as
    `save -o`, that file) and how much room its filesystem has now."""

    def __init__(self, what: str, path: str | Path | None = None, *, cleaned: bool = True):
        root = paths.root()
        where = Path(path) if path else root
        inside = where == root or root in where.parents
        shown = f"the state directory {root} (NETDIAG_ROOT)" if inside else str(where)
        room = free_space(root if inside else where)
        left = f"{_size(room[0])} free of {_size(room[1])}" if room else "its free space unknown"
        fix = ("free space there ('netdiag system prune' removes stopped containers, their logs and unused "
               "images), or set NETDIAG_ROOT to a larger filesystem, then run the command again" if inside else
               "free space there or write elsewhere, then run the command again")
        why = (f"the filesystem of {shown} ran out of space; what was half-written has been removed, which "
               f"leaves {left}" if cleaned else f"the filesystem of {shown} is full ({left})")
        super().__init__(f"Cannot {what}", why, fix)
        self.path = where


@contextlib.contextmanager
def space_for(what: str, where: str | Path | None = None) -> Iterator[None]:
    """Turns a full disk met inside into DiskFull("Cannot {what}"), naming `where` (a file outside
    the state directory that is being written) or else the file the error names, or the state
    directory; other errors pass unchanged."""
    try:
        yield
    except DiskFull as e:  # a state write inside: the user asked for `what`, not for that file
        raise DiskFull(what, where or e.path) from None
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise DiskFull(what, where or e.filename) from None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise DiskFull(f"write {path.name}", path) from None
        raise


def _json(data: object) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: Path, data: object) -> None:
    _write_atomic(Path(path), _json(data))


def write_bytes(path: Path, data: bytes) -> None:
    _write_atomic(Path(path), data)


# A record that must land even on a full disk (a container's exit) has a spare: a file of SPARE bytes
# allocated beforehand beside it. When the ordinary write finds no space, the record is written into
# the spare's already allocated blocks and the spare renamed over the record (a rename needs no
# blocks); the spare is then made again where room allows.
SPARE = 64 * 1024


def _spare_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.spare")


def reserve(path: Path) -> bool:
    """Make sure `path` has its spare; False when there is no room for one (or no fallocate)."""
    spare = _spare_path(Path(path))
    try:
        if spare.stat().st_size >= SPARE:
            return True
    except FileNotFoundError:
        pass
    tmp = spare.with_name(f"{spare.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, SPARE)  # blocks allocated now, so later writes into them cannot fail
        finally:
            os.close(fd)
        os.replace(tmp, spare)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def write_json_reserved(path: Path, data: object) -> None:
    """write_json that falls back to the record's spare (see `reserve`) when the disk is full, and
    makes the spare again afterwards. DiskFull only when there is no spare or the record outgrew it."""
    path = Path(path)
    try:
        write_json(path, data)
    except DiskFull:
        body = _json(data)
        spare = _spare_path(path)
        try:
            fd = os.open(spare, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DiskFull(f"write {path.name}", path) from None
        try:
            if os.fstat(fd).st_size < len(body):
                raise DiskFull(f"write {path.name}", path)
            os.pwrite(fd, body, 0)
            os.ftruncate(fd, len(body))
        except OSError as e:
            if is_disk_full(e):
                raise DiskFull(f"write {path.name}", path) from None
            raise
        finally:
            os.close(fd)
        os.replace(spare, path)
    reserve(path)


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


def read_json(path: Path, default: object = None, *, expect: type | None = None) -> object:
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
