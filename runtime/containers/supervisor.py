"""One shared supervisor per state directory for detached containers (issue 24: memory).

Why: a Python monitor per container costs ~10 MiB PSS (a bare interpreter alone is 4.3 MiB), so no
one-process-per-container design reaches 3 MiB per container. One supervisor for all of a host's
detached containers costs one interpreter, whatever their number.

    CLI --unix socket (request + its status pipe's write end)--> supervisor (subreaper)
    supervisor --fork--> starter (monitor._start: namespaces, cgroup, network, record) --fork--> init
    starter --socketpair (init pid + output pipes)--> supervisor; the starter exits and the init,
    an orphan, is reparented to the supervisor (PR_SET_CHILD_SUBREAPER): it alone can reap it and
    so record its exit code.

The supervisor is started on demand by the first `run -d`/`start` (the socket did not answer),
copies every container's output into its log (one selector over all pipes), exits each container
as a monitor does (monitor.finish), runs health checks in threads on timers and restarts on
timers, and exits when it supervises nothing. Should it crash, the containers run on, their
records name a dead monitor, and `system repair` adopts them as before (exit code lost, said).
Attached and interactive runs keep a monitor of their own (they live as long as their CLI).
"""
from __future__ import annotations

import contextlib
import heapq
import json
import os
import selectors
import signal
import socket
import threading
import time
from pathlib import Path

from .. import paths, state
from ..kernel import syscalls as sc
from . import container_records, monitor, security

PR_SET_CHILD_SUBREAPER = 36
DRAIN_SECONDS = 1.0  # after an init died, what is still in its pipes is read for at most this long


def socket_path() -> Path:
    return paths.root() / "supervisor.sock"


@contextlib.contextmanager
def _address(path: Path):
    """`path` as an AF_UNIX address: a socket's path may not exceed 107 bytes, and a state directory
    may be deeper (a test's, a scenario's): a longer one is reached through /proc/self/fd of its
    directory."""
    if len(os.fsencode(path)) <= 100:
        yield str(path)
        return
    d = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{d}/{path.name}"
    finally:
        os.close(d)


# -- the CLI's side --------------------------------------------------------------------------------

def request_start(c: container_records.Container, lower_dirs: list[Path]) -> int:
    """Ask the host's supervisor (started here if none answers) to start `c`; returns the read end
    of the status pipe its starter reports on, as monitor.spawn's monitor does."""
    return _request({"start": c.id, "lowers": [str(d) for d in lower_dirs]})


def request_adoption() -> list[str]:
    """`system repair`: the host's supervisor (started here if none answers) adopts every running
    container without a monitor (a crashed supervisor's, a dead attached monitor's); their names."""
    r = _request({"adopt": True})
    try:
        msg = monitor.read_status(r)
    finally:
        os.close(r)
    if msg is None:
        from ..errors import ContainerError

        raise ContainerError("Cannot adopt the unsupervised containers", "the supervisor died while adopting them",
                             "run 'netdiag system repair' again; 'netdiag rm -f NAME' stops one")
    return msg["adopted"]


def _request(req: dict) -> int:
    """Send one request with the write end of a fresh status pipe; its read end."""
    r, w = os.pipe()
    msg = json.dumps(req).encode()
    try:
        with state.locked("supervisor"):  # the supervisor exits only under this lock, never mid-request
            sock = _connect() or _launch()
            try:
                socket.send_fds(sock, [msg], [w])
            finally:
                sock.close()
    finally:
        os.close(w)
    return r


def _connect() -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _address(socket_path()) as address:
            sock.connect(address)
        return sock
    except OSError:  # none there, or a dead one's socket file
        sock.close()
        return None


