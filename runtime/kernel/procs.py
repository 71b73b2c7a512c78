"""Processes by name: /proc/PID/comm read once per process (Docker's engines, by observation and
by the labs that start their own)."""
from __future__ import annotations

import os
from typing import Callable


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
