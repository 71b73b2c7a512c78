"""Forked helper children with a control pipe (parent -> child) and a report pipe (child -> parent),
both carrying JSON lines. A child dies with its parent (PR_SET_PDEATHSIG) and inherits none of the
parent's other children's pipes, so a killed CLI never leaves a probe or a tracer behind."""
from __future__ import annotations

import gc
import json
import os
import select
import signal
import threading
import time
from typing import Callable

from runtime.kernel.syscalls import libc

PR_SET_PDEATHSIG = 1
_parent_fds: set[int] = set()  # parent ends of live children's pipes (owned by the parent)
_parent_fds_lock = threading.Lock()


class Child:
    """A forked child with a control pipe (parent -> child) and a report pipe (child -> parent),
    both carrying JSON lines. `main(ctl_fd, rep_fd)` runs in the child, which then _exits.
    Construct, keep the reference, then start(): whatever interrupts start(), close() cleans up."""

    def __init__(self, main: Callable[[int, int], None], deathsig: int):
        self.main, self.deathsig = main, deathsig
        self.pid: int | None = None
        self.ctl = self.rep = None
        self._buf = b""
        self.eof = False
        self.status: int | None = None  # its wait status, once reaped

    def start(self) -> "Child":
        main, deathsig = self.main, self.deathsig
        parent = os.getpid()
        # ^C between fork() and the bookkeeping would orphan the child: hold SIGINT/SIGTERM back. The
        # mask covers this thread; a ^C another thread receives would raise at any bytecode here (in
        # os.fork()'s own after-fork hooks it is even lost), so SIGINT is only noted meanwhile and
        # raised again once the child is on the books
        # Read first, change inside the try: a ^C acts when a call returns, so one landing right
        # after a call that changed the mask or the handler would skip the restore (and this thread
        # would ignore ^C and TERM from then on)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        noted: list[int] = []
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)  # None: a handler not set from Python, left alone
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            if previous is not None:
                signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
            with _parent_fds_lock:
                ctl_r, ctl_w = os.pipe()
                try:
                    rep_r, rep_w = os.pipe()
                except BaseException:  # EMFILE: nothing may leak
                    os.close(ctl_r)
                    os.close(ctl_w)
                    raise
                self.ctl, self.rep = ctl_w, rep_r
                _parent_fds.update((ctl_w, rep_r))
                try:
                    pid = os.fork()
                except BaseException:
                    os.close(ctl_r)
                    os.close(rep_w)
                    raise
                if pid == 0:  # pragma: no cover - runs in the child
                    code = 1
                    try:
                        # keep only our pipes: a pipe another thread of the caller has open (a subprocess's
                        # stdout, a sibling child's) must not stay open here until we exit, we never exec.
                        # No cyclic GC from now on: a parent's garbage socket collected here would close
                        # an fd number we may have reused
                        gc.disable()
                        low, high = sorted((ctl_r, rep_w))
                        os.closerange(3, low)
                        os.closerange(low + 1, high)
                        os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
                        if previous is not None:  # not our note-taker: the caller's own handling
                            signal.signal(signal.SIGINT, previous)
                        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                        libc.prctl(PR_SET_PDEATHSIG, deathsig, 0, 0, 0)
                        if os.getppid() != parent:  # the parent died before prctl took effect
                            os._exit(1)
                        main(ctl_r, rep_w)
                        code = 0
                    except BaseException as e:  # noqa: BLE001 - report anything, never unwind into the parent's code
                        try:
                            send_line(rep_w, {"error": f"{type(e).__name__}: {e}"})
                        except BaseException:  # noqa: BLE001
                            pass
                    finally:
                        os._exit(code)
                self.pid = pid
                os.close(ctl_r)
                os.close(rep_w)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if noted:
                signal.raise_signal(signal.SIGINT)  # now the caller's handler raises it, with us on the books
        return self

    def send(self, obj) -> None:
        try:
            send_line(self.ctl, obj)
        except OSError:
            pass  # a dead child is noticed when reading

    def recv(self, deadline: float) -> dict | None:
        """The next JSON line, or None at the deadline or at EOF (the child is gone)."""
        while b"\n" not in self._buf:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if _readable(self.rep, left):
                chunk = os.read(self.rep, 65536)
                if not chunk:
                    self.eof = True
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"error": f"unreadable report: {line[:200]!r}"}

    def close(self, grace: float) -> bool:
        """Close the pipes (EOF tells the child to finish), wait up to `grace`, then SIGKILL; always
        reaps. True if the child ended by itself."""
        with _parent_fds_lock:
            for fd in (self.ctl, self.rep):
                if fd is not None and fd in _parent_fds:
                    _parent_fds.discard(fd)
                    _close_quietly(fd)
        if self.pid is None:
            return True
        pid, self.pid = self.pid, None
        deadline = time.monotonic() + grace
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return True
            if done:
                self.status = status
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                self.status = os.waitpid(pid, 0)[1]
                return False
            except ChildProcessError:
                return False
            except InterruptedError:
                continue


def send_line(fd: int, obj) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _readable(fd: int, seconds: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(seconds, 0) * 1000))


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def wait_line(fd: int, deadline: float) -> str | None:
    """In a child: the next control line ("go", "stop"), or None at EOF or the deadline."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if _readable(fd, left):
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])
