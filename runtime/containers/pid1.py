"""`--init` / Compose's `init: true`: what Docker's tini does as the container's PID 1 (a process
the kernel gives no default signal actions, and the parent of every orphan). The container's first
process forks its program and stays as PID 1: it forwards the signals a stop or kill sends, reaps
every child, and exits with the program's status (128+N when a signal N ended it). Imported before
pivot_root: after it, the host's Python files are out of reach."""
from __future__ import annotations

import os
import signal

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGWINCH, signal.SIGCONT, signal.SIGALRM)


def supervise(program: int) -> None:  # pragma: no cover - runs as the container's PID 1
    """Forward signals to `program` and reap children until it exits; then exit with its status."""
    for sig in FORWARDED:
        signal.signal(sig, lambda n, _frame: _send(program, n))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == program:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def _send(pid: int, sig: int) -> None:  # pragma: no cover - runs as the container's PID 1
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
