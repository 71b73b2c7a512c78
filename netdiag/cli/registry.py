"""Registry commands: pull, push, tag, login, logout (Docker's spelling and output)."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from .app import app

_INSECURE = typer.Option([], "--insecure-registry", help="Treat this registry (HOST[:PORT] or a CIDR) as insecure: "
                         "TLS unverified, then plain HTTP (127.0.0.0/8 always is, as in Docker)")


def _say(line: str) -> None:
    print(line, flush=True)


def _with_bars(pull):
    """A progress bar per layer on a terminal (Docker's look); status lines above the bars."""
    import threading

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()) as bars:
        tasks: dict = {}
        lock = threading.Lock()

        def progress(layer: str, done: int, total: int) -> None:
            with lock:
                if layer not in tasks:
                    tasks[layer] = bars.add_task(layer, total=total)
            bars.update(tasks[layer], completed=done)

        return pull(lambda line: bars.console.print(line, highlight=False, markup=False), progress)


@app.command("pull")
def pull(name: str = typer.Argument(..., metavar="NAME[:TAG|@DIGEST]"),
         insecure: List[str] = _INSECURE,
         quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the image's name"),
         json_out: bool = typer.Option(False, "--json", help="Print the outcome (and a failure's diagnosis) as one JSON object"),
         timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the registry to connect or to send more data"),
         platform: str = typer.Option("", "--platform", help="OS/ARCH[/VARIANT] to pick from a multi-platform image (default: this machine's)")):
    """Download an image from a registry (this machine's platform from a multi-platform image).

    A failed pull is explained like a trace: the name (DNS_FAILURE), the TCP handshake (a trace to
    the registry's address and port names the firewall rule or missing route), TLS (which CA, where
    to put it), 401/403 (which realm asked for what scope), 404, 429. Exit 0 pulled, 1 failed."""
    from runtime.api import registry
    from runtime.api.registry import RegistryError

    try:
        if quiet or json_out:
            img = registry.pull(name, insecure=insecure, out=lambda _line: None, timeout=timeout, platform=platform)
        elif sys.stdout.isatty():
            img = _with_bars(lambda out, progress: registry.pull(name, insecure=insecure, out=out, timeout=timeout, progress=progress,
                                                                      platform=platform))
        else:
            img = registry.pull(name, insecure=insecure, out=_say, timeout=timeout, platform=platform)
    except RegistryError as e:
        from ..pull_diagnosis import explain, render

        r = explain(e)
        if json_out:
            print(json.dumps({"image": name, **r}, indent=2))
        else:
            print(f"netdiag: error: {e}", file=sys.stderr)
            render(r, lambda line: print(line, file=sys.stderr))
        raise typer.Exit(1)
    if json_out:
        print(json.dumps({"image": registry.familiar(name), "pulled": True, "cause": None, "id": img.id,
                          "digests": registry.repo_digests(img.id)}, indent=2))
    elif quiet:
        print(registry.familiar(name))


@app.command("push")
def push(name: str = typer.Argument(..., metavar="NAME[:TAG]"), insecure: List[str] = _INSECURE):
    """Upload an image to the registry its name says (layers the registry has are not sent)."""
    from runtime.api import registry

    registry.push(name, insecure=insecure, out=_say)


@app.command("tag")
def tag(source: str = typer.Argument(..., metavar="SOURCE_IMAGE[:TAG]"), target: str = typer.Argument(..., metavar="TARGET_IMAGE[:TAG]")):
    """Give an image another name (e.g. the registry's: 'netdiag tag web registry.example:5000/web:1')."""
    from runtime.api import registry

    registry.tag(source, target)


@app.command("login")
def login(server: Optional[str] = typer.Argument(None, metavar="[SERVER]"),
          username: Optional[str] = typer.Option(None, "-u", "--username"),
          password: Optional[str] = typer.Option(None, "-p", "--password", help="Visible in the process list: prefer --password-stdin"),
          password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input"),
          insecure: List[str] = _INSECURE):
    """Log in to a registry; credentials go to Docker's config file (DOCKER_CONFIG or ~/.docker/config.json)."""
    from runtime.api import registry
    from runtime.errors import InvalidArgument

    if password_stdin:
        if password:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive", "", "give one")
        password = sys.stdin.readline().rstrip("\r\n")
    elif password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not username and sys.stdin.isatty():
        username = input("Username: ")
    if not password and sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
    print(registry.login(server, username or "", password or "", insecure=insecure))


@app.command("logout")
def logout(server: Optional[str] = typer.Argument(None, metavar="[SERVER]")):
    """Forget the credentials stored for a registry."""
    from runtime.api import registry

    print(registry.logout(server))
