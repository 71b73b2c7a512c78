"""The kernel's own accounts of a probe, each gathered by a forked child: the drop reasons of the
skb:kfree_skb tracepoint (in a private tracefs instance, in a private mount namespace; not filtered
to the probe: host-wide), and the nftables packet trace of the probe itself (netdiag_trace_*
tables in each namespace on the path). Each child removes what it added before it reports, and
on SIGTERM from a dying parent; what a SIGKILL leaves, `netdiag system prune` removes."""
from __future__ import annotations

import errno
import os
import re
import secrets
import select
import signal
import time
from typing import Callable

from runtime.kernel import syscalls

from . import nftrace
from .children import Child, send_line, wait_line

DROPS_SCOPE = "all packets on the host during the probe window"
INSTANCE_PREFIX = "netdiag-"
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


# -- kfree_skb in a private tracefs instance ---------------------------------------------------------

def _tracefs_root() -> str:
    """In a private mount namespace (we are a forked child that unshared it): the tracefs root,
    mounting tracefs at /sys/kernel/tracing if nothing is mounted (the mount dies with us)."""
    for d in TRACEFS_DIRS:
        if os.path.isdir(f"{d}/instances"):
            return d
    syscalls.mount("tracefs", TRACEFS_DIRS[0], "tracefs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    if not os.path.isdir(f"{TRACEFS_DIRS[0]}/instances"):
        raise OSError(errno.ENOENT, "tracefs has no instances directory")
    return TRACEFS_DIRS[0]


def _private_mount_ns() -> None:
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def _cleaning_up() -> None:
    """From here on a stop signal (the parent dying while we finish) must not cut the clean-up
    short: an interrupted removal is what leaves a table or an instance behind."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def drop_filter(format_text: str) -> str | None:
    """The event filter that leaves out unannotated drops (kfree_skb() without a reason): numeric,
    from the event's own format (NOT_SPECIFIED is 2 on 6.x kernels, but the enum moves)."""
    if not re.search(r"\breason;", format_text):
        return None
    m = re.search(r'\{\s*(\d+),\s*"NOT_SPECIFIED"\s*\}', format_text)
    return f"reason != {m.group(1)}" if m else None


def _tracer_main(ctl: int, rep: int, name: str, max_life: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C; we stop on EOF or "stop"
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    _private_mount_ns()
    root = _tracefs_root()
    inst = f"{root}/instances/{name}"
    os.mkdir(inst, 0o700)
    try:
        notes = []
        try:
            _write(f"{inst}/buffer_size_kb", "512")
        except OSError:
            pass
        ev = f"{inst}/events/skb/kfree_skb"
        filt = drop_filter(_read(f"{ev}/format"))
        if filt:
            try:
                _write(f"{ev}/filter", filt)
            except OSError as e:
                notes.append(f"filter {filt!r} refused ({e.strerror}); all drops kept")
                filt = None
        _write(f"{ev}/enable", "1")
        try:
            send_line(rep, {"ready": True, "filter": filt, "notes": notes})
            wait_line(ctl, time.monotonic() + max_life)
        finally:
            _cleaning_up()
            _write(f"{ev}/enable", "0")
        drops, lost = parse_trace(_read(f"{inst}/trace"))
        if lost:
            notes.append(f"{lost} drop events lost (trace buffer overrun)")
        try:
            send_line(rep, {"drops": drops, "notes": notes})
        except OSError:
            pass  # the parent is gone; still remove the instance
    finally:
        _cleaning_up()
        _rmdir_instance(inst)


def _rmdir_instance(inst: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(inst)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    os.rmdir(inst)


_TRACE_LINE = re.compile(r"kfree_skb:.*?protocol=(\d+)\s+location=(\S+)\s+reason[:=]\s*(\S+)")


def parse_trace(text: str) -> tuple[list[dict], int]:
    """kfree_skb lines of a `trace` file, aggregated by reason and location; and the count of lost events."""
    counts: dict[tuple[str, str, int], int] = {}
    lost = 0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _TRACE_LINE.search(line)
        if m:
            key = (m.group(3), m.group(2), int(m.group(1)))
            counts[key] = counts.get(key, 0) + 1
            continue
        lm = re.search(r"\[LOST (\d+) EVENTS\]", line)
        if lm:
            lost += int(lm.group(1))
    drops = [{"reason": r, "location": loc, "protocol": p, "count": n} for (r, loc, p), n in counts.items()]
    drops.sort(key=lambda d: -d["count"])
    return drops, lost


def _in_private_tracefs(fn: Callable[[str], object], timeout: float = 5.0):
    """Run fn(tracefs_root) in a forked child inside a private mount namespace; its JSON result."""
    def main(ctl: int, rep: int) -> None:
        _private_mount_ns()
        send_line(rep, {"ok": fn(_tracefs_root())})

    child = Child(main, signal.SIGKILL)
    try:
        child.start()
        res = child.recv(time.monotonic() + timeout)
    finally:
        child.close(grace=1.0)
    if not res or "error" in res:
        raise OSError(errno.EIO, (res or {}).get("error", "tracefs helper did not answer"))
    return res["ok"]


def list_instances(prefix: str = INSTANCE_PREFIX) -> list[str]:
    """Names of tracefs instances starting with `prefix` (read in a private mount namespace)."""
    return _in_private_tracefs(lambda root: sorted(n for n in os.listdir(f"{root}/instances") if n.startswith(prefix)))


def instance_owner_gone(name: str) -> bool:
    """Whether the process that made this tracefs instance (netdiag-PID[-START]-TOKEN) is gone."""
    parts = name.removeprefix(INSTANCE_PREFIX).split("-")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[:-1]):
        return False
    return not nftrace.owner_alive(parts[0], parts[1] if len(parts) == 3 else None)


def remove_instance(name: str) -> None:
    """Remove one tracefs instance (e.g. one a killed tracer left)."""
    if not name.startswith(INSTANCE_PREFIX) or "/" in name:
        raise ValueError(f"not a netdiag instance: {name!r}")
    _in_private_tracefs(lambda root: _rmdir_instance(f"{root}/instances/{name}"))


class InstanceChild:
    """A forked child that owns one private tracefs instance, named after this process:
    `main(ctl, rep, name)` makes, reads and removes it; close() removes it when the child could not."""

    def __init__(self, main: Callable[[int, int, str], None]):
        from runtime.kernel.syscalls import proc_start_time

        # PID-START-TOKEN: system prune tells a dead owner from a reused pid
        self.name = f"{INSTANCE_PREFIX}{os.getpid()}-{proc_start_time(os.getpid()) or 0}-{secrets.token_hex(4)}"
        self.child = Child(lambda ctl, rep: main(ctl, rep, self.name), signal.SIGTERM)

    def start(self):
        self.child.start()
        return self

    def close(self) -> None:
        if self.child.pid is None:
            self.child.close(grace=0)
            return
        if not self.child.close(grace=3.0):
            try:  # it was killed before it could clean up
                remove_instance(self.name)
            except (OSError, ValueError):
                pass


class DropTracer(InstanceChild):
    def __init__(self, max_life: float):
        super().__init__(lambda ctl, rep, name: _tracer_main(ctl, rep, name, max_life))


# -- nftrace in a forked child -----------------------------------------------------------------------

def _nftrace_main(ctl: int, rep: int, ns_paths: list[str], proto: str, token: str, max_life: float) -> None:
    """Subscribe at once, add the trace tables when the mark comes, read events until "stop" (or EOF,
    or SIGTERM from a dying parent), remove the tables, then report. Table names carry our pid, so
    tables of a child killed outright are found by nftrace.prune()."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C; we stop on EOF or "stop"
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    deadline = time.monotonic() + max_life
    session = nftrace.Session(ns_paths, proto, name=nftrace.table_name(os.getpid(), token))
    try:
        msg = wait_line(ctl, deadline)
        if not isinstance(msg, dict) or "mark" not in msg:
            return  # the parent gave up before the probe was ready
        armed = session.arm(int(msg["mark"]))
        send_line(rep, {"ready": armed > 0, "traced": [ns.path for ns in session.ns if ns.armed], "notes": session.notes})
        session.notes = []
        poller = select.poll()
        for fd in [ctl] + session.fds():
            poller.register(fd, select.POLLIN)
        while time.monotonic() < deadline:  # read as events come: the order across namespaces is kept
            ready = {fd for fd, _ in poller.poll(max(deadline - time.monotonic(), 0) * 1000)}
            session.read()
            if ctl in ready:
                break  # "stop", or EOF: the parent is done (or gone)
        session.read()
        events = session.events()
        _cleaning_up()
        session.close()  # the tables go before we report: when probe() returns, they are gone
        send_line(rep, {"events": events, "notes": session.notes})
    finally:
        _cleaning_up()
        session.close()


class NfTracer:
    def __init__(self, ns_paths: list[str], proto: str, max_life: float):
        self.token = secrets.token_hex(4)
        self.ns_paths = list(ns_paths)
        self.child = Child(lambda ctl, rep: _nftrace_main(ctl, rep, self.ns_paths, proto, self.token, max_life),
                            signal.SIGTERM)
        self.reported = False  # its final report comes after it removed its tables
        self._name: str | None = None

    def start(self) -> "NfTracer":
        from runtime.kernel import nft

        nft._load()  # dlopen before fork: the child must not need the loader lock another thread may hold
        self.child.start()
        self._name = nftrace.table_name(self.child.pid, self.token)  # read while the child lives
        return self

    @property
    def name(self) -> str:  # the child names its tables after its own pid and start time
        return self._name or nftrace.table_name(self.child.pid, self.token)

    def close(self) -> list[str]:
        if self.child.pid is None:
            self.child.close(grace=0)  # never forked (or already closed): only pipes to close
            return []
        name = self.name
        self.child.close(grace=3.0)
        if self.reported:
            return []
        return nftrace.remove(self.ns_paths, name)  # it died (or was killed) before it could clean up
