"""Seeing the network: `snapshot`, `topo`, and the network view of `inspect`. Read-only commands."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from .app import app


def load_model(snapshot):
    """The model every read command works on: a snapshot file (or several, merged: the hosts of a
    cluster), or the live host (with a spinner)."""
    from ..observe.snapshot import model_of

    if snapshot:
        return model_of(snapshot)
    with _progress("observing the host's namespaces"):
        return model_of()


class _progress:
    """A spinner on stderr while something slow runs (only on a terminal)."""

    def __init__(self, text: str):
        self.text, self.status = text, None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.console import Console

            self.status = Console(stderr=True).status(self.text)
            self.status.__enter__()
        return self

    def __exit__(self, *exc):
        if self.status:
            self.status.__exit__(*exc)


def _warn_partial(model) -> None:
    errors = model.snap.get("errors", [])
    denied = [e for e in errors if "CAP_SYS_ADMIN" in e.get("error", "")]
    if denied:
        print(f"netdiag: note: {len(denied)} namespace(s) could not be entered without root (CAP_SYS_ADMIN); "
              "showing what the current namespace reveals", file=sys.stderr)


def net_inspect(targets: List[str], json_out: bool, snapshot: Optional[str]) -> None:
    from ..views import inspect_view

    model = load_model(snapshot)
    views = [inspect_view.view(model, t) for t in targets]
    _warn_partial(model)
    if json_out:
        print(json.dumps(views if len(views) > 1 else views[0], indent=2))
        return
    for v in views:
        inspect_view.render(v)


@app.command("snapshot")
def snapshot_cmd(
    output: str = typer.Option(..., "-o", "--output", help="Where to write the snapshot (JSON)"),
    no_sockets: bool = typer.Option(False, "--no-sockets", help="Skip listening sockets (faster on huge hosts)"),
):
    """Everything netdiag sees about the host's network, in one versioned JSON file.

    Read commands accept it with --snapshot FILE and work offline, without root, on another machine."""
    from ..observe.snapshot import build

    with _progress("observing the host's namespaces"):
        snap = build(with_sockets=not no_sockets)
    tmp = output + ".partial"
    with open(tmp, "w") as f:
        json.dump(snap, f, indent=1, sort_keys=True)
    import os

    os.replace(tmp, output)
    print(f"wrote {output}: {len(snap['namespaces'])} namespaces, {len(snap['containers'])} containers, "
          f"{len(snap['errors'])} observation error(s)")


@app.command("topo")
def topo(
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Draw the map to FILE.svg, FILE.html or FILE.dot "
                                         "instead of printing the tree"),
    json_out: bool = typer.Option(False, "--json", help="Print the graph as JSON"),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Read a snapshot file instead of the live host"),
    trace: Optional[str] = typer.Option(None, "--trace", help="Overlay a trace result (JSON from 'netdiag trace --json')"),
):
    """The map: namespaces, veth pairs, bridges, VXLAN devices and the uplink."""
    from ..views import topo as topo_view

    model = load_model(snapshot)
    trace_data = None
    if trace:
        from runtime import bounded

        from ..schemas import validate

        trace_data = bounded.load_json(trace, bounded.MAX_SNAPSHOT)
        validate(trace_data, "trace", trace, "give the output of 'netdiag trace --json'")
    snap = model.full()
    _warn_partial(model)
    if json_out:
        print(json.dumps(topo_view.graph(snap, trace=trace_data), indent=2))
    elif not output:  # like any -o: the file is the output (the tree is still there without -o)
        from rich.console import Console

        Console().print(topo_view.render_tree(snap, trace=trace_data))
    if output:
        topo_view.write(snap, output, trace=trace_data)
        print(f"wrote {output}", file=sys.stderr)
