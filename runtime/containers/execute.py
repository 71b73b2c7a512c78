"""Run a process inside a running container: join its cgroups and namespaces, take on the same
confinement as its init (capabilities, seccomp, no_new_privs), then exec.

Nothing of the caller's crosses into the container:
- Every descriptor is closed before entering, stdio included: a descriptor the caller holds open on
  a host directory would follow the process in, and /proc/self/fd/N/.. walks out of the container's
  root (CVE-2024-21626); the caller's stdout reopened through /proc/self/fd/1 would let the
  container read or truncate the host file it was redirected to.
- The process gets pipes (or, with -t, a pty of the container's own devpts) that netdiag copies
  to and from the caller's stdio, outside the container.
- It runs in a new session with no controlling terminal (with -t, the pty is its terminal): the
  caller's terminal is never reachable, so TIOCSTI cannot push keystrokes into the caller's shell.

Process tree: CLI --fork--> relay (joins cgroups and namespaces; the PID namespace applies to its
children only) --fork--> the command, PID n in the container. The relay tells the CLI the
command's host PID, proxies the pty with -t, and exits with the command's code.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios
import threading
import time

from ..kernel import ns, syscalls as sc
from ..errors import ContainerError
from . import cgroups, container_records, procenv, security  # imported now: after setns(mnt) the host's modules are out of reach
from . import seccomp  # noqa: F401 - loaded by security.enter after setns(mnt)

_NS_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt")  # mnt last: after it /proc is the container's
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _require_running(c: container_records.Container) -> None:
    if not container_records.proc_ok(c):
        raise ContainerError(
            f"Container {c.name} is not running",
            f"its state is {c.status}",
            f"start it first ('netdiag start {c.name}')",
        )


def _enter(c: container_records.Container) -> None:
    """Join the container's cgroups (all hierarchies the init is in, read while the host's /sys is
    still ours), then its namespaces (the PID namespace applies to the children forked after)."""
    cgroups.join(c.pid, os.getpid())
    ns.join_process(c.pid, _NS_ORDER)


def _exec(c: container_records.Container, plan: security.Plan, argv: list[str], env_extra: list[str], workdir: str | None,
          user: str | None) -> None:
    cfg = c.config["Config"]
    env = procenv.env({**cfg, "Env": list(cfg.get("Env") or []) + list(env_extra)})
    uid, gid, groups, home = procenv.user(user if user is not None else cfg.get("User") or "")
    env.setdefault("HOME", home)
    os.chdir(workdir or cfg.get("WorkingDir") or "/")
    procenv.set_ulimits(c.config.get("HostConfig") or {})  # an exec gets the container's limits, as runc gives them
    security.enter(plan, uid, gid, groups)
    for sig in (*_FORWARDED, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    os.execvpe(argv[0], argv, env)


def _report(err_w: int, e: BaseException) -> None:
    """Tell the CLI why the command did not start: 'ERRNO message' (0 when there is no errno)."""
    code = e.errno if isinstance(e, OSError) and e.errno else 0
    os.write(err_w, f"{code} {e}".encode()[:4000])


class _Started:
    """A command started in a container: its relay (a child of ours), the command's host PID, the
    read ends of its stdout/stderr (None with a pty: the relay sends the pty on stdout), the write
    end of its stdin (None unless stdin is kept open), and the relay's error pipe."""

    def __init__(self, relay: int, cmd_pid: int, stdin: int | None, outs: dict[int, str], err_r: int):
        self.relay, self.cmd_pid, self.stdin, self.outs, self.err_r = relay, cmd_pid, stdin, outs, err_r

    def signal(self, sig: int, group: bool = False) -> None:
        """Signal the command (its process group with group=True: a shell and what it started)."""
        if self.cmd_pid <= 0:
            return
        try:
            os.kill(-self.cmd_pid if group else self.cmd_pid, sig)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        """Reap the relay; the command's exit code (128+N for a signal), or ContainerError when it
        could not start."""
        _, status = os.waitpid(self.relay, 0)
        err = b""
        while chunk := os.read(self.err_r, 4096):
            err += chunk
        os.close(self.err_r)
        if err:
            raise _start_error(err.decode(errors="replace"))
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


