"""`netdiag debug CONTAINER [--image IMAGE] [-- CMD...]`: a toolbox container in the network namespace
of a running container (`docker run --rm -it --network container:X nicolaka/netshoot`), with the
host's ip, tcpdump, nft and iperf3 (those it has) on its PATH (runtime/containers/toolbox.py).

The toolbox's own process only keeps it alive: `cat` reading a FIFO bound into it, whose one writer
is this command. The command (a shell by default) runs in it through exec, which gives it a pty
when stdin is a terminal. However this command ends (the command exits, Ctrl-C, a crash, SIGKILL)
the FIFO's writer closes, `cat` ends and the container is removed by its monitor (--rm): nothing
is left. The FIFO is opened only after the monitor was forked, so no other process holds it."""
from __future__ import annotations

import contextlib
import os
import signal
import time

from .. import state
from ..containers import container_records, execute, lifecycle, toolbox, volumes
from ..errors import ContainerError, NotFound
from ..images import store as images
from . import require_root

KEEPER = "/.netdiag-debug"  # where the FIFO is, inside the toolbox
DEBUG_LABEL = "netdiag.debug"  # the toolbox's label: the container it debugs
DEFAULT_IMAGE = "busybox"
REMOVE_WAIT = 5.0  # seconds the toolbox's monitor has to remove it before it is removed by force


def debug(target_ref: str, command: list[str], *, image: str = DEFAULT_IMAGE, interactive: bool = False,
          tty: bool = False) -> tuple[int, toolbox.Toolbox]:
    """Run `command` (default: sh) in a toolbox sharing the target's network namespace; its exit
    code, and what the toolbox had. Errors (no such target, a stopped one, an unknown image)
    before anything exists; the toolbox is gone when this returns, also when it raises."""
    require_root("debug a container")
    target = container_records.get(target_ref)
    if not container_records.proc_ok(target):
        raise ContainerError(f"Container {target.name} is not running", f"it is {target.status}: a stopped container has no "
                             "network namespace to debug", f"start it with 'netdiag start {target.name}'")
    img = images.get(image)
    box = toolbox.prepare()
    image_path = next((e.split("=", 1)[1] for e in img.run_config.get("Env") or [] if e.startswith("PATH=")), toolbox.SEARCH_PATH)
    config = lifecycle.build_config(img, image, [KEEPER], entrypoint="cat", network=container_records.SHARED_NETNS + target.id,
                                    auto_remove=True, volumes=box.volumes, env=[f"PATH={toolbox.BIN}:{image_path}"],
                                    cap_add=["NET_ADMIN", "NET_RAW"], labels={DEBUG_LABEL: target.id})
    c = lifecycle.create(config, None)
    keeper, started = -1, False
    try:
        fifo = c.dir / "debug-keeper"
        os.mkfifo(fifo, 0o600)
        c.config["Mounts"] = list(c.config.get("Mounts") or []) + [volumes.parse(f"{fifo}:{KEEPER}:ro")]
        state.write_json(c.dir / "config.json", c.config)
        os.close(lifecycle.start(c))
        started = True
        keeper = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)  # after the fork: the monitor must not hold it too
        with _terminating_unwinds():
            return execute.exec_in(container_records.get(c.id), command or ["sh"], interactive=interactive, tty=tty), box
    finally:
        if keeper >= 0:
            os.close(keeper)  # its keeper reads EOF and ends: the monitor removes the toolbox (--rm)
        deadline = time.monotonic() + REMOVE_WAIT
        while started and c.dir.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if (c.dir / "config.json").exists():  # it never started, or its monitor is stuck
            with contextlib.suppress(NotFound):  # unless the monitor got there first after all
                lifecycle.remove(container_records.get(c.id), force=True)


@contextlib.contextmanager
def _terminating_unwinds():
    """SIGTERM and SIGHUP (a closed terminal) unwind through the finally that removes the toolbox,
    instead of ending the process where it stands."""
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
