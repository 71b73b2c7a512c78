"""Run a process inside a running container: join its cgroups and namespaces, take on the same
confinement as its init (capabilities, seccomp, no_new_privs), then exec.

Every descriptor but stdio is closed first: a descriptor the caller holds open on a host directory
would otherwise follow the process in, and /proc/self/fd/N/.. walks out of the container's root
(CVE-2024-21626)."""
from __future__ import annotations

import fcntl
import os
import select
import signal
import termios
import time

from ..kernel import syscalls as sc
from ..errors import ContainerError
from . import cgroups, model, procenv, security  # imported now: after setns(mnt) the host's modules are out of reach
from . import seccomp  # noqa: F401 - loaded by security.enter after setns(mnt)

_NS_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt")  # mnt last: after it /proc is the container's


def _require_running(c: model.Container) -> None:
    if not model.proc_ok(c):
        raise ContainerError(
            f"Container {c.name} is not running",
            f"its state is {c.status}",
            f"start it first ('netdiag start {c.name}')",
        )


def _close_fds(keep: int) -> None:
    """Close every descriptor but stdio and `keep` (a close-on-exec error pipe)."""
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def _enter(c: model.Container) -> None:
    """Join the container's cgroups (all hierarchies the init is in, read while the host's /sys is
    still ours), then its namespaces (in a forked child: the PID ns applies to its children)."""
    cgroups.join(c.pid, os.getpid())
    fds = []
    for ns in _NS_ORDER:
        path = f"/proc/{c.pid}/ns/{ns}"
        if os.stat(path).st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    for fd in fds:
        sc.setns(fd, 0)
        os.close(fd)


def _exec(c: model.Container, plan: security.Plan, argv: list[str], env_extra: list[str], workdir: str | None,
          user: str | None) -> None:
    cfg = c.config["Config"]
    env = procenv.env({**cfg, "Env": list(cfg.get("Env") or []) + list(env_extra)})
    uid, gid, groups, home = procenv.user(user if user is not None else cfg.get("User") or "")
    env.setdefault("HOME", home)
    os.chdir(workdir or cfg.get("WorkingDir") or "/")
    security.enter(plan, uid, gid, groups)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.execvpe(argv[0], argv, env)


def exec_in(c: model.Container, argv: list[str], *, env: list[str] = (), workdir: str | None = None,
            user: str | None = None, interactive: bool = False, tty: bool = False) -> int:
    """`netdiag exec`: run argv in the container with the CLI's stdio; returns its exit code."""
    _require_running(c)
    if not argv:
        raise ContainerError("No command given to exec", "", "give a command, e.g. 'netdiag exec web sh -c \"ip addr\"'")
    plan = security.plan(c.config["HostConfig"])
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os.close(err_r)
        try:
            _close_fds(err_w)
            if not interactive:
                devnull = os.open("/dev/null", os.O_RDONLY)
                os.dup2(devnull, 0)
            _enter(c)
            master = slave = None
            if tty:  # opened after joining the mount namespace: the pty lives in the container's devpts
                master, slave = os.openpty()
            inner = os.fork()
            if inner == 0:
                try:
                    if tty:
                        _take_terminal(master, slave)
                    _exec(c, plan, argv, env, workdir, user)
                except FileNotFoundError:
                    os.write(err_w, f'exec: "{argv[0]}": executable file not found in $PATH'.encode())
                    os._exit(127)
                except BaseException as e:  # noqa: BLE001
                    os.write(err_w, str(e).encode())
                    os._exit(126)
            os.close(err_w)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if tty:
                os.close(slave)
                _proxy(master, interactive)
            _, status = os.waitpid(inner, 0)
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)
        except BaseException as e:  # noqa: BLE001
            os.write(err_w, str(e).encode())
            os._exit(126)
    os.close(err_w)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the process in the container gets ^C
    try:
        with _raw_terminal(tty and interactive):
            _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, old)
    err = b""
    while chunk := os.read(err_r, 4096):
        err += chunk
    os.close(err_r)
    code = os.waitstatus_to_exitcode(status)
    if err:
        raise ContainerError(f"Cannot exec in container {c.name}", err.decode(errors="replace"),
                             "check that the program exists in the image ('netdiag exec NAME ls /bin')")
    return 128 - code if code < 0 else code


def run_captured(c: model.Container, argv: list[str], timeout: float) -> tuple[int, str]:
    """Run argv in the container, capturing output, killed after `timeout` s (health checks)."""
    plan = security.plan(c.config["HostConfig"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        try:
            os.close(r)
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(w, 1)
            os.dup2(w, 2)
            _close_fds(2)
            _enter(c)
            os.setpgid(0, 0)
            _exec(c, plan, argv, [], None, None)
        except BaseException as e:  # noqa: BLE001
            os.write(2, str(e).encode())
        os._exit(127)
    os.close(w)
    out, deadline, timed_out = b"", time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([r], [], [], max(0.0, left))
        if not ready:
            timed_out = True
            break
        chunk = os.read(r, 4096)
        if not chunk:
            break
        out += chunk[: max(0, 4096 - len(out))]
    os.close(r)
    if timed_out:
        for target in (-pid, pid):
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if timed_out:
        return -1, f"Health check exceeded timeout ({timeout:g}s)"
    return (128 - code if code < 0 else code), out.decode(errors="replace")


def _take_terminal(master: int, slave: int) -> None:
    """In the exec'd process: a new session whose controlling terminal is the pty."""
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _proxy(master: int, interactive: bool) -> None:
    """Copy the CLI's stdin to the pty and the pty to the CLI's stdout until the program exits."""
    sources = [master] + ([0] if interactive else [])
    while True:
        ready, _, _ = select.select(sources, [], [])
        if 0 in ready:
            data = os.read(0, 4096)
            if data:
                os.write(master, data)
            else:  # stdin ended: pass an end-of-file (^D) and stop reading it
                os.write(master, b"\x04")
                sources.remove(0)
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the program closed the terminal
                data = b""
            if not data:
                os.close(master)
                return
            os.write(1, data)


class _raw_terminal:
    """Put the CLI's own terminal in raw mode while a pty is attached, and restore it after."""

    def __init__(self, wanted: bool):
        self.saved = None
        self.wanted = wanted and os.isatty(0)

    def __enter__(self):
        if self.wanted:
            import termios
            import tty as ttymod

            self.saved = termios.tcgetattr(0)
            ttymod.setraw(0)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
