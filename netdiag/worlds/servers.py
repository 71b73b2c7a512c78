"""Server processes a world runs for its tests (a registry, its token service, a front, a
resolver): started in one of the world's namespaces, in a session of their own and with the world's
environment (so the world's leak check sees any left running), their output in a log file."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def spawn(world, where: str | None, argv: list[str], logfile: Path) -> subprocess.Popen:
    with open(logfile, "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=world.env,
                                start_new_session=True, preexec_fn=world.enter(where))


def wait_ready(proc: subprocess.Popen, logfile: Path, ready, timeout: float) -> None:
    """Until `ready()`; a process that exits first or a timeout is killed and raised with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    kill(proc)
    raise RuntimeError(f"{Path(proc.args[0]).name} did not start: {logfile.read_text(errors='replace')[-1500:]}")


def logged(logfile: Path, line: str):
    """A readiness check: `line` is in the log."""
    return lambda: line in logfile.read_text(errors="replace")


def kill(proc: subprocess.Popen | None) -> None:
    """The process and its session's other processes; fine when they are gone."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
