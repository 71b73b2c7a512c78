"""Processes: by name (/proc/PID/comm read once per process: Docker's engines, by observation and
by the labs that start their own), and the fields of /proc/PID/stat, parsed in one place."""
from __future__ import annotations

import os
from collections.abc import Callable


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (which may hold spaces and parentheses):
    [0] is field 3 (state), [1] the parent's pid, [6] the flags, [19] the start time. None when
    the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None


def pids_named(match: Callable[[str], bool]) -> list[int]:
    """Pids of the running processes whose comm (the kernel's 15-character name) `match`es."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if match(comm):
            out.append(int(entry.name))
    return out


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if `pid` exists (and, when given, is the same process: same start time)."""
    if pid <= 0:
        return False
    if start_time is None:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    st = proc_start_time(pid)
    return st is not None and st == start_time


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): guards against pid reuse."""
    fields = stat_fields(pid)
    if fields is None or fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])
