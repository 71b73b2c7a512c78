"""`netdiag pull`, parsed with argparse like `run` (run_cmd.py): a pull of what is already here is
one HEAD request, and typer and click would be most of its time. typer only lists the command in
`netdiag --help` and hands its arguments over (registry.py)."""
from __future__ import annotations

import argparse
import json
import sys

HELP = ("Download an image from a registry (this machine's platform from a multi-platform image). "
        "A failed pull is explained like a trace: the name (DNS_FAILURE), the TCP handshake (a trace to the "
        "registry's address and port names the firewall rule or missing route), TLS (which CA, where to put it), "
        "401/403 (which realm asked for what scope), 404, 429. Exit 0 pulled, 1 failed, 2 bad input.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        print(f"netdiag pull: error: {message}\nSee 'netdiag pull --help'.", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netdiag pull", description=HELP, usage="netdiag pull [OPTIONS] NAME[:TAG|@DIGEST]")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--insecure-registry", dest="insecure", action="append", default=[], metavar="HOST[:PORT]|CIDR",
                   help="Treat this registry as insecure: TLS unverified, then plain HTTP (127.0.0.0/8 always is, as in Docker)")
    p.add_argument("-q", "--quiet", action="store_true", help="Print only the image's name")
    p.add_argument("--json", dest="json_out", action="store_true", help="Print the outcome (and a failure's diagnosis) as one JSON object")
    p.add_argument("--timeout", type=float, default=30.0, help="Seconds to wait for the registry to connect or to send more data (30)")
    p.add_argument("--platform", default="", help="OS/ARCH[/VARIANT] to pick from a multi-platform image (default: this machine's)")
    return p


def say(line: str) -> None:
    """A status line, flushed at once (a pipe sees progress as it happens)."""
    print(line, flush=True)


def with_bars(transfer):
    """A progress bar per layer on a terminal (Docker's look); status lines above the bars.
    `transfer(out, progress)` is a pull or a push."""
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

        return transfer(lambda line: bars.console.print(line, highlight=False, markup=False), progress)


def explained(e, image: str, json_out: bool = False) -> int:
    """A registry failure (of pull, push or login) with its diagnosis; the exit code (1)."""
    from ..pull_diagnosis import explain, render

    r = explain(e)
    if json_out:
        print(json.dumps({"image": image, **r}, indent=2))
    else:
        print(f"netdiag: error: {e}", file=sys.stderr)
        render(r, lambda line: print(line, file=sys.stderr))
    return 1


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    from runtime.api import registry
    from runtime.api.registry import RegistryError

    def pull(out, progress=None):
        return registry.pull(a.name, insecure=a.insecure, out=out, timeout=a.timeout, progress=progress, platform=a.platform)

    try:
        if a.quiet or a.json_out:
            img = pull(lambda _line: None)
        elif sys.stdout.isatty():
            img = with_bars(pull)
        else:
            img = pull(say)
    except RegistryError as e:
        return explained(e, a.name, a.json_out)
    if a.json_out:
        print(json.dumps({"image": registry.familiar(a.name), "pulled": True, "cause": None, "id": img.id,
                          "digests": registry.repo_digests(img.id)}, indent=2))
    elif a.quiet:
        print(registry.familiar(a.name))
    return 0
