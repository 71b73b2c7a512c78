"""Container commands with Docker's names and flags: run, ps, exec, logs, stop, kill, rm, inspect, start, restart."""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

import typer

from .app import app
from .output import for_each, json_lines, print_json, table

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
    format: Optional[str] = typer.Option(None, "--format", help="'json' for one JSON object per line"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json"),
):
    """List containers (like `docker ps`)."""
    from runtime.containers import model

    rows = [c for c in model.list_all() if all or c.running]
    if quiet:
        for c in rows:
            print(c.id[:12])
        return
    items = [_ps_item(c) for c in rows]
    if json_out or format == "json":
        json_lines(items)
    else:
        table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
              [[i["ID"], i["Image"], i["Command"], i["CreatedAt"], i["Status"], i["Ports"], i["Names"]] for i in items])
    for c in rows:  # on stderr, so scripts reading the list still get only the list
        if c.broken:
            print(f"netdiag: warning: container {c.id[:12]} is dead: {c.broken}. "
                  f"Remove it with 'netdiag rm -f {c.id[:12]}' or 'netdiag system prune'", file=sys.stderr)


def _ps_item(c) -> dict:
    from runtime.containers import endpoints, model
    from runtime.networks.ports import describe

    cmd = " ".join([c.config.get("Path", "")] + list(c.config.get("Args", [])))
    cmd = f'"{cmd[:20]}…"' if len(cmd) > 20 else f'"{cmd}"'
    created = model.human_duration(time.time() - model.parse_iso(c.config.get("Created", ""))) + " ago"
    eps = endpoints.endpoints(c) if c.running else {}
    ports = ", ".join(describe(p) for e in eps.values() for p in e.get("Ports", []))
    return {"ID": c.id[:12], "Image": c.config.get("ImageRef", ""), "Command": cmd, "CreatedAt": created,
            "Status": model.status_line(c), "State": c.status, "Ports": ports, "Names": c.name,
            "ExitCode": c.state.get("ExitCode", 0), "Networks": c.config["HostConfig"].get("NetworkMode", ""),
            **({"Error": c.state["Error"]} if c.broken else {})}


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
    from runtime.containers import execute, model
    from runtime.kernel.syscalls import require_root

    require_root("exec in a container")
    c = model.get(container)
    sys.stdout.flush()
    raise typer.Exit(execute.exec_in(c, command, env=validate.env_pairs(env), workdir=workdir, user=user,
                                     interactive=interactive, tty=tty))


