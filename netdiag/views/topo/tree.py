"""The map in a terminal: a rich Tree, host at the root."""
from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from .graph import View, graph
from .labels import TRACE_MARK, hop_label, mark_text, network_text, ns_kind_text, trace_summary, vxlan_text

# the engine that runs a container, told apart at a glance (and in words: "(Docker container)")
_NS_STYLE = {"netdiag": "bold cyan", "docker": "bold blue", "podman": "bold magenta"}


def render_tree(snapshot: dict, trace: dict | None = None) -> Tree:
    """Host namespace at the root; its uplink, bridges with their ports and what is plugged in;
    then the namespaces that hang off no bridge."""
    g = graph(snapshot, trace=trace)
    v = View(g)
    tree = Tree(_tree_root_label(g, v), guide_style="dim")
    host = v.by_id.get(g["host"] or "")
    if host:
        _tree_hub(tree, v, host["id"])
    for ns in v.namespaces:
        if ns is not host and v.is_hub(ns):
            _tree_hub(tree.add(_ns_text(ns)), v, ns["id"])
    loose = [ns for ns in v.namespaces if not v.is_hub(ns) and not v.on_bridge(ns)]
    if loose:
        branch = tree.add(Text("namespaces on no bridge", style="bold"))
        for ns in loose:
            sub = branch.add(_ns_text(ns))
            for n in v.visible(ns["id"]):
                sub.add(_iface_line(v, n))
    return tree


def _tree_root_label(g: dict, v: View) -> Text:
    host = v.by_id.get(g["host"] or "")
    text = Text.assemble((g["hostname"] or "host", "bold"), "  host namespace ", (g["host"] or "?", "dim"))
    if host:
        _mark(text, host)
    if g["captured_at"]:
        text.append(f"  {g['captured_at']}", style="dim")
    if g["trace"]:
        text.append("\n")
        text.append_text(trace_summary(g["trace"]))
    return text


def _tree_hub(parent: Tree, v: View, ns_id: str) -> None:
    uplinks, bridges, vxlans, other = v.hub_sections(ns_id)
    for n in uplinks:
        parent.add(_iface_line(v, n, prefix="uplink "))
    for bridge, ports in bridges:
        branch = parent.add(_iface_line(v, bridge, prefix="bridge "))
        for p in ports:
            branch.add(_iface_line(v, p))
    for n in vxlans:
        parent.add(_iface_line(v, n, prefix="vxlan "))
    for n in other:
        parent.add(_iface_line(v, n))


def _iface_line(v: View, n: dict, prefix: str = "") -> Text:
    text = Text(prefix, style="bold")
    _iface_text(text, n, bold=bool(prefix))
    if n.get("network"):
        text.append("  " + network_text(n["network"]), style="dim")
        for mark in n["network"]["marks"]:
            text.append(f"  ⊘ {mark_text(mark)}", style="bold yellow")
    if n["kind"] == "vxlan" or n.get("vxlan"):
        text.append("  " + vxlan_text(n), style="magenta")
    peer = v.by_id.get(n["peer"] or "")
    if peer:
        ns = v.by_id[peer["parent"]]
        text.append("  ⇄ ")
        text.append_text(_ns_text(ns))
        text.append(" ")
        _iface_text(text, peer, bold=False)
        if peer["mac"]:
            text.append(f" {peer['mac']}", style="dim")
    elif n["peer_unknown"]:
        text.append("  ⇄ ? peer not observed", style="yellow")
    return text


def _iface_text(text: Text, n: dict, bold: bool) -> None:
    style = "bold red" if n["trace"] == "blocked" else "bold" if bold else ""
    text.append(n["name"], style=style)
    for a in n["addresses"]:
        text.append(f" {a}", style="green")
    if n["status"]:
        text.append(f" {n['status']}", style="bold red")
    _mark(text, n)


def _mark(text: Text, n: dict) -> None:
    if n["trace"]:
        text.append(" " + hop_label(n), style=TRACE_MARK[n["trace"]][1])


def _ns_text(ns: dict) -> Text:
    style = _NS_STYLE.get(ns["engine"], "bold cyan") if ns["ns_kind"] == "container" else "bold"
    text = Text.assemble((ns["label"], style), (f" ({ns_kind_text(ns)})", "dim"))
    _mark(text, ns)
    return text


