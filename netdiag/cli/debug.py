"""`netdiag debug CONTAINER [--image IMAGE] [-- CMD...]`: a toolbox in a container's network namespace."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from .app import app
from .run_cmd import RUN_FAILED


@app.command("debug", context_settings={"allow_interspersed_args": False, "help_option_names": ["--help"]})
def debug(
    container: str = typer.Argument(..., help="The running container to debug (name or id)"),
    command: Optional[List[str]] = typer.Argument(None, help="Command and arguments (default: an interactive sh)"),
    image: str = typer.Option("busybox", "--image", help="The toolbox's image (it needs sh and cat; default: the built-in busybox)"),
    interactive: bool = typer.Option(False, "-i", "--interactive", help="Keep stdin open when it is no terminal"),
):
    """Open a toolbox in a container's network namespace (like `docker run --rm -it --network
    container:X nicolaka/netshoot`): its eth0, routes and sockets, with the host's ip, tcpdump, nft
    and iperf3 (those the host has) on the PATH, and NET_ADMIN and NET_RAW. A terminal gets a tty.
    The toolbox is removed when the command ends. Exit: the command's code; 125 when the toolbox
    could not be made (no such container, a stopped one, an unknown image)."""
    from runtime.api import debug as api
    from runtime.errors import NetdiagError

    command = list(command or [])
    if command[:1] == ["--"]:  # after the container, click passes the separator on
        command = command[1:]
    tty = os.isatty(0)
    sys.stdout.flush()
    try:
        code, box = api.debug(container, command, image=image, interactive=tty or interactive, tty=tty)
    except NetdiagError as e:
        print(f"netdiag: error: {e}", file=sys.stderr)
        raise typer.Exit(e.exit_code if e.exit_code in (126, 127) else RUN_FAILED)
    if box.missing:
        print(f"netdiag: note: the toolbox lacked {', '.join(box.missing)}: not found on the host", file=sys.stderr)
    raise typer.Exit(code)
