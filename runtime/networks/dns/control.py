"""Starting and stopping resolver processes (the runtime's side)."""
from __future__ import annotations

import os
import signal
import sys
import time

_children: dict = {}  # pid -> Popen, so stop() can reap what we started


def spawn(listen_ip: str, records_file: str, port: int = 53, timeout: float = 5.0) -> tuple[int, int]:
    """Start a resolver process; return (pid, bound port) once it listens. Port 0 = any free port.
    Raises KernelError (and leaves no process behind) if it cannot start."""
    import select
    import subprocess
    from pathlib import Path

    from runtime.errors import KernelError

    what = f"Cannot start the DNS resolver on {listen_ip} port {port}"
    root = str(Path(__file__).resolve().parents[3])  # the directory holding the runtime package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.networks.dns", "--listen", listen_ip, "--port", str(port),
             "--records", os.path.abspath(records_file), "--ready-fd", str(w)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, pass_fds=(w,), start_new_session=True, env=env)
    except OSError as e:
        os.close(r)
        raise KernelError(what, f"could not run {sys.executable}: {e}") from e
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
    line = buf.decode(errors="replace").strip()
    if line.startswith("ok "):
        _children[proc.pid] = proc
        return proc.pid, int(line.split()[1])
    proc.kill()
    proc.wait()
    if line:
        why = line.removeprefix("error: ")
    elif time.monotonic() >= deadline:
        why = f"it did not report ready within {timeout:g} s"
    else:
        why = f"it exited with status {proc.returncode} before listening"
    raise KernelError(what, why, "check that the network's gateway address is configured on the host "
                      "and that nothing else listens on that port")


def start(listen_ip: str, records_file: str, port: int = 53) -> int:
    """Start the resolver of a network; returns its pid (see spawn() for the bound port too)."""
    return spawn(listen_ip, records_file, port)[0]


def _is_resolver(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"runtime.networks.dns" in f.read()
    except OSError:
        return False  # gone (a zombie has an empty cmdline, so it counts as gone too)


def stop(pid: int, timeout: float = 2.0) -> None:
    """SIGTERM the resolver, SIGKILL it if it lingers. Fine if it is already gone; a pid that
    was reused by some other program is left alone."""
    proc = _children.pop(pid, None)
    if proc is not None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except Exception:  # subprocess.TimeoutExpired
                proc.kill()
                proc.wait()
        return
    if pid <= 0 or not _is_resolver(pid):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 1.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _is_resolver(pid):
                return
            time.sleep(0.02)
