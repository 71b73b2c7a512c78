"""Container commands with Docker's names and flags: run, ps, exec, logs, stop, kill, rm, inspect, start, restart."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from .app import app
from .output import for_each, inspected

_CMD_CTX = {"allow_interspersed_args": False, "help_option_names": ["--help"]}


@app.command("run", add_help_option=False, help="Create and start a container (like `docker run`). See 'netdiag run --help'.",
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "allow_interspersed_args": False})
def run(ctx: typer.Context):
    """Only reached through typer when main() did not take the fast path (e.g. tests calling the app)."""
    from .run_cmd import main as run_main

    raise typer.Exit(run_main(list(ctx.args)))


@app.command()
def ps(
    all: bool = typer.Option(False, "-a", "--all", help="Show stopped containers too"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids"),
    filter_: List[str] = typer.Option([], "-f", "--filter", help="name=REGEX, label=KEY[=VALUE], status=STATUS, network=NET, ancestor=IMAGE, id=PREFIX (repeatable)"),
    format: Optional[str] = typer.Option(None, "--format", help="'json' (a JSON object per line), 'table', or a Go template, e.g. 'table {{.Names}}\\t{{.Status}}'"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json"),
):
    """List containers (like `docker ps`)."""
    from .ps_cmd import show  # main() reaches it without typer for the command lines ps_cmd.parse reads

    show(all, quiet, filter_, format, json_out)


@app.command("exec", context_settings=_CMD_CTX)
def exec_(
    container: str = typer.Argument(..., help="Container name or id"),
    command: List[str] = typer.Argument(..., help="Command and arguments"),
    interactive: bool = typer.Option(False, "-i", "--interactive", help="Keep stdin open"),
    tty: bool = typer.Option(False, "-t", "--tty", help="Allocate a terminal (a pty in the container's /dev/pts)"),
    env: List[str] = typer.Option([], "-e", "--env", help="Set an environment variable"),
    workdir: Optional[str] = typer.Option(None, "-w", "--workdir", help="Working directory"),
    user: Optional[str] = typer.Option(None, "-u", "--user", help="User name or uid[:group]"),
):
    """Run a command in a running container."""
    from runtime import validate
    from runtime.api import containers

    env_pairs = validate.env_pairs(env)
    sys.stdout.flush()
    raise typer.Exit(containers.exec_in(container, command, env=env_pairs, workdir=workdir, user=user,
                                        interactive=interactive, tty=tty))


@app.command()
def logs(
    container: str = typer.Argument(..., help="Container name or id"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing until the container stops"),
    tail: Optional[int] = typer.Option(None, "--tail", help="Only the last N lines"),
    timestamps: bool = typer.Option(False, "-t", "--timestamps", help="Prefix each line with its time"),
):
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    from runtime.api import containers

    for r in containers.logs(container, follow=follow, tail=tail):
        out = sys.stderr if r.get("stream") in ("stderr", "notice") else sys.stdout
        out.write((r["time"] + " " if timestamps and "time" in r else "") + r.get("log", ""))
        out.flush()


def _each(refs: List[str], action) -> None:
    """Apply `action` to each container; report errors per container like Docker, exit 1 if any."""
    for_each(refs, lambda ref: ref, action)


@app.command()
def stop(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    time_: Optional[float] = typer.Option(None, "-t", "--time", help="Seconds to wait before SIGKILL (default: the container's --stop-timeout, else 10)"),
):
    """Stop containers: their stop signal (SIGTERM unless --stop-signal), then SIGKILL after --time seconds."""
    from runtime.api import containers as api

    _each(containers, lambda ref: api.stop(ref, time_))


@app.command()
def kill(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    signal_: str = typer.Option("KILL", "-s", "--signal", help="Signal to send"),
):
    """Send a signal (default KILL) to containers."""
    from runtime.api import containers as api

    api.signal_number(signal_)  # a bad signal name is refused once, before any container
    _each(containers, lambda ref: api.kill(ref, signal_))


@app.command()
def rm(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    force: bool = typer.Option(False, "-f", "--force", help="Kill running containers first"),
):
    """Remove containers."""
    from runtime.api import containers as api

    _each(containers, lambda ref: api.remove(ref, force=force))


@app.command()
def start(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    attach: bool = typer.Option(False, "-a", "--attach", help="Attach to output and wait (one container)"),
):
    """Start stopped containers."""
    from runtime.api import containers as api

    if attach:
        c, status = api.start(containers[0], attach=True)
        raise typer.Exit(api.wait_exit(status, c))
    _each(containers, api.start)


@app.command()
def restart(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    time_: Optional[float] = typer.Option(None, "-t", "--time", help="Seconds to wait before SIGKILL (default: the container's --stop-timeout, else 10)"),
):
    """Stop and start containers again."""
    from runtime.api import containers as api

    _each(containers, lambda ref: api.restart(ref, time_))


@app.command()
def inspect(
    objects: List[str] = typer.Argument(..., help="Containers or images (Docker JSON); with --net: container, ns:NAME, pid:N, host or an IP"),
    type_: Optional[str] = typer.Option(None, "--type", help="container or image (default: try both)"),
    net: bool = typer.Option(False, "--net", help="The network view: interfaces, routes, sockets, resolver, veth peer, bridge, published ports, rules"),
    json_out: bool = typer.Option(False, "--json", help="With --net: print the view as JSON"),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="With --net: read a snapshot file instead of the live host"),
    format_: Optional[str] = typer.Option(None, "-f", "--format", help="A Go template run on each object, e.g. '{{.NetworkSettings.Networks.bridge.IPAddress}}'; 'json' for a JSON line each"),
):
    """Docker's JSON for containers or images; with --net, what a namespace's network looks like.

    ns:NAME, pid:N, host and IP targets always get the network view."""
    if net or snapshot or json_out or any(_is_net_target(o) for o in objects):
        if format_ is not None:
            from runtime.errors import InvalidArgument

            raise InvalidArgument("--format does not apply to the network view", "the network view is not Docker's JSON",
                                  "use --json for the network view, or --format on a container or image")
        from .observe import net_inspect

        net_inspect(objects, json_out, snapshot)
        return
    from runtime.api import containers

    inspected(objects, lambda ref: containers.inspect(ref, type_), format_)


def _is_net_target(ref: str) -> bool:
    import ipaddress

    if ref == "host" or ref.startswith(("ns:", "pid:", "cni:")):
        return True
    try:
        ipaddress.ip_address(ref)
        return True
    except ValueError:
        return False