def _start_error(text: str) -> ContainerError:
    num, _, msg = text.partition(" ")
    num = int(num) if num.isdigit() else 0
    if num == errno.ENOENT or "executable file not found" in msg:
        fix = "check that the program exists in the image ('netdiag exec NAME ls /bin')"
    elif num in (errno.EAGAIN, errno.ENOMEM):
        fix = ("the container is out of processes or memory: raise --pids-limit or -m, or stop what runs "
               "in it ('netdiag exec NAME ps')")
    elif num in (errno.EACCES, errno.EPERM):
        fix = "check the program's permissions and the user (-u) it runs as"
    else:
        fix = "see the reason above"
    return ContainerError("Cannot exec in the container", msg, fix)


def start(c: container_records.Container, argv: list[str], *, keep_stdin: bool = False, tty: bool = False,
          env: list[str] = (), workdir: str | None = None, user: str | None = None,
          winsize: bytes | None = None) -> _Started:
    """Start argv in the container with fresh pipes (or a pty with tty=True) for its stdio."""
    plan = security.plan(c.config["HostConfig"])
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    errout_r, errout_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    # The children are born with these blocked: each gives them its own meaning first (_relay).
    # Inherited, the CLI's Python handlers would turn a Ctrl-C or TERM that reaches the command
    # before its exec into an exception, reported as "Cannot exec" instead of the command's death.
    with sc.signals_blocked(*_FORWARDED):
        relay = os.fork()
        if relay == 0:  # pragma: no cover - the relay
            try:
                for fd, target in ((in_r, 0), (out_w, 1), (errout_w, 2)):
                    os.dup2(fd, target)  # dup2's copy is inheritable; the originals close below
                _close_all_but({0, 1, 2, pid_w, err_w})
                _relay(c, plan, argv, env, workdir, user, tty, keep_stdin, winsize, pid_w, err_w)
            except BaseException as e:  # noqa: BLE001
                _report(err_w, e)
                os._exit(126)
    for fd in (in_r, out_w, errout_w, pid_w, err_w):
        os.close(fd)
    if not keep_stdin:
        os.close(in_w)
        in_w = None
    raw = b""
    while len(raw) < 4 and (chunk := os.read(pid_r, 4 - len(raw))):
        raw += chunk
    os.close(pid_r)
    cmd_pid = struct.unpack("i", raw)[0] if len(raw) == 4 else 0
    outs = {out_r: "stdout"}
    if tty:
        os.close(errout_r)
    else:
        outs[errout_r] = "stderr"
    return _Started(relay, cmd_pid, in_w, outs, err_r)


