"""RUN for the builder: run the command in a throwaway container of the runtime on the image
built so far, and turn the container's overlay upper directory into the step's layer.

The container is always removed, whether the command succeeds, fails, or the build is
interrupted (Ctrl-C kills the command: a shell as the namespace's PID 1 would ignore SIGINT).
"""
from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path
from typing import Callable

from ..containers import container_records, lifecycle, monitor
from ..errors import BuildError, ContainerError
from ..images import layers
from ..images import store as images
from .image_view import ImageView

# What the runtime creates in a container's root when the image lacks it (rootfs.setup): bind
# targets (empty files) and mount points (empty directories). They are not the command's doing.
_STUB_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")
_STUB_DIRS = ("proc", "sys", "dev")


def container_config(argv: list[str], cfg: dict, build_env: dict, image_id: str, image_ref: str) -> dict:
    """A container config (Docker's fields, as lifecycle.build_config makes them) for one RUN."""
    env = list(cfg.get("Env") or [])
    declared = {e.split("=", 1)[0] for e in env}
    env += [f"{k}={v}" for k, v in sorted(build_env.items()) if k not in declared]  # ENV wins over ARG
    return {
        "Image": image_id,
        "ImageRef": image_ref,
        "Path": argv[0],
        "Args": argv[1:],
        "Config": {
            "Hostname": "",
            "User": cfg.get("User", ""),
            "Env": env,
            "Cmd": list(argv),
            "Entrypoint": [],
            "WorkingDir": cfg.get("WorkingDir") or "",
            "ExposedPorts": {},
            "Healthcheck": None,
            "Labels": {"netdiag.build": "1"},
            "Image": image_ref,
        },
        "HostConfig": {"NetworkMode": "host", "Memory": 0, "NanoCpus": 0, "PidsLimit": 0, "AutoRemove": False},
    }


def run(argv: list[str], cfg: dict, build_env: dict, layer_digests: list[str], image: tuple[str, str],
        out_tar: Path, *, where: str, quiet: bool, say: Callable[[str], None]) -> bool:
    """Run argv; write its file changes to out_tar and return True, or False if it changed
    nothing. A non-zero exit is a BuildError naming `where` and the code."""
    lowers = [images.layer_dir(d) for d in layer_digests]
    c = lifecycle.create(container_config(argv, cfg, build_env, *image), None)
    try:
        say(f" ---> Running in {c.id[:12]}")
        code = _start_and_wait(c, lowers, quiet, where)
        if code != 0:
            raise BuildError(f"{where}: the command '{' '.join(argv)}' returned a non-zero code: {code}",
                             fix="Fix the command; the build stopped at this step and tagged nothing")
        upper = c.dir / "upper"
        drop_runtime_stubs(upper, ImageView(lowers))
        changed = any(upper.iterdir())
        if changed:
            layers.tar_directory(upper, out_tar, overlay_upper=True)
    finally:
        _remove(c)
    say(f"Removing intermediate container {c.id[:12]}")
    return changed


def _start_and_wait(c: container_records.Container, lowers: list[Path], quiet: bool, where: str) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = _silence() if quiet else None   # the monitor takes the CLI's stdout/stderr at spawn
    try:
        status = monitor.spawn(c, lowers, attach=True, interactive=False)
    except ContainerError as e:
        raise BuildError(f"{where}: cannot run the command: {e.why or e.what}",
                         f"exit code {e.exit_code}", e.fix) from None
    finally:
        if saved:
            _restore(saved)
    return _wait(status, c)


def _wait(status_fd: int, c: container_records.Container) -> int:
    """Like lifecycle.wait_exit, but Ctrl-C/TERM kill the command and then stop the build."""
    interrupted: list[int] = []

    def on_signal(sig, _frame):
        interrupted.append(sig)
        try:
            fresh = container_records.get(c.id)
            if fresh.running and fresh.pid:
                os.kill(fresh.pid, signal.SIGKILL)
        except Exception:  # noqa: BLE001 - best effort (it may be gone already); removal follows
            pass

    msg = monitor.wait_status(status_fd, on_signal)
    if interrupted:
        raise KeyboardInterrupt
    return 125 if msg is None else int(msg.get("exit", 125))


def _silence() -> tuple[int, int]:
    saved = (os.dup(1), os.dup(2))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    return saved


def _restore(saved: tuple[int, int]) -> None:
    for fd, orig in zip((1, 2), saved):
        os.dup2(orig, fd)
        os.close(orig)


def _remove(c: container_records.Container) -> None:
    """Kill the container if it still runs, then remove all of it (record, upper dir, cgroups)."""
    try:
        if (c.dir / "config.json").exists():
            lifecycle.remove(container_records.get(c.id), force=True)
    except Exception:  # noqa: BLE001 - remove_stopped below cleans up what is left
        pass
    finally:
        lifecycle.remove_stopped(c)


def drop_runtime_stubs(upper: Path, view: ImageView) -> None:
    """Remove from a RUN's upper dir the mount targets the runtime made because the image lacked
    them, so they do not end up in the layer."""
    emptied_etc = False
    for rel in _STUB_FILES:
        p = upper / rel
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        below = view.lstat(tuple(rel.split("/")))
        # An image symlink there is replaced by the runtime (a bind must not follow it): restore it.
        if stat.S_ISREG(st.st_mode) and st.st_size == 0 and (below is None or stat.S_ISLNK(below.st_mode)):
            p.unlink()
            emptied_etc = True
    for rel in _STUB_DIRS + (("etc",) if emptied_etc else ()):
        p = upper / rel
        if not p.is_dir() or p.is_symlink() or any(p.iterdir()) or layers.is_opaque(p):
            continue
        below = view.lstat((rel,))
        # Gone below: the runtime made it. The same directory below: only copied up for the stubs.
        if below is None or (rel == "etc" and _same_dir(os.lstat(p), below)):
            p.rmdir()


def _same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    return stat.S_ISDIR(b.st_mode) and (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid)
