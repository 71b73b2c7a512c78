"""The map as Graphviz DOT."""
from __future__ import annotations

from .graph import View, graph
from .labels import clean, hop_label, mark_text, network_text, ns_kind_text, trace_summary, vxlan_text

_DOT_NODE_STYLE = {"uplink": {"style": "rounded,filled", "fillcolor": "#fde7c8"},
                   "bridge": {"style": "filled", "fillcolor": "#d8f0dc"},
                   "vxlan": {"style": "filled", "fillcolor": "#eadcf7"}}
_DOT_EDGE_STYLE = {"veth": {"penwidth": "1.5"}, "bridge": {"color": "#2e7d32"},
                   "master": {"color": "#2e7d32", "style": "dashed"},
                   "underlay": {"color": "#7b1fa2", "style": "dotted"}}
# namespaces: each engine's containers, plain namespaces and the host drawn three different ways
_DOT_CLUSTER_STYLE = {"netdiag": {"style": "rounded,filled", "fillcolor": "#eef6ff", "color": "#54aeff"},
                      "docker": {"style": "rounded,filled,bold", "fillcolor": "#e3f6f3", "color": "#0a7d6e"},
                      "podman": {"style": "rounded,filled,bold", "fillcolor": "#f5ecff", "color": "#8250df"},
                      "plain": {"style": "rounded,dashed", "color": "#d4a72c"},
                      "host": {"style": "rounded,filled", "fillcolor": "#f6f8fa"}}
_DOT_ISOLATED = {"color": "#bf8700", "fontcolor": "#7d4e00", "peripheries": "2"}
_DOT_DOWN = {"color": "#d1242f", "fontcolor": "#d1242f", "style": "dashed"}
_DOT_TRACE = {"path": {"color": "#1f6feb", "penwidth": "3"},
              "blocked": {"color": "#d1242f", "fontcolor": "#d1242f", "penwidth": "3"},
              "unreached": {"color": "#8c959f", "style": "dashed"}}


def render_dot(snapshot: dict, trace: dict | None = None) -> str:
    """Graphviz DOT: one cluster per namespace, interfaces inside, wires between."""
    g = graph(snapshot, trace=trace)
    v = View(g)
    out = ["graph netdiag {",
           f"  graph [rankdir=LR, fontname=\"monospace\", label={_dq(_dot_title(g))}, labelloc=t];",
           '  node [shape=box, fontname="monospace", fontsize=10];',
           '  edge [fontname="monospace", fontsize=9];']
    for i, ns in enumerate(v.namespaces):
        out += _dot_cluster(i, ns, v)
    drawn = {n["id"] for ns in v.namespaces for n in v.visible(ns["id"])}
    for e in g["edges"]:
        if e["source"] in drawn and e["target"] in drawn:
            attrs = {**_DOT_EDGE_STYLE.get(e["kind"], {}), **(_DOT_DOWN if e["down"] else {}),
                     **_DOT_TRACE.get(e["trace"], {})}
            out.append(f"  {_dq(e['source'])} -- {_dq(e['target'])} [{_dot_attrs(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_attrs(attrs: dict) -> str:
    return ", ".join(f"{k}={_dq(v)}" for k, v in attrs.items())


def _dot_title(g: dict) -> str:
    title = f"{g['hostname'] or 'host'} {g['captured_at']}".strip()
    if g["trace"]:
        title += "\n" + trace_summary(g["trace"]).plain
    return title


def _dot_cluster(i: int, ns: dict, v: View) -> list[str]:
    name = v.g["hostname"] if ns["is_host"] and v.g["hostname"] else ns["label"]
    attrs = {"label": f"{name} ({ns_kind_text(ns)})" + _dot_hops(ns), **_DOT_CLUSTER_STYLE[_cluster_kind(ns)]}
    attrs.update(_DOT_TRACE.get(ns["trace"], {}))
    lines = [f"  subgraph cluster_{i} {{", *(f"    {k}={_dq(val)};" for k, val in attrs.items())]
    for n in v.visible(ns["id"]):
        lines.append(f"    {_dq(n['id'])} [{_dot_attrs(_dot_node_attrs(n))}];")
    lines.append("  }")
    return lines


def _cluster_kind(ns: dict) -> str:
    if ns["is_host"]:
        return "host"
    if ns["ns_kind"] == "container":
        return ns["engine"] if ns["engine"] in ("docker", "podman") else "netdiag"
    return "plain"


def _dot_node_attrs(n: dict) -> dict:
    net = n.get("network")
    label = "\n".join([n["name"] + (f" ({n['kind']})" if n["kind"] in ("uplink", "bridge", "vxlan") else ""),
                       *n["addresses"], *([network_text(net)] if net else []),
                       *(mark_text(m) for m in (net or {}).get("marks", []))])
    if n.get("vxlan"):
        label += "\n" + vxlan_text(n)
    if n["status"]:
        label += "\n" + n["status"]
    label += _dot_hops(n)
    attrs = {"label": label, **_DOT_NODE_STYLE.get(n["kind"], {})}
    if net and net["marks"]:
        attrs.update(_DOT_ISOLATED, style="filled,bold")
    if n["status"]:
        attrs.update(color="#d1242f", fontcolor="#d1242f")
    attrs.update(_DOT_TRACE.get(n["trace"], {}))
    if n["trace"] == "unreached" and "filled" in attrs.get("style", ""):
        attrs["style"] += ",dashed"
    return attrs


def _dot_hops(n: dict) -> str:
    return "\n" + hop_label(n) if n["trace"] else ""


def _dq(s: str) -> str:
    """A DOT double-quoted string; backslashes doubled so \\n, \\l... from users stay literal."""
    s = clean(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


