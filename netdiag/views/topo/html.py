"""The map as one HTML page: the SVG and tables of containers and networks."""
from __future__ import annotations

from .graph import graph, network_marks
from .labels import MARK_HELP, engine_name, esc, trace_summary
from .svg import svg_title, render_svg

_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2328; }
.diagram { overflow: auto; border: 1px solid #d0d7de; border-radius: 6px; margin-bottom: 1.5rem; }
table { border-collapse: collapse; margin-bottom: 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.blocked { color: #d1242f; font-weight: bold; }
"""


def render_html(snapshot: dict, trace: dict | None = None) -> str:
    """One self-contained page: the SVG inline, then containers and networks as tables."""
    g = graph(snapshot, trace=trace)
    title = svg_title(g)
    body = [f"<h1>{esc(title)}</h1>"]
    if g["trace"]:
        cls = ' class="blocked"' if g["trace"]["failed"] else ""
        body.append(f"<p{cls}>{esc(trace_summary(g['trace']).plain)}</p>")
    body.append(f'<div class="diagram">\n{render_svg(snapshot, trace)}</div>')
    body.append(_html_table("Containers", ["name", "engine", "image", "network", "address", "MAC", "host veth", "ports"],
                            _container_rows(snapshot)))
    body.append(_html_table("Networks", ["name", "engine", "driver", "subnet", "gateway", "bridge", "isolation", "endpoints"],
                            _network_rows(snapshot)))
    if snapshot.get("errors"):
        body.append(_html_table("Observation errors", ["namespace", "what", "error"],
                                [[e.get("ns", ""), e.get("what", ""), e.get("error", "")] for e in snapshot["errors"]]))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _container_rows(snapshot: dict) -> list[list[str]]:
    rows = []
    for c in sorted(snapshot.get("containers") or [], key=lambda c: (c.get("name", ""), c.get("id", ""))):
        ports = ", ".join(f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}→{p.get('ctr_port')}/{p.get('proto')}"
                          for p in c.get("ports") or [])
        nets = sorted((c.get("networks") or {}).items()) or [("", {})]
        for net, e in nets:
            addr = f"{e['ip']}/{e.get('prefix')}" if e.get("ip") else ""
            rows.append([c.get("name", ""), engine_name(c.get("runtime", "")), c.get("image", ""), net, addr,
                         e.get("mac", ""), e.get("host_veth", ""), ports])
    return rows


def _network_rows(snapshot: dict) -> list[list[str]]:
    rows = []
    for n in sorted(snapshot.get("networks") or [], key=lambda n: (n.get("name", ""), n.get("id", ""))):
        # Docker's networks list no endpoints in a snapshot: their containers name the network instead
        names = [e.get("name", "") for e in (n.get("endpoints") or {}).values()] or [
            c.get("name", "") for c in snapshot.get("containers") or []
            if c.get("runtime") == n.get("runtime") and n.get("name") in (c.get("networks") or {})]
        members = ", ".join(sorted(names))
        isolation = "; ".join(f"{m}: {MARK_HELP[m]}" for m in network_marks(n))
        rows.append([n.get("name", ""), engine_name(n.get("runtime", "")), n.get("driver", ""), n.get("subnet", ""),
                     n.get("gateway", ""), n.get("bridge", ""), isolation, members])
    return rows


def _html_table(caption: str, headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<h2>{esc(caption)}</h2>\n<table>\n<tr>{head}</tr>\n{body}\n</table>"
