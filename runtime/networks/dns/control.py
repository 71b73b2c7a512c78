"""Starting and stopping resolver processes (the runtime's side)."""
from __future__ import annotations

import os
import sys
import time

_children: dict = {}  # pid -> Popen, so stop() can reap what we started


def spawn(listen_ip: str | None, records_file: str, port: int = 53, timeout: float = 5.0) -> tuple[int, int]:
    """Start a resolver process; return (pid, bound port) once it listens. Port 0 = any free port;
    no listen_ip: it serves only the sandboxes its records file lists (overlays).
    Raises KernelError (and leaves no process behind) if it cannot start."""
    from runtime import daemon
    from runtime.errors import KernelError

    what = f"Cannot start the DNS resolver on {listen_ip} port {port}" if listen_ip else "Cannot start the overlays' DNS resolver"
    started = time.monotonic()
    where = ["--listen", listen_ip, "--port", str(port)] if listen_ip else []
    try:
        proc, line = daemon.start("runtime.networks.dns", [*where, "--records", os.path.abspath(records_file)], timeout)
    except OSError as e:
        raise KernelError(what, f"could not run {sys.executable}: {e}") from e
    if line.startswith("ok "):
        _children[proc.pid] = proc
        return proc.pid, int(line.split()[1])
    proc.kill()
    proc.wait()
    if line:
        why = line.removeprefix("error: ")
    elif time.monotonic() >= started + timeout:
        why = f"it did not report ready within {timeout:g} s"
    else:
        why = f"it exited with status {proc.returncode} before listening"
    raise KernelError(what, why, "check that the network's gateway address is configured on the host "
                      "and that nothing else listens on that port")


def start(listen_ip: str, records_file: str, port: int = 53) -> int:
    """Start the resolver of a network; returns its pid (see spawn() for the bound port too)."""
    return spawn(listen_ip, records_file, port)[0]


def reap() -> None:
    """Collect resolvers this process started that have ended meanwhile (stopped by another
    process): a long-lived starter (the cluster agent) must not keep them as zombies."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


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
    from runtime import daemon

    daemon.stop(pid, lambda: _is_resolver(pid), timeout, 1.0)
