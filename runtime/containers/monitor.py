"""The per-container monitor: starts the container, records its state, keeps its logs, reaps it.

Attached and interactive runs have one of their own (it lives as long as their CLI); detached
containers are started by the same code (_start, finish, restart_delay) in the host's shared
supervisor (supervisor.py), which costs one interpreter for all of them instead of ~10 MiB each.

CLI --fork--> [setsid, fork again] monitor --unshare(NEWPID)+fork--> container init (PID 1)
Pipes: monitor -> CLI status (JSON lines: started/error/exit); init -> monitor ready/error
(close-on-exec, so EOF means exec succeeded); monitor -> init "go" once cgroup and network are set.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from ..kernel import syscalls as sc, sysctl
from ..kernel.ns import Namespace
from .. import state
from ..errors import ContainerError, NetdiagError
from . import cgroups, container_records, endpoints, pid1, procenv, rootfs, security
from .cleanup import remove_stopped
from .stdio import LogWriter, pump


def spawn(c: container_records.Container, lower_dirs: list[Path], *, attach: bool, interactive: bool) -> int:
    """Start the container's monitor; returns the read end of its status pipe once started.

    Raises ContainerError (with the init's own message) when the container cannot start."""
    plan = security.plan(c.config["HostConfig"])  # seccomp compiled (or read from its cache) here, once
    return check_started(c, _detached(lambda w: _monitor(c, lower_dirs, w, attach, interactive, plan)))


def check_started(c: container_records.Container, r: int) -> int:
    """`r` once its first status says the container started; else the ContainerError saying why."""
    msg = read_status(r)
    if msg is None or "error" in msg:
        os.close(r)
        err = ContainerError(
            f"Cannot start container {c.name}",
            (msg or {}).get("error", "its monitor exited without a word").strip(),
            (msg or {}).get("fix") or f"check the command and the image ('netdiag image inspect {c.config.get('ImageRef') or c.config['Image']}')",
        )
        err.exit_code = (msg or {}).get("code", 125)
        raise err
    return r


def wait_status(fd: int, on_signal) -> dict | None:
    """The next status message, with SIGINT and SIGTERM handled by `on_signal` meanwhile (a CLI
    waiting on its container forwards them); closes `fd`."""
    import signal

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return read_status(fd)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        os.close(fd)


def read_status(fd: int) -> dict | None:
    """One JSON line from a status pipe (byte by byte: the pipe carries several messages)."""
    buf = b""
    while not buf.endswith(b"\n"):
        try:
            ch = os.read(fd, 1)
        except InterruptedError:
            continue
        if not ch:
            return None
        buf += ch
    return json.loads(buf)


def _detached(body) -> int:
    """Run body(status_w) in a monitor of its own: a new session, reparented to init (it outlives
    the CLI), that reports on the status pipe; returns the pipe's read end once the forked child
    in between is reaped. An error escaping body is reported there: what and why, and the fix."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        code = 0
        try:
            os.close(r)
            os.setsid()
            if os.fork():
                os._exit(0)
            body(w)
        except NetdiagError as e:  # a clear error (a cgroup the kernel refused...): what, why, fix
            code = 1
            why = " ".join(p.strip().rstrip(".") + "." for p in (e.what, e.why) if p and p.strip())
            _send(w, error=why, fix=e.fix, code=125)
        except BaseException:  # noqa: BLE001 - said to the waiting CLI, then the monitor dies
            code = 1
            import traceback

            _send(w, error=traceback.format_exc(limit=3))
        os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    return r


def _log_and_health(c: container_records.Container):
    """What a monitor keeps for its container: the log (dropped lines counted where `inspect` shows
    them once space is back) and the health-check ticker (None without a HEALTHCHECK)."""
    def logs_dropped(total: int) -> None:
        try:
            container_records.get(c.id).save_state(LogLinesDropped=total)
        except NetdiagError:
            pass

    return LogWriter(c.dir / "container.log", on_notice=logs_dropped), _health_ticker(c)


def _send(fd: int | None, **msg) -> None:
    if fd is not None:
        try:
            os.write(fd, json.dumps(msg).encode() + b"\n")
        except OSError:
            pass


def _argv(cfg: dict) -> list[str]:
    return list(cfg.get("Entrypoint") or []) + list(cfg.get("Cmd") or [])


class Started:
    """A container _start() left running: its init (pid, pidfd), the read ends of its output pipes,
    what an attached CLI gets a copy on, the stdin kept open, the CLI's status pipe (None once closed)."""

    def __init__(self, pid: int, pidfd: int, out_r: int, err_r: int, cli_out: int | None, cli_err: int | None,
                 held_open: int | None, status_w: int | None):
        self.pid, self.pidfd, self.out_r, self.err_r = pid, pidfd, out_r, err_r
        self.cli_out, self.cli_err, self.held_open, self.status_w = cli_out, cli_err, held_open, status_w


def _monitor(c: container_records.Container, lower_dirs: list[Path], status_w: int, attach: bool, interactive: bool,
             plan: security.Plan) -> None:
    """A monitor of its own (attached runs, and where no shared supervisor is used): start, copy, reap."""
    run = _start(c, lower_dirs, status_w, attach, interactive, plan, os.getpid())
    if run is None:
        return
    log, health = _log_and_health(c)
    try:
        pump({run.out_r: "stdout", run.err_r: "stderr"}, {"stdout": run.cli_out, "stderr": run.cli_err}, log, run.pidfd,
             on_tick=health.tick if health else None, tick=health.interval if health else None)
    except Exception:  # noqa: BLE001 - whatever broke the copying, the exit must still be recorded
        for fd in (run.out_r, run.err_r):  # the container's writes fail (EPIPE) instead of blocking forever
            os.close(fd)
    log.close()
    _, status = os.waitpid(run.pid, 0)
    if run.held_open is not None:
        os.close(run.held_open)
    code, oom = finish(c, os.waitstatus_to_exitcode(status), log.dropped_total)
    _send(run.status_w, exit=code, oom=oom)
    delay = restart_delay(c, code)
    if delay is not None:  # the next run has a monitor of its own; this one ends
        time.sleep(delay)
        restart(c.id, _spawn_again(lower_dirs))


def _start(c: container_records.Container, lower_dirs: list[Path], status_w: int, attach: bool, interactive: bool,
           plan: security.Plan, monitor_pid: int) -> Started | None:
    """Everything up to a running container (None when it failed; the CLI was told why): the
    namespaces, cgroup, network, the record saying RUNNING with `monitor_pid` as its monitor."""
    host = c.config["HostConfig"]
    devnull = os.open("/dev/null", os.O_RDWR)
    # the container reads stdin from a pipe the monitor fills, never the CLI's own descriptor:
    # reopened through /proc/self/fd/0 that would be the caller's file or terminal
    cli_in = _stdin_pipe(os.dup(0)) if interactive else os.dup(devnull)
    held_open = None
    if not interactive and (c.config["Config"].get("OpenStdin") or c.config["Config"].get("Tty")):
        # Docker's stdin_open/tty with nobody attached: a stdin that never ends (a shell waits on it
        # instead of exiting); the write end stays open, unused, as long as this monitor lives
        os.close(cli_in)
        cli_in, held_open = os.pipe2(os.O_CLOEXEC)
    cli_out, cli_err = (os.dup(1), os.dup(2)) if attach else (None, None)
    for fd in (0, 1, 2):  # never hold the CLI's terminal or pipes open past its exit
        os.dup2(devnull, fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    c2m_r, c2m_w = os.pipe2(os.O_CLOEXEC)
    m2c_r, m2c_w = os.pipe2(os.O_CLOEXEC)
    own_net = host.get("NetworkMode", "none") != "host"
    shared = _shared_netns(c)
    cgroups.create(c.id, host.get("Memory", 0), host.get("NanoCpus", 0), host.get("PidsLimit", 0),
                   devices=security.devices(host))

    sc.unshare(sc.CLONE_NEWPID)
    child = os.fork()
    if child == 0:  # pragma: no cover - becomes the container
        for fd in (c2m_r, m2c_w, out_r, err_r, status_w):
            if fd is not None:  # a restart by the shared supervisor has no CLI waiting
                os.close(fd)
        _init(c, lower_dirs, own_net, (cli_in, out_w, err_w), c2m_w, m2c_r, plan, shared)
    for fd in (c2m_w, m2c_r, out_w, err_w, cli_in):
        os.close(fd)
    if shared:
        os.close(shared[0])
    pidfd = os.pidfd_open(child)

    def fail(code: int, message: str, fix: str = "") -> None:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(child, 0)
        cgroups.remove(c.id)
        try:
            c.save_state(Status=container_records.CREATED if not c.state.get("StartedAt") else container_records.EXITED,
                         Error=message, ExitCode=code, Pid=0, must_land=True)
        except state.DiskFull:
            pass  # the record keeps its last state; the CLI is told why the start failed, below
        _send(status_w, error=message, fix=fix, code=code)

    ready = os.read(c2m_r, 1)
    if ready != b"R":
        return fail(*_init_error(ready + _read_all(c2m_r)))
    cgroups.add(c.id, child)
    try:
        endpoints.attach_all(c, child)
    except BaseException as e:  # noqa: BLE001 - any failure to attach fails the start, cleanly
        os.kill(child, signal.SIGKILL)  # then the pipe ends: the init may have failed first, and says why
        early = _read_all(c2m_r)
        if early:
            return fail(*_init_error(early))
        return fail(125, f"cannot attach its network: {_what_why(e)}", getattr(e, "fix", ""))
    os.write(m2c_w, b"G")
    os.close(m2c_w)
    err = _read_all(c2m_r)
    os.close(c2m_r)
    if err:
        return fail(*_init_error(err))

    me = monitor_pid
    container_records.clear_exit_markers(c)
    try:
        c.state = container_records.get(c.id).state  # the record as it is now, not as it was at fork
    except NetdiagError:
        pass
    if c.state.get("StopRequested") and c.state.get("RestartCount"):
        # a stop that came while a restart was starting: it found the container exited and
        # returned; the restart gives way (its record would otherwise lose the stop's mark)
        try:
            endpoints.detach_all(c)
        except Exception:  # noqa: BLE001 - the start fails anyway; prune removes what stays
            pass
        return fail(137, "stopped while its restart was starting")
    try:
        c.save_state(Status=container_records.RUNNING, Pid=child, PidStart=sc.proc_start_time(child), MonitorPid=me,
                     MonitorStart=sc.proc_start_time(me), StartedAt=container_records.now_iso(), FinishedAt="",
                     SharedMonitor=me != os.getpid(),
                     ExitCode=0, Error="", OOMKilled=False, LogLinesDropped=0, must_land=True)
    except state.DiskFull as e:  # no record of a running container: it must not run unrecorded
        try:
            endpoints.detach_all(c)
        except Exception:  # noqa: BLE001 - the start fails anyway; prune removes what stays
            pass
        return fail(125, _what_why(e), e.fix)
    _send(status_w, started=child)
    if not attach and status_w is not None:
        os.close(status_w)
        status_w = None
    return Started(child, pidfd, out_r, err_r, cli_out, cli_err, held_open, status_w)


def finish(c: container_records.Container, code: int, dropped: int) -> tuple[int, bool]:
    """After the init was reaped (`code` as waitstatus_to_exitcode gives it): endpoints, cgroup,
    the exit record; returns the exit code as recorded (128+N for a signal) and whether OOM killed it."""
    code = 128 - code if code < 0 else code
    oom = cgroups.oom_killed(c.id)
    try:
        endpoints.detach_all(c)
    except Exception:  # noqa: BLE001 - the exit must be recorded even if a rule cannot be removed
        pass
    _remove_cgroups(c)
    _record_exit(c, code, oom, dropped)
    return code, oom


def restart_delay(c: container_records.Container, code: int) -> float | None:
    """Docker's restart policies, once the exit is recorded: how long to wait before the next run
    (None: no restart). always and unless-stopped restart after any exit, on-failure[:N] after a
    non-zero one (at most N times); never a container a command stopped, killed or removed (they
    mark it StopRequested first). The delay doubles from 100 ms up to a minute, and starts again
    after a run of 10 s or more, as Docker's does."""
    policy = c.config["HostConfig"].get("RestartPolicy") or {}
    try:
        fresh = container_records.get(c.id)
    except NetdiagError:  # removed meanwhile
        return None
    count, limit = int(fresh.state.get("RestartCount") or 0), int(policy.get("MaximumRetryCount") or 0)
    if not policy.get("Name") or fresh.state.get("StopRequested") or (
            policy["Name"] == "on-failure" and (code == 0 or (limit and count >= limit))):
        return None
    ran = time.time() - container_records.parse_iso(fresh.state.get("StartedAt") or "")
    return 0.1 if ran >= 10 else min(0.1 * 2 ** count, 60)


def restart(cid: str, launch) -> None:
    """The next run after restart_delay(): `launch(fresh_container)` starts it (a monitor of its own,
    or the shared supervisor's starter), unless a command stopped, removed or started it meanwhile."""
    try:
        fresh = container_records.get(cid)
        if fresh.state.get("StopRequested") or fresh.status != container_records.EXITED:
            return  # stopped, removed or started by a command during the delay
        fresh.save_state(RestartCount=int(fresh.state.get("RestartCount") or 0) + 1)
        launch(fresh)
    except NetdiagError as e:  # the record says why it did not come back; ps shows it exited
        try:
            container_records.get(cid).save_state(Error=f"restart failed: {_what_why(e)}")
        except NetdiagError:
            pass


def _spawn_again(lower_dirs: list[Path]):
    def launch(fresh: container_records.Container) -> None:
        sc.own_pid_ns_for_children()  # the last run's PID namespace died with its init
        os.close(spawn(fresh, lower_dirs, attach=False, interactive=False))
    return launch


def _record_exit(c: container_records.Container, code: int, oom: bool, dropped: int) -> None:
    """Write the exit into the record (into its spare if the disk is full); as a last resort an
    empty marker file carries the code, and `ps` says the record could not be written."""
    if not (c.dir / "config.json").exists():
        return  # removed meanwhile (rm -f)
    try:
        fresh = container_records.get(c.id)
        fresh.save_state(Status=container_records.EXITED, ExitCode=code, OOMKilled=oom, Pid=0, MonitorPid=0,
                         FinishedAt=container_records.now_iso(), LogLinesDropped=dropped, must_land=True)
    except NetdiagError:  # DiskFull, or a record someone damaged meanwhile
        container_records.exit_marker(c, code)
        return
    if c.config["HostConfig"].get("AutoRemove"):
        remove_stopped(fresh)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def _stdin_pipe(source: int) -> int:
    """The read end of a pipe that a thread fills from `source` (the CLI's stdin) until it ends."""
    import threading

    r, w = os.pipe()

    def copy() -> None:
        try:
            while data := os.read(source, 65536):
                os.write(w, data)
        except OSError:  # the container closed its stdin, or the CLI's went away
            pass
        finally:
            os.close(w)
            os.close(source)

    threading.Thread(target=copy, daemon=True).start()
    return r


def _init_error(data: bytes) -> tuple[int, str, str]:
    """(exit code, why, fix) from what the init wrote: E<msg> setup failed, N/P exec not found/denied."""
    text = data.decode("utf-8", "replace")
    if text[:2] in ("N\n", "P\n"):
        why, _, fix = text[2:].partition("\n")
        return (127 if text[0] == "N" else 126), why, fix
    why, _, fix = (text[1:] if text.startswith("E") else text).partition("\n")
    return 125, why or "the container's init died while setting up", fix


def _what_why(e: BaseException) -> str:
    """An error without its fix, which travels separately (else the user reads it twice)."""
    if isinstance(e, NetdiagError):
        return f"{e.what.rstrip('.')}: {e.why}" if e.why else e.what
    return str(e)


def _shared_netns(c: container_records.Container) -> tuple[int, Path] | None:
    """For --network container:X: X's network namespace, opened now (its pid checked after the
    open, so the descriptor is X's and no reused pid's), and X's directory (its hosts, resolv.conf)."""
    owner = container_records.running_netns_owner(c.config["HostConfig"])
    if owner is None:
        return None
    gone = ContainerError(f"Cannot join the network namespace of container {owner.name}", "it exited just now",
                          f"start it again ('netdiag start {owner.name}')")
    try:
        fd = os.open(f"/proc/{owner.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        raise gone from None
    if not sc.pid_alive(owner.pid, owner.state.get("PidStart")):
        os.close(fd)
        raise gone
    return fd, owner.dir


def _init(c: container_records.Container, lower_dirs: list[Path], own_net: bool, stdio: tuple[int, int, int],
          c2m: int, m2c: int, plan: security.Plan,
          shared: tuple[int, Path] | None) -> None:  # pragma: no cover - runs as the container's PID 1
    cfg, host = c.config["Config"], c.config["HostConfig"]
    try:
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWIPC | (sc.CLONE_NEWNET | sc.CLONE_NEWUTS if own_net else 0)
        if shared:  # another container's network namespace, a UTS namespace of its own
            Namespace(f"/proc/self/fd/{shared[0]}").join()
            flags &= ~sc.CLONE_NEWNET
        sc.unshare(flags)
        os.write(c2m, b"R")
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        rootfs.mount_overlay(lower_dirs, c.dir / "upper", c.dir / "work", c.dir / "merged")
        etc = shared[1] if shared else c.dir  # sharing a namespace, Docker shares its hosts and resolv.conf too
        binds = {f"/etc/{n}": (c.dir if n == "hostname" else etc) / n for n in ("hostname", "hosts", "resolv.conf")}
        host_devs = security.host_devices() if host.get("Privileged") else []  # the host's /dev, before pivot_root
        rootfs.setup(c.dir / "merged", binds, own_net, cfg.get("Hostname") if own_net else None, c.config.get("Mounts") or [],
                     host.get("Tmpfs"), bool(host.get("ReadonlyRootfs")), cfg.get("WorkingDir") or "")
        if os.read(m2c, 1) != b"G":  # its network is attached: eth0's own sysctls exist now
            os._exit(1)
        for key, value in (host.get("Sysctls") or {}).items():  # before /proc/sys turns read-only
            try:
                sysctl.write(key.replace(".", "/"), value)
            except OSError as e:
                raise ContainerError(f"Cannot set sysctl {key}={value}", e.strerror or str(e),
                                     "check the key exists in a network namespace of this kernel, and its value") from None
        security.apply_paths(host, host_devs)
        env = procenv.env(cfg)
        argv = _argv(cfg)
        uid, gid, groups, home = procenv.user(cfg.get("User") or "")
        env.setdefault("HOME", home)
        workdir = cfg.get("WorkingDir") or "/"
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, c2m)
        os.closerange(c2m + 1, 65536)
        os.setsid()
        procenv.set_ulimits(host)  # before the capabilities drop
        security.enter(plan, uid, gid, groups)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        if not argv:
            raise ContainerError("No command specified", "the image has no CMD or ENTRYPOINT", "give a command after the image name")
        if host.get("Init"):
            program = os.fork()
            if program:  # this process stays PID 1; the pipe's end is the program's, whose exec closes it
                os.close(c2m)
                pid1.supervise(program)
        try:
            os.execvpe(argv[0], argv, env)
        except FileNotFoundError:
            os.write(c2m, f'N\nexec: "{argv[0]}": executable file not found in $PATH\ngive a program the image has, e.g. "sh"'.encode())
            os._exit(127)
        except PermissionError:
            os.write(c2m, f'P\nexec: "{argv[0]}": permission denied\nthe file is not executable for user "{cfg.get("User") or "root"}"'.encode())
            os._exit(126)
    except BaseException as e:  # noqa: BLE001 - report anything to the monitor, then die
        os.write(c2m, b"E" + f"{_what_why(e)}\n{getattr(e, 'fix', '')}".encode())
    os._exit(127)


def _health_ticker(c: container_records.Container):
    from .health import Ticker

    return Ticker.for_container(c)


# -- adopting a container whose monitor died (`netdiag system repair`: the supervisor adopts) -----
#
# What the supervisor can take over: the init's exit (a pidfd works for any process, not only a
# child), its output (opening /proc/PID/fd/1 of a pipe gives a new read end of that same pipe, so
# logging resumes; what the container wrote while no one read was lost, and a writer without a
# SIGPIPE handler was killed by it), its health checks, and the cleanup at exit (endpoints,
# cgroup, --rm). What it cannot: the exit code. Only a process's parent (or a subreaper above it)
# can wait for it, and the init's parent was the dead monitor: the host's init reaped it. So an
# adopted container's exit is recorded as Docker records a lost one, 255, saying why.

ADOPTED_EXIT = ("exit code unknown: its monitor had died and 'netdiag system repair' adopted it; "
                "only a process's parent learns its exit code")


def _reopen_output(pid: int) -> dict[int, str]:
    """New read ends of the pipes the init's stdout and stderr are (nothing for a file, a pty, a
    closed descriptor: the container redirected them itself)."""
    out: dict[int, str] = {}
    seen = set()
    for n, stream in ((1, "stdout"), (2, "stderr")):
        path = f"/proc/{pid}/fd/{n}"
        try:
            if not os.readlink(path).startswith("pipe:") or os.stat(path).st_ino in seen:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # never wait for a writer
        except OSError:
            continue
        os.set_blocking(fd, True)
        seen.add(os.fstat(fd).st_ino)
        out[fd] = stream
    return out


def finish_unsupervised(c: container_records.Container, why: str, dropped: int = 0) -> None:
    """What a monitor does when its container has exited, for one whose monitor could not wait for
    it (adopted, or stopped while unsupervised): endpoints, cgroup, the exit record (code unknown)."""
    oom = cgroups.oom_killed(c.id)
    try:
        endpoints.detach_all(c)
    except Exception:  # noqa: BLE001 - the exit must be recorded even if a rule cannot be removed
        pass
    _remove_cgroups(c)
    if not (c.dir / "config.json").exists():
        return
    try:
        fresh = container_records.get(c.id)
        fresh.save_state(Status=container_records.EXITED, ExitCode=container_records.UNKNOWN_EXIT, OOMKilled=oom, Pid=0, MonitorPid=0,
                         FinishedAt=container_records.now_iso(), Error=why, LogLinesDropped=dropped, must_land=True)
    except NetdiagError:
        return  # `ps` still says what is known: its monitor died, exit code unknown
    if c.config["HostConfig"].get("AutoRemove"):
        remove_stopped(fresh)


def _remove_cgroups(c: container_records.Container) -> None:
    try:
        cgroups.remove(c.id)
    except OSError:  # still busy: `system prune` removes orphaned cgroups; the exit record comes first
        pass
