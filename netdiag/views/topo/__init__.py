"""Topology views of a snapshot: a neutral graph, a terminal tree, DOT, a self-made SVG and HTML.

Everything here is pure: it reads a snapshot dict ("netdiag.snapshot/1") and returns data or text,
so it works offline on a saved snapshot, without root. All renderers start from `graph()`, so the
terminal and the pictures never disagree about what is connected to what.

Graph vocabulary
    nodes  namespaces (kind "namespace", parent None; "engine" says who runs the container in it:
           "netdiag", "docker", or "" for the host and plain namespaces) and their interfaces
           (parent = namespace id). Interface kinds: "uplink" (the host's way out), "bridge",
           "vxlan", "veth", "loopback", "device" or whatever kind the kernel reported. Interface ids
           are "<ns id>/<ifname>". A bridge that carries a runtime's network has "network": its
           name, engine, driver, icc, internal and "marks" (["icc=false", "internal"] where they hold).
    edges  "veth" (the two ends of a pair, across namespaces), "bridge" (port -> its bridge, from
           `master`; "master" when the master is not a bridge), "underlay" (vxlan -> its dev).
    trace  optional overlay: nodes and edges get trace = "path" (passed) | "blocked" (failed there)
           | "unreached" (after the failing hop; the strongest of its hops), the hop numbers that
           touched them, and nodes "trace_marks": their hops grouped by state with a word for people
           (passed, seen = captured by the live probe, failed, last seen, not reached).

Layout: graph.py (the graph, the trace overlay, shared lookups), tree.py (terminal), dot.py, svg.py,
html.py; write() picks the renderer by file suffix. Pure: reads a snapshot dict only.
"""
from __future__ import annotations

from pathlib import Path

from runtime.errors import InvalidArgument

from .dot import render_dot
from .graph import GRAPH_SCHEMA, graph
from .html import render_html
from .svg import render_svg
from .tree import render_tree

_WRITERS = {".svg": render_svg, ".html": render_html, ".dot": render_dot}


def write(snapshot: dict, path: str, trace: dict | None = None) -> None:
    """Write the topology to `path`; the suffix picks the format (.svg, .html or .dot)."""
    suffix = Path(path).suffix.lower()
    render = _WRITERS.get(suffix)
    if render is None:
        raise InvalidArgument(f"cannot write a topology to {path!r}",
                              f"the file suffix {suffix or '(none)'} names no format",
                              "use a name ending in .svg, .html or .dot")
    Path(path).write_text(render(snapshot, trace), encoding="utf-8")


__all__ = ["graph", "render_tree", "render_dot", "render_svg", "render_html", "write", "GRAPH_SCHEMA"]