@app.command()
def logs(
    container: str = typer.Argument(..., help="Container name or id"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing until the container stops"),
    tail: Optional[int] = typer.Option(None, "--tail", help="Only the last N lines"),
    timestamps: bool = typer.Option(False, "-t", "--timestamps", help="Prefix each line with its time"),
):
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    from runtime.containers import model
    from runtime.containers.stdio import DROPPED, LOG_NOTICE, read_log

    c = model.get(container)
    path = c.dir / "container.log"
    records, offset = read_log(path)
    if tail is not None:
        records = records[-tail:] if tail > 0 else []
    _print_records(records, timestamps)
    while follow:
        time.sleep(0.1)
        records, offset = read_log(path, offset)
        _print_records(records, timestamps)
        if not records and not model.get(c.id).running:
            records, offset = read_log(path, offset)
            _print_records(records, timestamps)
            break
    c = model.get(c.id)
    dropped = c.state.get("LogLinesDropped") or 0
    if dropped and c.status != model.RUNNING:  # its monitor could not write the notice line itself
        if not any(r.get("log", "").startswith(LOG_NOTICE) and DROPPED in r["log"] for r in read_log(path)[0]):
            print(f"{LOG_NOTICE}{dropped} {DROPPED}: the log could not be written (no space left in the state "
                  "directory)", file=sys.stderr)
    if c.unsupervised:
        print("netdiag: the log stops where its monitor died (run 'netdiag system repair')", file=sys.stderr)


def _print_records(records, timestamps: bool) -> None:
    for r in records:
        out = sys.stderr if r.get("stream") == "stderr" else sys.stdout
        out.write((r["time"] + " " if timestamps else "") + r.get("log", ""))
        out.flush()


def _each(refs: List[str], action) -> None:
    """Apply `action` to each container; report errors per container like Docker, exit 1 if any."""
    from runtime.containers import model

    for_each(refs, model.get, action)


def _usable(c):
    """Refuse to start a container whose record is unusable (it shows as dead in `ps -a`)."""
    if c.broken:
        from runtime.errors import ContainerError

        raise ContainerError(f"Cannot start container {c.id[:12]}", c.broken,
                             f"remove it with 'netdiag rm -f {c.id[:12]}' and run it again")
    return c


@app.command()
def stop(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    time_: float = typer.Option(10, "-t", "--time", help="Seconds to wait before SIGKILL"),
):
    """Stop containers: SIGTERM, then SIGKILL after --time seconds."""
    from runtime.containers import lifecycle

    _each(containers, lambda c: lifecycle.stop(c, time_))


@app.command()
def kill(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    signal_: str = typer.Option("KILL", "-s", "--signal", help="Signal to send"),
):
    """Send a signal (default KILL) to containers."""
    from runtime.containers import lifecycle

    sig = lifecycle.signal_number(signal_)
    _each(containers, lambda c: lifecycle.kill(c, sig))


@app.command()
def rm(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    force: bool = typer.Option(False, "-f", "--force", help="Kill running containers first"),
):
    """Remove containers."""
    from runtime.containers import lifecycle

    _each(containers, lambda c: lifecycle.remove(c, force))


@app.command()
def start(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    attach: bool = typer.Option(False, "-a", "--attach", help="Attach to output and wait (one container)"),
):
    """Start stopped containers."""
    from runtime.containers import lifecycle, model
    from runtime.kernel.syscalls import require_root

    require_root("start a container")
    if attach:
        c = _usable(model.get(containers[0]))
        raise typer.Exit(lifecycle.wait_exit(lifecycle.start(c, attach=True), c))
    _each(containers, lambda c: os.close(lifecycle.start(_usable(c))))


@app.command()
def restart(
    containers: List[str] = typer.Argument(..., help="Container names or ids"),
    time_: float = typer.Option(10, "-t", "--time", help="Seconds to wait before SIGKILL"),
):
    """Stop and start containers again."""
    from runtime.containers import lifecycle, model
    from runtime.kernel.syscalls import require_root

    require_root("restart a container")

    def again(c):
        _usable(c)
        lifecycle.stop(c, time_)
        os.close(lifecycle.start(model.get(c.id)))

    _each(containers, again)


@app.command()
def inspect(
    objects: List[str] = typer.Argument(..., help="Containers or images (Docker JSON); with --net: container, ns:NAME, pid:N, host or an IP"),
    type_: Optional[str] = typer.Option(None, "--type", help="container or image (default: try both)"),
    net: bool = typer.Option(False, "--net", help="The network view: interfaces, routes, sockets, resolver, veth peer, bridge, published ports, rules"),
    json_out: bool = typer.Option(False, "--json", help="With --net: print the view as JSON"),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="With --net: read a snapshot file instead of the live host"),
):
    """Docker's JSON for containers or images; with --net, what a namespace's network looks like.

    ns:NAME, pid:N, host and IP targets always get the network view."""
    if net or snapshot or json_out or any(_is_net_target(o) for o in objects):
        from .observe import net_inspect

        net_inspect(objects, json_out, snapshot)
        return
    from runtime.containers import inspect as ins, model
    from runtime.errors import NotFound
    from runtime.images import store as images

    out = []
    for ref in objects:
        if type_ in (None, "container"):
            try:
                out.append(ins.container_json(model.get(ref)))
                continue
            except NotFound:
                if type_ == "container":
                    raise
        try:
            out.append(ins.image_json(images.get(ref)))
        except NotFound as e:
            if type_ == "image":
                raise
            raise NotFound(f"No such object: {ref}", "no container or image has that name or id",
                           "list them with 'netdiag ps -a' and 'netdiag images'") from e
    print_json(out)


def _is_net_target(ref: str) -> bool:
    import ipaddress

    if ref == "host" or ref.startswith(("ns:", "pid:")):
        return True
    try:
        ipaddress.ip_address(ref)
        return True
    except ValueError:
        return False
