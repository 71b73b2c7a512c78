"""The runtime's own long-lived helper processes (a network's DNS resolver, the cluster agent): a
`python -m MODULE ... --ready-fd N` in a session of its own, with this runtime on its path, that
says `ok ...` or `error: ...` on the ready pipe once it serves or has failed; and their stop."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path


def start(module: str, args: list[str], timeout: float) -> tuple[subprocess.Popen, str]:
    """Start the helper; return it and its first line ('' when it said nothing within `timeout` or
    exited first). OSError when the interpreter cannot run at all."""
    root = str(Path(__file__).resolve().parents[1])  # the directory holding the runtime package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    from .kernel.ns import own_pid_namespace_for_children

    r, w = os.pipe()
    try:
        with own_pid_namespace_for_children():  # not the container's, when a monitor starts it
            proc = subprocess.Popen([sys.executable, "-m", module, *args, "--ready-fd", str(w)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    close_fds=True, pass_fds=(w,), start_new_session=True, env=env)
    except OSError:
        os.close(r)
        raise
    finally:
        os.close(w)
    buf, deadline = b"", time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(r)
    return proc, buf.decode(errors="replace").strip()


def stop(pid: int, still_ours, term_wait: float, kill_wait: float) -> None:
    """SIGTERM, then SIGKILL if it lingers, while `still_ours()` says the pid is still our helper
    (a pid reused by another program is left alone). Fine when it is already gone."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not still_ours():
                return
            time.sleep(0.02)
