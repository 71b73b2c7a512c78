"""Registry commands: pull, push, tag, login, logout (Docker's spelling and output)."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from .app import app
from .pull_cmd import say

_INSECURE = typer.Option([], "--insecure-registry", help="Treat this registry (HOST[:PORT] or a CIDR) as insecure: "
                         "TLS unverified, then plain HTTP (127.0.0.0/8 always is, as in Docker)")


@app.command("pull", add_help_option=False, help="Download an image from a registry. See 'netdiag pull --help'.",
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "allow_interspersed_args": False})
def pull(ctx: typer.Context):
    """Only reached through typer when main() did not take the fast path (pull_cmd.py)."""
    from .pull_cmd import main as pull_main

    raise typer.Exit(pull_main(list(ctx.args)))


@app.command("push")
def push(name: str = typer.Argument(..., metavar="NAME[:TAG]"), insecure: List[str] = _INSECURE):
    """Upload an image to the registry its name says (layers the registry has are not sent). A failure
    is explained as a failed pull is (exit 1)."""
    from runtime.api import registry

    def push_(out, progress=None):
        return registry.push(name, insecure=insecure, out=out, progress=progress)

    try:
        if sys.stdout.isatty():  # a bar per layer, as pull draws them
            from .pull_cmd import with_bars

            with_bars(push_)
        else:
            push_(say)
    except registry.RegistryError as e:
        from .pull_cmd import explained

        raise typer.Exit(explained(e, name))


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
