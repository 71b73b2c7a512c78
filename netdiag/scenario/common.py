"""What every kind of scenario world shares (one lab host: session.py; several hosts on an overlay:
cluster.py): steps as argument lists, the grader's report, a network's and a container's `netdiag`
command, and killing what runs in the world's network namespaces. Imports neither of them."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import time

from runtime.errors import NetdiagError
from ..worlds.leftovers import pids_in

STEP_TIMEOUT = 120
_VAR = re.compile(r"\$\{([a-z_]+)(?::([A-Za-z0-9_.-]+))?(?::([A-Za-z0-9_.-]+))?\}")


class StepFailed(NetdiagError):
    """A fault or solution step that did not run: the scenario cannot be what it says."""


def checks_of(report: dict) -> list[dict]:
    """`netdiag check --format json` output -> [{name, passed (None: skipped or error), status,
    detail, cause, fix}, with fix_command, fix_verified and fix_proof where the check has them]."""
    return [{"name": c["name"], "passed": {"passed": True, "failed": False}.get(c["status"]), "status": c["status"],
             "detail": c["summary"], "cause": c.get("cause"), "fix": c.get("fix"),
             **{k: c[k] for k in ("fix_command", "fix_verified", "fix_proof") if c.get(k) is not None}}
            for c in report["checks"]]


def grader_argv(path: str, verify_fix: bool = False) -> list[str]:
    """The grader's command: the scenario's checks by `netdiag check` (with --verify-fix: each
    failed check's fix also proven on a throwaway replica of the world)."""
    return ["netdiag", "check", path, "--format", "json", "--parallel", "4"] + (["--verify-fix"] if verify_fix else [])


def network_argv(net: dict, expand=lambda text: text) -> list[str]:
    """`netdiag network create` for one of the world's `networks`."""
    argv = ["netdiag", "network", "create"]
    if net.get("driver"):
        argv += ["-d", net["driver"]]
    for key in ("subnet", "gateway"):
        if net.get(key):
            argv += [f"--{key}", expand(net[key])]
    if net.get("internal"):
        argv.append("--internal")
    for k, v in (net.get("options") or {}).items():
        argv += ["-o", f"{k}={v}"]
    return argv + [net["name"]]


def container_argv(c: dict) -> list[str]:
    argv = ["netdiag", "run", "-d", "--name", c["name"]]
    if c.get("network"):
        argv += ["--network", c["network"]]
    for p in c.get("publish", []):
        argv += ["-p", p]
    if c.get("ip"):
        argv += ["--ip", c["ip"]]
    for a in c.get("aliases", []):
        argv += ["--network-alias", a]
    for cap in c.get("cap_add", []):
        argv += ["--cap-add", cap]
    health = c.get("health")
    if health:
        argv += ["--health-cmd", health["cmd"], "--health-interval", health.get("interval", "1s"),
                 "--health-timeout", health.get("timeout", "1s"), "--health-retries", str(health.get("retries", 1))]
    return argv + [c.get("image", "busybox")] + list(c.get("command") or ["sleep", "2147483647"])


def netns_inodes(names, pids=()) -> set[int]:
    """The inodes of named network namespaces (/run/netns/NAME) and of the namespaces `pids` run in,
    never this process's nor init's: a recorded pid that died and was reused by a process of the
    machine must not make the machine's own namespace part of a world."""
    paths = [f"/run/netns/{n}" for n in names] + [f"/proc/{p}/ns/net" for p in pids]
    inodes = set()
    for path in paths:
        try:
            inodes.add(os.stat(path).st_ino)
        except OSError:
            pass
    for own in ("/proc/self/ns/net", "/proc/1/ns/net"):
        try:
            inodes.discard(os.stat(own).st_ino)
        except OSError:
            pass
    return inodes


def kill_in(inodes: set[int], timeout: float = 5.0) -> set[int]:
    """SIGKILL every process in those network namespaces and wait (up to `timeout`) until they are
    gone, reaping those that are this process's children. The pids still running at the end."""
    killed = set()
    for pid in pids_in(inodes):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + timeout
    while True:
        for pid in killed:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        killed = {p for p in killed if alive(p)}
        if not killed or time.monotonic() > deadline:
            return killed
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    from runtime.kernel.procs import stat_fields

    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"
