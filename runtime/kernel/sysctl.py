"""Sysctls of the calling thread's network namespace (/proc/sys/net follows the reader's namespace)."""
from __future__ import annotations


def read(key: str) -> str | None:
    """`net/ipv4/ip_forward` -> "1" (None when the file is missing or unreadable)."""
    try:
        with open(f"/proc/sys/{key}") as f:
            return f.read().strip()
    except OSError:
        return None


def write(key: str, value: str) -> None:
    """Write /proc/sys/KEY unless it already holds `value`."""
    if read(key) == value:
        return
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)
