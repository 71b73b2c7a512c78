"""`netdiag compose up|down|ps|logs`: Docker Compose's commands for the Compose specification's
common subset; the policy (names, labels, order, waiting, rollback) is runtime.api.compose's."""
from __future__ import annotations

import signal
import sys
from typing import List, Optional

import typer

from .app import app
from .output import listing

compose_app = typer.Typer(help="Run multi-container stacks from a compose file (like `docker compose`).",
                          no_args_is_help=True, suggest_commands=False)
app.add_typer(compose_app, name="compose")

FILE = typer.Option(None, "-f", "--file", help="Compose file (default: compose.yaml, compose.yml, docker-compose.yml in .)")
PROJECT = typer.Option(None, "-p", "--project-name", help="Project name (default: `name:` or the file's directory, lower-cased)")


@compose_app.callback()
def _compose(ctx: typer.Context, file: Optional[str] = FILE, project: Optional[str] = PROJECT,
             profile: List[str] = typer.Option([], "--profile", help="Also start the services of this profile (repeatable)")) -> None:
    """-f, -p and --profile before the command, as `docker compose -f FILE -p NAME --profile P up` takes them."""
    ctx.obj = {"file": file, "project": project, "profiles": profile}


def _chosen(ctx: typer.Context, file: str | None, project: str | None) -> tuple[str | None, str | None]:
    """-f/-p of the command, else of `compose` itself."""
    given = (ctx.parent.obj if ctx.parent is not None else None) or {}
    return file or given.get("file"), project or given.get("project")


def _progress(text: str) -> None:
    """Docker Compose's progress lines: ✔ done, - in progress or undone, ! a step that failed."""
    mark = "!" if "could not" in text else "-" if text.endswith(("Waiting", "(rolled back)")) else "✔"
    print(f" {mark} {text}", file=sys.stderr, flush=True)


@compose_app.command("up")
def up(
    ctx: typer.Context,
    detach: bool = typer.Option(False, "-d", "--detach", help="Start in the background (else follow the logs; Ctrl-C stops the stack)"),
    build: bool = typer.Option(False, "--build", help="Build images before starting, even if they exist"),
    file: Optional[str] = FILE,
    project: Optional[str] = PROJECT,
):
    """Create and start the stack: networks PROJECT_default (and the file's), named volumes,
    containers PROJECT-SERVICE-1 in dependency order, each service's name resolvable on its networks.
    A failed `up` removes what it made."""
    from runtime.api import compose

    proj = compose.load(*_chosen(ctx, file, project), profiles=((ctx.parent.obj or {}) if ctx.parent else {}).get("profiles") or [])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # TERM rolls back like Ctrl-C
    names = compose.up(proj, build=build, report=_progress)
    if detach:
        return
    print(f"Attaching to {', '.join(names)}", file=sys.stderr)
    try:
        _print_logs(compose.logs(proj.name, follow=True), len(max(names, key=len)))
    except KeyboardInterrupt:
        print("Gracefully stopping... (press Ctrl+C again to force)", file=sys.stderr)
        compose.stop(proj.name, report=_progress)


@compose_app.command("down")
def down(
    ctx: typer.Context,
    volumes: bool = typer.Option(False, "-v", "--volumes", help="Also remove the stack's named volumes"),
    timeout: Optional[float] = typer.Option(None, "-t", "--timeout", help="Seconds to wait for each container to stop (default: its stop_grace_period, else 10)"),
    file: Optional[str] = FILE,
    project: Optional[str] = PROJECT,
):
    """Stop and remove the stack's containers and networks (found by their labels)."""
    from runtime.api import compose

    compose.down(compose.project_name(*_chosen(ctx, file, project)), volumes=volumes, timeout=timeout, report=_progress)


@compose_app.command("ps")
def ps(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "-a", "--all", help="Also stopped containers"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids"),
    format_: Optional[str] = typer.Option(None, "--format", help="table, json or a Go template"),
    file: Optional[str] = FILE,
    project: Optional[str] = PROJECT,
):
    """The stack's containers: NAME, IMAGE, SERVICE, STATUS, PORTS."""
    from runtime.api import compose

    rows = compose.ps(compose.project_name(*_chosen(ctx, file, project)), all_)
    listing(rows, [("NAME", "Name"), ("IMAGE", "Image"), ("COMMAND", "Command"), ("SERVICE", "Service"),
                   ("CREATED", "RunningFor"), ("STATUS", "Status"), ("PORTS", "Ports")], quiet=quiet, format_=format_)


@compose_app.command("logs")
def logs(
    ctx: typer.Context,
    services: List[str] = typer.Argument(None, help="Only these services"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Follow until the containers stop"),
    tail: Optional[int] = typer.Option(None, "-n", "--tail", help="Only the last N lines of each container"),
    no_prefix: bool = typer.Option(False, "--no-log-prefix", help="No CONTAINER | prefix"),
    file: Optional[str] = FILE,
    project: Optional[str] = PROJECT,
):
    """The stack's logs, each line prefixed with its container's name."""
    from runtime.api import compose

    name = compose.project_name(*_chosen(ctx, file, project))
    records = compose.logs(name, services or [], follow=follow, tail=tail)
    _print_logs(records, None if no_prefix else max((len(c["Name"]) for c in compose.ps(name, True)), default=0))


def _print_logs(records, width: int | None) -> None:
    for container, record in records:
        text = record.get("log", "")
        out = sys.stderr if record.get("stream") in ("stderr", "notice") else sys.stdout
        prefix = "" if width is None else f"{container.ljust(width)}  | "
        out.write("".join(prefix + line + "\n" for line in text.rstrip("\n").split("\n")))
        out.flush()