def _close_all_but(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:  # closerange(n, n) is not empty: it closes everything from n
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _relay(c, plan, argv, env, workdir, user, tty, keep_stdin, winsize, pid_w, err_w) -> None:  # pragma: no cover
    # not dumpable (as runc's init): the container's processes, same uid but fewer capabilities,
    # cannot open this unconfined process's /proc entries or ptrace it
    sc.check(sc.libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(DUMPABLE)")
    _enter(c)
    master = slave = None
    if tty:  # opened after joining the mount namespace: the pty lives in the container's devpts
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        if winsize:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize)
    cmd = os.fork()
    if cmd == 0:
        try:
            _signals_to(signal.SIG_DFL)  # a signal before the exec kills the command, as it would after
            os.close(pid_w)
            sc.check(sc.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
            os.setsid()  # no controlling terminal: /dev/tty is ENXIO, unless the pty below becomes it
            if tty:
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
                os.close(slave)
            _exec(c, plan, argv, env, workdir, user)
        except FileNotFoundError:
            os.write(err_w, f'{errno.ENOENT} exec: "{argv[0]}": executable file not found in $PATH'.encode())
            os._exit(127)
        except BaseException as e:  # noqa: BLE001
            _report(err_w, e)
            os._exit(126)
    _signals_to(signal.SIG_IGN)  # the CLI signals the command itself; the relay outlives it to report its code
    os.close(err_w)
    os.write(pid_w, struct.pack("i", cmd))
    os.close(pid_w)
    if tty:
        os.close(slave)
        _proxy(master, keep_stdin)
    _, status = os.waitpid(cmd, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


def _signals_to(disposition) -> None:  # pragma: no cover - in the relay and the command
    """In a child of start(), born with the forwarded signals blocked: give them `disposition`, then
    take them (one pending since the fork acts now, with its new meaning)."""
    for sig in _FORWARDED:
        signal.signal(sig, disposition)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)


def _proxy(master: int, keep_stdin: bool) -> None:  # pragma: no cover - runs in the relay
    """Copy the relay's stdin (the CLI's pipe) to the pty and the pty to its stdout until the
    program closes the terminal. Without -i that pipe is closed from the start."""
    sources = [master, 0]
    while True:
        ready, _, _ = select.select(sources, [], [])
        if 0 in ready:
            data = os.read(0, 4096)
            if data:
                os.write(master, data)
            else:  # stdin ended: pass an end-of-file (^D) and stop reading it
                if keep_stdin:
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
            try:
                os.write(1, data)
            except OSError:  # the CLI went away: keep the program running to its end
                pass


def exec_in(c: container_records.Container, argv: list[str], *, env: list[str] = (), workdir: str | None = None,
            user: str | None = None, interactive: bool = False, tty: bool = False) -> int:
    """`netdiag exec`: run argv in the container, copying its output to the CLI's stdout/stderr
    (and, with -i, the CLI's stdin to it); returns its exit code."""
    _require_running(c)
    if not argv:
        raise ContainerError("No command given to exec", "", "give a command, e.g. 'netdiag exec web sh -c \"ip addr\"'")
    from .stdio import pump

    winsize = None
    if tty and os.isatty(0):
        winsize = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
    s = start(c, argv, keep_stdin=interactive, tty=tty, env=env, workdir=workdir, user=user, winsize=winsize)
    if s.stdin is not None:
        threading.Thread(target=_copy_stdin, args=(s.stdin,), daemon=True).start()
    forwarded = {sig: signal.signal(sig, lambda n, _f: s.signal(n)) for sig in _FORWARDED if not tty}
    if tty:  # keys (^C included) travel through the pty; the CLI itself must not die of them
        forwarded = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        with _raw_terminal(tty and interactive):
            pidfd = os.pidfd_open(s.relay)
            try:
                pump(s.outs, {"stdout": 1, "stderr": 2}, None, pidfd)
            finally:
                os.close(pidfd)
                for fd in s.outs:
                    os.close(fd)
            return s.wait()
    finally:
        for sig, old in forwarded.items():
            signal.signal(sig, old)


def _copy_stdin(to: int) -> None:
    """The CLI's stdin to the command until either ends (a thread: a blocked write must never stop
    the output being copied)."""
    try:
        while data := os.read(0, 65536):
            os.write(to, data)
    except OSError:
        pass
    finally:
        os.close(to)


def run_captured(c: container_records.Container, argv: list[str], timeout: float) -> tuple[int, str]:
    """Run argv in the container, capturing output (first 4 KiB), killed with what it started
    after `timeout` s (health checks)."""
    try:
        s = start(c, argv)
    except ContainerError as e:
        return 127, e.why
    (out_r, _), (err_r, _) = s.outs.items()
    out, deadline, timed_out, open_fds = b"", time.monotonic() + timeout, False, [out_r, err_r]
    while open_fds:
        left = deadline - time.monotonic()
        ready, _, _ = select.select(open_fds, [], [], max(0.0, left))
        if not ready:
            timed_out = True
            break
        for fd in ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                open_fds.remove(fd)
            out += chunk[: max(0, 4096 - len(out))]
    for fd in (out_r, err_r):
        os.close(fd)
    if timed_out:
        s.signal(signal.SIGKILL, group=True)
        s.signal(signal.SIGKILL)
    try:
        code = s.wait()
    except ContainerError as e:
        return 127, e.why
    if timed_out:
        return -1, f"Health check exceeded timeout ({timeout:g}s)"
    return code, out.decode(errors="replace")


class _raw_terminal:
    """Put the CLI's own terminal in raw mode while a pty is attached, and restore it after."""

    def __init__(self, wanted: bool):
        self.saved = None
        self.wanted = wanted and os.isatty(0)

    def __enter__(self):
        if self.wanted:
            import tty as ttymod

            self.saved = termios.tcgetattr(0)
            ttymod.setraw(0)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
