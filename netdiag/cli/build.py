"""`netdiag build`: build an image from a Dockerfile and a context directory (like docker build)."""
from __future__ import annotations

import os
import signal
import sys
from typing import List, Optional

import typer

from .app import app


@app.command()
def build(
    context: str = typer.Argument(..., help="The build context: the directory COPY and ADD read from"),
    tag: List[str] = typer.Option([], "-t", "--tag", help="Name the image NAME[:TAG] (repeatable)"),
    file: Optional[str] = typer.Option(None, "-f", "--file", help="The Dockerfile (default: CONTEXT/Dockerfile; '-' for stdin)"),
    build_arg: List[str] = typer.Option([], "--build-arg", help="Set a build-time variable KEY=VALUE (KEY alone: from the environment)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the build cache"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the image id"),
):
    """Build an image from a Dockerfile (FROM, ARG, ENV, RUN, COPY, ADD, WORKDIR, USER, EXPOSE, CMD,
    ENTRYPOINT, HEALTHCHECK, LABEL)."""
    from runtime.api import images

    # TERM unwinds like Ctrl-C, so the build's container and temp files are removed on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    img = images.build(context, dockerfile=file, tags=tag, build_args=_build_args(build_arg),
                      no_cache=no_cache, quiet=quiet)
    if quiet:
        print(img.id)


def _build_args(items: List[str]) -> dict:
    from runtime.errors import InvalidArgument

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"Invalid --build-arg {item!r}", "", "write --build-arg KEY=VALUE")
        if not eq:  # like Docker: a bare KEY takes the value from the environment, if set
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out
