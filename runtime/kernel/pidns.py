"""Children born in this process's own PID namespace, also after unshare(CLONE_NEWPID) made the
next children a container's (a monitor's case). A CNI plugin run from a container's monitor must
not be a process of the container's namespace: it would see itself under a pid the host's /proc
does not know (the plugins open /proc/PID/task/TID/ns/net), the container could see and outlive
it, and once the container's init is gone no child can be forked there at all."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from .syscalls import CLONE_NEWPID, setns


@contextlib.contextmanager
def own_children() -> Iterator[None]:
    """For the block, children are forked into the caller's active PID namespace; afterwards into
    whatever namespace was prepared for them before (the container's, or the same one)."""
    prepared = os.open("/proc/self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(own, CLONE_NEWPID)
        finally:
            os.close(own)
        try:
            yield
        finally:
            setns(prepared, CLONE_NEWPID)
    finally:
        os.close(prepared)