def _launch() -> socket.socket:
    """Start a supervisor (detached like a monitor: its own session, reparented to init) and connect."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(r)
            # nothing of the CLI's stays open in a long-lived process: above all not the flock
            # of the "supervisor" lock it holds now (the supervisor would wait on it for ever)
            os.closerange(3, w)
            os.closerange(w + 1, 65536)
            os.setsid()
            if os.fork():
                os._exit(0)
            Supervisor(w).run()
        except BaseException:  # noqa: BLE001 - the CLI reads EOF and says the supervisor died
            pass
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    ready = monitor.read_status(r)
    os.close(r)
    sock = _connect() if ready else None
    if sock is None:
        from ..errors import ContainerError

        raise ContainerError("Cannot start the container supervisor", "it exited at once",
                             f"check that {paths.root()} is writable, then try again")
    return sock


# -- the supervisor ----------------------------------------------------------------------------------

class _Watched:
    """One supervised container: its init, output pipes, log and health ticker."""

    def __init__(self, c: container_records.Container, pid: int, pidfd: int, pipes: dict[int, str], lowers: list[Path],
                 exit_unknown: str = ""):
        self.c, self.pid, self.pidfd, self.pipes, self.lowers = c, pid, pidfd, pipes, lowers
        self.exit_unknown = exit_unknown  # adopted: not our child, its exit code cannot be known
        self.held_open: int | None = None
        self.log, self.health = monitor._log_and_health(c)
        self.checking = False


class Supervisor:
    def __init__(self, ready_w: int):
        self.ready_w = ready_w
        self.sel = selectors.DefaultSelector()
        self.watched: dict[str, _Watched] = {}
        self.starting: dict[int, tuple[int, str, list[Path]]] = {}  # reply socket fd -> (starter pid, cid, lowers)
        self.timers: list[tuple[float, int, str, str]] = []  # (when, seq, kind, cid)
        self.seq = 0
        self.restart_lowers: dict[str, list[Path]] = {}  # cid -> its image's layers, until its restart timer
        self.sockets: dict[int, socket.socket] = {}  # starters' reply sockets by fd (kept open while registered)
        self.me = os.getpid()
        self.adopted: list[str] = []  # adopted at start, not reported yet: the launching request may be a repair

    def run(self) -> None:
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        for s in (signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        sc.prctl(PR_SET_CHILD_SUBREAPER, 1, what="prctl(PR_SET_CHILD_SUBREAPER)")
        _more_descriptors()
        path = socket_path()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        with _address(path) as address:
            listener.bind(address)
        listener.listen(64)
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, ("listen", None))
        self.adopted = self._adopt_all()
        monitor._send(self.ready_w, ready=self.me)
        os.close(self.ready_w)
        while True:
            if not (self.watched or self.starting or self.timers) and self._exit_if_idle(listener, path):
                return
            self._once()

    def _exit_if_idle(self, listener: socket.socket, path: Path) -> bool:
        with state.locked("supervisor"):
            try:
                conn, _ = listener.accept()  # a request sent just before the lock was taken
            except BlockingIOError:
                path.unlink(missing_ok=True)
                listener.close()
                return True
            self._request(conn)
            return False

    def _once(self) -> None:
        timeout = None
        if self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, _ in self.sel.select(timeout):
            kind, data = key.data
            try:
                if kind == "listen":
                    conn, _ = key.fileobj.accept()
                    self._request(conn)
                elif kind == "starter":
                    self._started(key.fd)
                elif kind == "exit":
                    self._exited(data)
                else:
                    self._output(key.fd, data)
            except Exception:  # noqa: BLE001 - one container's trouble never ends the others' supervision
                pass
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, kind, cid = heapq.heappop(self.timers)
            if kind == "health":
                self._health(cid)
            elif kind == "restart":
                lowers = self.restart_lowers.pop(cid, [])
                monitor.restart(cid, lambda fresh: self._start(fresh.id, lowers, None))

    def _timer(self, delay: float, kind: str, cid: str) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, kind, cid))

    # -- starting ----------------------------------------------------------------------------------
    def _request(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.settimeout(5)
        try:
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
        finally:
            conn.close()
        if not fds:
            return
        req = json.loads(msg)
        if req.get("adopt"):
            adopted, self.adopted = self.adopted + self._adopt_all(), []
            monitor._send(fds[0], adopted=adopted)
            os.close(fds[0])
            return
        self._start(req["start"], [Path(d) for d in req["lowers"]], fds[0])

    def _start(self, cid: str, lowers: list[Path], status_w: int | None) -> None:
        """Fork a starter for `cid`; it reports to the CLI on `status_w` and to us on a socketpair."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the starter
            code = 0
            try:
                ours.close()
                code = _starter(cid, lowers, status_w, theirs, self.me)
            except BaseException:  # noqa: BLE001 - the CLI reads EOF: "its monitor exited without a word"
                code = 1
            os._exit(code)
        theirs.close()
        if status_w is not None:
            os.close(status_w)
        self.starting[ours.fileno()] = (pid, cid, lowers)
        self.sockets[ours.fileno()] = ours
        self.sel.register(ours, selectors.EVENT_READ, ("starter", None))

    def _started(self, fd: int) -> None:
        pid, cid, lowers = self.starting.pop(fd)
        sock = self.sockets.pop(fd)
        self.sel.unregister(sock)
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1024, 4)
        finally:
            sock.close()
        os.waitpid(pid, 0)  # the starter ends once it has told us; the init is ours now (subreaper)
        if not msg or len(fds) < 3:
            for f in fds:
                os.close(f)
            return
        init = json.loads(msg)["pid"]
        pidfd, out_r, err_r, *held = fds
        w = _Watched(container_records.get(cid), init, pidfd, {out_r: "stdout", err_r: "stderr"}, lowers)
        w.held_open = held[0] if held else None  # -t/-i without a CLI: a stdin that never ends, while it runs
        self._watch(w)

    def _watch(self, w: _Watched) -> None:
        self.watched[w.c.id] = w
        self.sel.register(w.pidfd, selectors.EVENT_READ, ("exit", w.c.id))
        for fd in w.pipes:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, ("out", w.c.id))
        if w.health:
            self._timer(w.health.interval, "health", w.c.id)

    # -- running -----------------------------------------------------------------------------------
    def _output(self, fd: int, cid: str) -> None:
        w = self.watched[cid]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: a pty whose other side closed; anything else ends this pipe too
            data = b""
        if not data:
            self.sel.unregister(fd)
            del w.pipes[fd]
            os.close(fd)
            return
        w.log.write(w.pipes[fd], data)

    def _health(self, cid: str) -> None:
        w = self.watched.get(cid)
        if w is None or w.health is None:
            return
        if not w.checking:  # a check that outlasts its interval is not run twice at once
            w.checking = True

            def check() -> None:
                try:
                    w.health.tick()
                finally:
                    w.checking = False

            threading.Thread(target=check, daemon=True).start()
        self._timer(w.health.interval, "health", cid)

    def _exited(self, cid: str) -> None:
        w = self.watched.pop(cid)
        self.sel.unregister(w.pidfd)
        deadline = time.monotonic() + DRAIN_SECONDS  # nothing in the dead container can write any more
        for fd, stream in list(w.pipes.items()):
            self.sel.unregister(fd)
            while time.monotonic() < deadline:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                w.log.write(stream, data)
            os.close(fd)
        w.log.close()
        if w.held_open is not None:
            os.close(w.held_open)
        if w.exit_unknown:
            os.close(w.pidfd)
            return monitor.finish_unsupervised(w.c, w.exit_unknown, w.log.dropped_total)
        _, status = os.waitpid(w.pid, 0)
        os.close(w.pidfd)
        code, _ = monitor.finish(w.c, os.waitstatus_to_exitcode(status), w.log.dropped_total)
        delay = monitor.restart_delay(w.c, code)
        if delay is not None:
            self.restart_lowers[cid] = w.lowers
            self._timer(delay, "restart", cid)

    # -- adopting ----------------------------------------------------------------------------------
    def _adopt_all(self) -> list[str]:
        """Containers a dead supervisor or monitor left: output, health and cleanup, exit code lost.
        Their names."""
        names = []
        for found in container_records.list_all():
            if not found.unsupervised:
                continue
            with state.locked(f"adopt-{found.id[:16]}"):  # as `system repair` does: adopted once
                c = container_records.get(found.id)
                if not c.unsupervised:
                    continue
                try:
                    pidfd = os.pidfd_open(c.pid)
                except OSError:
                    continue
                if not sc.pid_alive(c.pid, c.state.get("PidStart")):  # the pid was reused before the pidfd
                    os.close(pidfd)
                    continue
                c.save_state(MonitorPid=self.me, MonitorStart=sc.proc_start_time(self.me), SharedMonitor=True)
                self._watch(_Watched(c, c.pid, pidfd, monitor._reopen_output(c.pid), [], monitor.ADOPTED_EXIT))
                names.append(c.name)
        return names


def _starter(cid: str, lowers: list[Path], status_w: int | None, reply: socket.socket, supervisor_pid: int) -> int:
    """In the forked starter: start the container (monitor._start), hand its init to the supervisor."""
    c = container_records.get(cid)
    try:
        plan = security.plan(c.config["HostConfig"])
        run = monitor._start(c, lowers, status_w, False, False, plan, supervisor_pid)
    except Exception as e:  # noqa: BLE001 - said to the waiting CLI, as a monitor of its own would
        monitor._send(status_w, error=monitor._what_why(e), fix=getattr(e, "fix", ""), code=125)
        return 1
    if run is None:
        return 1
    fds = [run.pidfd, run.out_r, run.err_r] + ([run.held_open] if run.held_open is not None else [])
    socket.send_fds(reply, [json.dumps({"pid": run.pid}).encode()], fds)
    return 0


def _more_descriptors() -> None:
    """Three descriptors per container (two pipes and a pidfd): raise the soft limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

