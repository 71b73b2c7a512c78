"""Topology views of a snapshot: a neutral graph, a terminal tree, DOT, a self-made SVG and HTML.

Everything here is pure: it reads a snapshot dict ("netdiag.snapshot/1") and returns data or text,
so it works offline on a saved snapshot, without root. All renderers start from `graph()`, so the
terminal and the pictures never disagree about what is connected to what.

Graph vocabulary
    nodes  namespaces (kind "namespace", parent None) and their interfaces (parent = namespace id).
           Interface kinds: "uplink" (the host's way out), "bridge", "vxlan", "veth", "loopback",
           "device" or whatever kind the kernel reported. Interface ids are "<ns id>/<ifname>".
    edges  "veth" (the two ends of a pair, across namespaces), "bridge" (port -> its bridge, from
           `master`; "master" when the master is not a bridge), "underlay" (vxlan -> its dev).
    trace  optional overlay: nodes and edges get trace = "path" | "blocked" | "unreached" and the
           hop numbers that touched them.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from rich.text import Text
from rich.tree import Tree

from runtime.errors import InvalidArgument

GRAPH_SCHEMA = "netdiag.topo/1"
_PHYSICAL_KINDS = {"device", "bond", "team", "vlan", "macvlan", "ipvlan", "wireguard"}
_NS_ORDER = {"host": 0, "netns": 1, "pid": 2, "container": 3}


# --------------------------------------------------------------------------- the neutral graph

def graph(snapshot: dict, *, trace: dict | None = None) -> dict:
    """The snapshot as namespaces with interfaces, and the wires between them."""
    namespaces = snapshot.get("namespaces") or {}
    host = snapshot.get("host")
    containers = _containers_by_ns(snapshot)
    nodes, edges = [], []
    for ns in _ordered_namespaces(namespaces, host):
        nodes.append(_ns_node(ns, host, containers.get(ns["id"])))
        links = sorted(ns.get("links") or [], key=lambda link: (link.get("index") or 0, link.get("name") or ""))
        for link in links:
            nodes.append(_link_node(ns, link, namespaces, host))
    by_id = {n["id"]: n for n in nodes}
    edges += _veth_edges(nodes, by_id, host)
    edges += _member_edges(nodes, by_id)
    edges += _underlay_edges(nodes, by_id)
    g = {"schema": GRAPH_SCHEMA, "host": host, "hostname": snapshot.get("hostname", ""),
         "captured_at": snapshot.get("captured_at", ""), "nodes": nodes, "edges": edges,
         "networks": _bridge_networks(snapshot), "trace": None}
    if trace:
        _overlay_trace(g, trace, namespaces)
    return g


def _containers_by_ns(snapshot: dict) -> dict[str, dict]:
    return {c["ns"]: c for c in snapshot.get("containers") or [] if c.get("ns")}


def _bridge_networks(snapshot: dict) -> dict[str, str]:
    """Bridge device name -> runtime network name (e.g. docker0 -> bridge)."""
    return {n["bridge"]: n.get("name", "") for n in snapshot.get("networks") or [] if n.get("bridge")}


def _ordered_namespaces(namespaces: dict, host: str | None) -> list[dict]:
    def key(ns):
        return (ns["id"] != host, _NS_ORDER.get(ns.get("kind"), 9), _ns_name(ns, None), ns["id"])
    return sorted(namespaces.values(), key=key)


def _ns_name(ns: dict, container: dict | None) -> str:
    if container and container.get("name"):
        return container["name"]
    return ns.get("name") or ns.get("label") or ns["id"]


def _ns_node(ns: dict, host: str | None, container: dict | None) -> dict:
    info = None
    if container:
        info = {"id": container.get("id", ""), "name": container.get("name", ""), "image": container.get("image", ""),
                "runtime": container.get("runtime", ""), "ports": container.get("ports") or []}
    return {"id": ns["id"], "kind": "namespace", "ns_kind": ns.get("kind", ""), "parent": None,
            "label": _ns_name(ns, container), "is_host": ns["id"] == host, "runtime": ns.get("runtime") or "",
            "container": info, "trace": None, "hops": []}


def _link_node(ns: dict, link: dict, namespaces: dict, host: str | None) -> dict:
    name = link.get("name") or f"if{link.get('index')}"
    addrs = [f"{a['address']}/{a['prefixlen']}" for a in ns.get("addresses") or []
             if a.get("ifname") == name and a.get("scope") != "link"]
    peer_id, peer_unknown = _peer_id(link, namespaces)
    node = {"id": f"{ns['id']}/{name}", "kind": link.get("kind") or "device", "link_kind": link.get("kind") or "device",
            "parent": ns["id"], "name": name, "index": link.get("index"), "addresses": addrs,
            "mac": link.get("mac") or "", "mtu": link.get("mtu"), "up": bool(link.get("up")),
            "status": _status(link), "master": f"{ns['id']}/{link['master']}" if link.get("master") else None,
            "peer": peer_id, "peer_unknown": peer_unknown, "trace": None, "hops": []}
    node["label"] = " ".join([name, *addrs])
    if link.get("vxlan"):
        node["vxlan"] = dict(link["vxlan"])
    if ns["id"] == host and _is_uplink(link, namespaces):
        node["kind"] = "uplink"
    return node


def _status(link: dict) -> str | None:
    """None when the link works, "DOWN" when switched off, "NO-CARRIER" when up without a carrier."""
    if not link.get("up"):
        return "DOWN"
    if link.get("state") in ("DOWN", "LOWERLAYERDOWN", "NOTPRESENT"):
        return "NO-CARRIER"
    return None


def _peer_id(link: dict, namespaces: dict) -> tuple[str | None, bool]:
    """The other end of a veth as a node id, and whether the veth's peer is unknown."""
    if link.get("kind") != "veth":
        return None, False
    peer = link.get("peer") or {}
    other = namespaces.get(peer.get("ns"))
    if other is None:
        return None, True
    name = peer.get("name") or next((x.get("name") for x in other.get("links") or []
                                     if x.get("index") == peer.get("index")), None)
    return (f"{other['id']}/{name}", False) if name else (None, True)


def _is_uplink(link: dict, namespaces: dict) -> bool:
    """The host's way out: a physical-ish device, or a veth whose far end is not a container
    (a lab's "outside" namespace) and that is not plugged into a bridge."""
    kind = link.get("kind")
    if kind in _PHYSICAL_KINDS:
        return True
    if kind != "veth" or link.get("master"):
        return False
    other = namespaces.get((link.get("peer") or {}).get("ns"))
    return other is not None and other.get("kind") not in ("container", "host")


def _edge(kind: str, source: str, target: str, by_id: dict) -> dict:
    down = bool(by_id[source]["status"] or by_id[target]["status"])
    return {"id": f"{kind}:{source}|{target}", "kind": kind, "source": source, "target": target,
            "down": down, "trace": None}


def _veth_edges(nodes: list[dict], by_id: dict, host: str | None) -> list[dict]:
    edges, seen = [], set()
    for n in nodes:
        peer = n.get("peer")
        if not peer or peer not in by_id or frozenset((n["id"], peer)) in seen:
            continue
        seen.add(frozenset((n["id"], peer)))
        a, b = sorted((n["id"], peer), key=lambda i: (by_id[i]["parent"] != host, i))
        edges.append(_edge("veth", a, b, by_id))
    return edges


def _member_edges(nodes: list[dict], by_id: dict) -> list[dict]:
    edges = []
    for n in nodes:
        master = by_id.get(n.get("master") or "")
        if master:
            edges.append(_edge("bridge" if master["link_kind"] == "bridge" else "master", n["id"], master["id"], by_id))
    return edges


def _underlay_edges(nodes: list[dict], by_id: dict) -> list[dict]:
    edges = []
    for n in nodes:
        dev = (n.get("vxlan") or {}).get("dev")
        if dev and f"{n['parent']}/{dev}" in by_id:
            edges.append(_edge("underlay", n["id"], f"{n['parent']}/{dev}", by_id))
    return edges


# --------------------------------------------------------------------------- trace overlay

def _overlay_trace(g: dict, trace: dict, namespaces: dict) -> None:
    """Mark hop nodes: "path" (reached), "blocked" (where it died), "unreached" (never got there);
    and the edges between consecutive hops."""
    by_id = {n["id"]: n for n in g["nodes"]}
    blocked_at = trace.get("blocked_at")
    hops, missing = [], []
    for hop in sorted(trace.get("hops") or [], key=lambda h: h.get("n") or 0):
        node_id = _hop_node(hop, namespaces, g["nodes"])
        state = _hop_state(hop, blocked_at)
        hops.append({"n": hop.get("n"), "node": node_id, "state": state})
        if node_id is None:
            missing.append(hop.get("n"))
            continue
        node = by_id[node_id]
        node["hops"].append(hop.get("n"))
        node["trace"] = _stronger(node["trace"], state)
    steps = []
    for a, b in zip(hops, hops[1:]):
        edge = _edge_between(g["edges"], a["node"], b["node"])
        reached = a["state"] != "unreached" and b["state"] != "unreached"
        if edge is not None:
            edge["trace"] = _stronger(edge["trace"], "path" if reached else "unreached")
        steps.append({"from": a["node"], "to": b["node"], "edge": edge["id"] if edge else None,
                      "trace": "path" if reached else "unreached"})
    blocked_node = next((h["node"] for h in hops if h["state"] == "blocked"), None)
    g["trace"] = {"verdict": trace.get("verdict", ""), "blocked_at": blocked_at, "blocked_node": blocked_node,
                  "failed": blocked_at is not None or blocked_node is not None,
                  "reason": _reason(trace), "hops": hops, "steps": steps, "missing": missing}


def _hop_state(hop: dict, blocked_at) -> str:
    """seen is True/False from a live probe, None when only reasoned about (then it is on the path
    up to where the trace died)."""
    n = hop.get("n") or 0
    if blocked_at is not None and n == blocked_at:
        return "blocked"
    if hop.get("seen") is False or (blocked_at is not None and n > blocked_at):
        return "unreached"
    return "path"


def _stronger(old: str | None, new: str) -> str:
    rank = {None: 0, "unreached": 1, "path": 2, "blocked": 3}
    return new if rank[new] > rank[old] else old


def _hop_node(hop: dict, namespaces: dict, nodes: list[dict]) -> str | None:
    """A hop names a namespace (by id, or failing that by name) and maybe an interface."""
    ref = hop.get("namespace")
    ns_id = ref if ref in namespaces else next(
        (n["id"] for n in nodes if n["kind"] == "namespace" and ref in (n["label"], namespaces[n["id"]].get("name"))), None)
    if ns_id is None:
        return None
    if not hop.get("interface"):
        return ns_id
    node_id = f"{ns_id}/{hop['interface']}"
    return node_id if any(n["id"] == node_id for n in nodes) else None


def _edge_between(edges: list[dict], a: str | None, b: str | None) -> dict | None:
    return next((e for e in edges if {e["source"], e["target"]} == {a, b}), None) if a and b else None


def _reason(trace: dict) -> str:
    for key in ("summary", "reason", "cause"):
        if isinstance(trace.get(key), str):
            return trace[key]
    return ""


# --------------------------------------------------------------------------- graph queries

class _View:
    """Lookups the renderers share: children per namespace, ports per bridge, who is where."""

    def __init__(self, g: dict):
        self.g = g
        self.by_id = {n["id"]: n for n in g["nodes"]}
        self.namespaces = [n for n in g["nodes"] if n["kind"] == "namespace"]
        self.ifaces: dict[str, list[dict]] = {ns["id"]: [] for ns in self.namespaces}
        for n in g["nodes"]:
            if n["parent"]:
                self.ifaces[n["parent"]].append(n)

    def ports(self, bridge: dict) -> list[dict]:
        return [n for n in self.ifaces[bridge["parent"]] if n["master"] == bridge["id"]]

    def visible(self, ns_id: str) -> list[dict]:
        """Interfaces worth drawing: all but loopback, unless loopback is all there is."""
        rows = [n for n in self.ifaces[ns_id] if n["kind"] != "loopback"]
        return rows or list(self.ifaces[ns_id])

    def is_hub(self, ns: dict) -> bool:
        """The host, and other non-container namespaces that hold a bridge (e.g. an overlay netns)."""
        return ns["is_host"] or (ns["ns_kind"] != "container" and any(n["kind"] == "bridge" for n in self.ifaces[ns["id"]]))

    def on_bridge(self, ns: dict) -> bool:
        """Some interface of this namespace is the peer of a bridge port elsewhere."""
        for n in self.ifaces[ns["id"]]:
            peer = self.by_id.get(n["peer"] or "")
            if peer and peer["master"] and peer["parent"] != ns["id"]:
                return True
        return False

    def hub_sections(self, ns_id: str) -> tuple[list, list, list, list]:
        """(uplinks, [(bridge, ports)], lone vxlans, other interfaces) of a hub namespace."""
        ifaces = self.ifaces[ns_id]
        bridges = [(b, self.ports(b)) for b in ifaces if b["kind"] == "bridge"]
        in_bridge = {p["id"] for _, ports in bridges for p in ports}
        uplinks = [n for n in ifaces if n["kind"] == "uplink" and n["id"] not in in_bridge]
        vxlans = [n for n in ifaces if n["kind"] == "vxlan" and n["id"] not in in_bridge]
        other = [n for n in ifaces if n["kind"] not in ("uplink", "bridge", "vxlan", "loopback") and n["id"] not in in_bridge]
        return uplinks, bridges, vxlans, other


# --------------------------------------------------------------------------- terminal tree

_TREE_MARK = {"path": ("●", "bold cyan"), "blocked": ("✗", "bold red"), "unreached": ("○", "dim")}


def render_tree(snapshot: dict, trace: dict | None = None) -> Tree:
    """Host namespace at the root; its uplink, bridges with their ports and what is plugged in;
    then the namespaces that hang off no bridge."""
    g = graph(snapshot, trace=trace)
    v = _View(g)
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


def _tree_root_label(g: dict, v: _View) -> Text:
    host = v.by_id.get(g["host"] or "")
    text = Text.assemble((g["hostname"] or "host", "bold"), "  host namespace ", (g["host"] or "?", "dim"))
    if host:
        _mark(text, host)
    if g["captured_at"]:
        text.append(f"  {g['captured_at']}", style="dim")
    if g["trace"]:
        text.append("\n")
        text.append_text(_trace_summary(g["trace"]))
    return text


def _trace_summary(t: dict) -> Text:
    verdict = t["verdict"] or "trace"
    style = "bold red" if t["failed"] else "bold green"
    text = Text.assemble("trace: ", (verdict, style))
    if t["blocked_at"] is not None:
        text.append(f" at hop {t['blocked_at']}", style=style)
    if t["reason"]:
        text.append(f" ({t['reason']})")
    return text


def _tree_hub(parent: Tree, v: _View, ns_id: str) -> None:
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


def _iface_line(v: _View, n: dict, prefix: str = "") -> Text:
    text = Text(prefix, style="bold")
    _iface_text(text, n, bold=bool(prefix))
    if n["kind"] == "bridge" and n["name"] in v.g["networks"]:
        text.append(f"  network {v.g['networks'][n['name']]}", style="dim")
    if n["kind"] == "vxlan" or n.get("vxlan"):
        text.append("  " + _vxlan_text(n), style="magenta")
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
        text.append(" " + _hop_label(n), style=_TREE_MARK[n["trace"]][1])


def _hop_label(n: dict) -> str:
    """'● hop 2', '✗ hop 3 blocked', '○ hop 5' for a node the trace touched."""
    sign = _TREE_MARK[n["trace"]][0]
    label = f"{sign} hop {','.join(str(h) for h in n['hops'])}"
    return label + " blocked" if n["trace"] == "blocked" else label


def _ns_text(ns: dict) -> Text:
    text = Text.assemble((ns["label"], "bold cyan" if ns["ns_kind"] == "container" else "bold"),
                         (f" ({ns['ns_kind']})", "dim"))
    _mark(text, ns)
    return text


def _vxlan_text(n: dict) -> str:
    x = n.get("vxlan") or {}
    parts = [f"VNI {x.get('vni')}"]
    if x.get("group"):
        parts.append(f"remote {x['group']}")
    if x.get("local"):
        parts.append(f"local {x['local']}")
    if x.get("port"):
        parts.append(f"port {x['port']}")
    if x.get("dev"):
        parts.append(f"dev {x['dev']}")
    return " ".join(parts)


# --------------------------------------------------------------------------- DOT

_DOT_NODE_STYLE = {"uplink": {"style": "rounded,filled", "fillcolor": "#fde7c8"},
                   "bridge": {"style": "filled", "fillcolor": "#d8f0dc"},
                   "vxlan": {"style": "filled", "fillcolor": "#eadcf7"}}
_DOT_EDGE_STYLE = {"veth": {"penwidth": "1.5"}, "bridge": {"color": "#2e7d32"},
                   "master": {"color": "#2e7d32", "style": "dashed"},
                   "underlay": {"color": "#7b1fa2", "style": "dotted"}}
_DOT_DOWN = {"color": "#d1242f", "fontcolor": "#d1242f", "style": "dashed"}
_DOT_TRACE = {"path": {"color": "#1f6feb", "penwidth": "3"},
              "blocked": {"color": "#d1242f", "fontcolor": "#d1242f", "penwidth": "3"},
              "unreached": {"color": "#8c959f", "style": "dashed"}}


def render_dot(snapshot: dict, trace: dict | None = None) -> str:
    """Graphviz DOT: one cluster per namespace, interfaces inside, wires between."""
    g = graph(snapshot, trace=trace)
    v = _View(g)
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
        title += "\n" + _trace_summary(g["trace"]).plain
    return title


def _dot_cluster(i: int, ns: dict, v: _View) -> list[str]:
    name = v.g["hostname"] if ns["is_host"] and v.g["hostname"] else ns["label"]
    attrs = {"label": f"{name} ({ns['ns_kind']})" + _dot_hops(ns), "style": "rounded"}
    if ns["is_host"]:
        attrs.update(style="rounded,filled", fillcolor="#f6f8fa")
    attrs.update(_DOT_TRACE.get(ns["trace"], {}))
    lines = [f"  subgraph cluster_{i} {{", *(f"    {k}={_dq(val)};" for k, val in attrs.items())]
    for n in v.visible(ns["id"]):
        lines.append(f"    {_dq(n['id'])} [{_dot_attrs(_dot_node_attrs(n))}];")
    lines.append("  }")
    return lines


def _dot_node_attrs(n: dict) -> dict:
    label = "\n".join([n["name"] + (f" ({n['kind']})" if n["kind"] in ("uplink", "bridge", "vxlan") else ""),
                       *n["addresses"]])
    if n.get("vxlan"):
        label += "\n" + _vxlan_text(n)
    if n["status"]:
        label += "\n" + n["status"]
    label += _dot_hops(n)
    attrs = {"label": label, **_DOT_NODE_STYLE.get(n["kind"], {})}
    if n["status"]:
        attrs.update(color="#d1242f", fontcolor="#d1242f")
    attrs.update(_DOT_TRACE.get(n["trace"], {}))
    if n["trace"] == "unreached" and "filled" in attrs.get("style", ""):
        attrs["style"] += ",dashed"
    return attrs


def _dot_hops(n: dict) -> str:
    return "\n" + _hop_label(n) if n["trace"] else ""


def _dq(s: str) -> str:
    """A DOT double-quoted string; backslashes doubled so \\n, \\l... from users stay literal."""
    s = _clean(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _clean(s) -> str:
    """Text without control characters (XML forbids most of them even escaped)."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "\ufffd", str(s))


def _esc(s) -> str:
    return html.escape(_clean(s), quote=True)


# --------------------------------------------------------------------------- SVG layout

CHAR_W = 7.4         # a little more than DejaVu Sans Mono's 0.602 em, for safety
ROW_H = 20
HEAD_H = 40          # namespace box header: name line + detail line
SLIM_HEAD_H = 24     # header of a compact box: name line only
PAD = 10
PORT_INDENT = 22
BOX_GAP = 14
SLIM_GAP = 6
COL_GAP = 150
MARGIN = 20
TOP = 64             # title and trace summary
MAX_TEXT = 44        # characters before a label is cut (the full text stays in a <title>)
SLIM_AFTER = 8       # more boxes than this in the container column: draw them compact


class _Box:
    """A namespace drawn as a box: a header, then rows (node or None, segments, indent, css class).
    Compact boxes drop the detail line; a compact box with one row puts it on the header line."""

    def __init__(self, ns: dict, col: int, rows: list[tuple], *, title: list | None = None,
                 slim: bool = False, title_w: float = 0):
        self.ns, self.col, self.rows = ns, col, rows
        self.title = title or _box_title(ns)
        self.detail = [] if slim else _box_detail(ns)
        self.inline = slim and len(rows) == 1
        if self.inline:  # the one row sits on the title line, after a title column as wide as the widest
            node, segs, _, cls = rows[0]
            self.rows = [(node, segs, max(title_w, _seg_width(self.title)) + 12, cls)]
        self.head_h = 4 if self.inline else SLIM_HEAD_H if slim else HEAD_H
        self.x = self.y = 0.0
        hop = _seg_width([(_hop_label(ns), "")]) + PAD if ns["trace"] else 0
        self.w = max([(0 if self.inline else _seg_width(self.title)) + 2 * PAD + hop, _seg_width(self.detail) + 2 * PAD, 200]
                     + [_seg_width(segs) + indent + 2 * PAD for _, segs, indent, _ in self.rows])
        self.h = self.head_h + ROW_H * len(self.rows) + (4 if self.inline or not self.rows else PAD)

    def row_y(self, i: int) -> float:
        return self.y + self.head_h + ROW_H * i

    def anchor(self, node_id: str, side: str) -> tuple[float, float] | None:
        x = self.x + (self.w if side == "right" else 0)
        if node_id == self.ns["id"]:
            return (x, self.y + self.h / 2)
        for i, (node, *_rest) in enumerate(self.rows):
            if node and node["id"] == node_id:
                return (x, self.row_y(i) + ROW_H / 2)
        return None


def _seg_width(segs: list[tuple[str, str]]) -> float:
    return sum(len(t) for t, _ in segs) * CHAR_W + 6 * max(len(segs) - 1, 0)


def _short(s: str, limit: int = MAX_TEXT) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _box_title(ns: dict, hostname: str = "") -> list[tuple[str, str]]:
    if ns["is_host"]:
        return [(_short(hostname or ns["label"]), "t-ns"), ("host namespace", "t-kind")]
    kind = ns["ns_kind"]
    if ns["container"] and ns["container"]["image"]:
        kind += f" · {ns['container']['image']}"
    return [(_short(ns["label"]), "t-ns"), (_short(kind), "t-kind")]


def _box_detail(ns: dict) -> list[tuple[str, str]]:
    if ns.get("detail"):
        return [(_short(ns["detail"]), "t-dim")]
    c = ns["container"]
    if c:
        ports = ", ".join(f"{p.get('host_port')}→{p.get('ctr_port')}/{p.get('proto')}" for p in c["ports"])
        return [(_short(" · ".join(b for b in (c["id"][:12], ports) if b)), "t-dim")]
    return [(ns["id"], "t-dim")]


def _row_segments(v: _View, n: dict, far: bool) -> list[tuple[str, str]]:
    """One interface row: name, addresses, then what it is; `far` rows (containers) show the MAC."""
    segs = [(_short(n["name"]), "t-if")]
    segs += [(a, "t-ip") for a in n["addresses"]]
    if n["kind"] == "bridge":
        net = v.g["networks"].get(n["name"])
        segs.append(("bridge" + (f" · net {_short(net)}" if net else ""), "t-tag"))
    elif n["kind"] == "uplink":
        segs.append(("uplink", "t-tag"))
    if n.get("vxlan"):
        segs.append((_vxlan_text(n), "t-vx"))
    if far and n["mac"] and n["kind"] != "loopback":
        segs.append((n["mac"], "t-dim"))
    if n["peer_unknown"]:
        segs.append(("peer ?", "t-warn"))
    if n["status"]:
        segs.append((n["status"], "t-down"))
    if n["trace"]:
        segs.append((_hop_label(n), f"t-{n['trace']}"))
    return segs


def _hub_rows(v: _View, ns_id: str) -> list[tuple]:
    uplinks, bridges, vxlans, other = v.hub_sections(ns_id)
    rows = [(n, _row_segments(v, n, False), 0, "r-uplink") for n in uplinks]
    for bridge, ports in bridges:
        rows.append((bridge, _row_segments(v, bridge, False), 0, "r-bridge"))
        rows += [(p, _row_segments(v, p, False), PORT_INDENT, "r-port") for p in ports]
    rows += [(n, _row_segments(v, n, False), 0, "r-if") for n in vxlans + other]
    if not rows:
        rows = [(n, _row_segments(v, n, False), 0, "r-if") for n in v.visible(ns_id)]
    return rows


def _layout(v: _View) -> tuple[list[_Box], list[dict], float, float]:
    """Three columns: 0 the outside (uplink peers, the network beyond a physical uplink) and loose
    namespaces, 1 hubs (host first), 2 what hangs off the hubs' bridges and veths.
    Returns the boxes, extra edges (to the drawn 'network'), and the picture's size."""
    hubs = [ns for ns in v.namespaces if v.is_hub(ns)]
    boxes = [_Box(ns, 1, _hub_rows(v, ns["id"]), title=_box_title(ns, v.g["hostname"])) for ns in hubs]
    externals, extra = _external_boxes(boxes)
    attached = _attached_order(v, hubs)
    placed = {ns["id"] for ns in hubs + attached}
    rest = [ns for ns in v.namespaces if ns["id"] not in placed]
    far = attached + [ns for ns in rest if ns["ns_kind"] == "container"]
    near = sorted((ns for ns in rest if ns["ns_kind"] != "container"), key=lambda ns: not _peers_uplink(v, ns))
    slim = len(far) > SLIM_AFTER
    title_w = max((_seg_width(_box_title(ns)) for ns in far), default=0)
    for ns in far:
        rows = [(n, _row_segments(v, n, True), 0, "r-if") for n in v.visible(ns["id"])]
        boxes.append(_Box(ns, 2, rows, slim=slim, title_w=title_w))
    boxes += externals
    for ns in near:
        boxes.append(_Box(ns, 0, [(n, _row_segments(v, n, False), 0, "r-if") for n in v.visible(ns["id"])]))
    return (*_place(boxes, gap=SLIM_GAP if slim else BOX_GAP), extra)


def _external_boxes(hub_boxes: list[_Box]) -> tuple[list[_Box], list[dict]]:
    """A physical uplink leads to 'the network': a box for it in column 0, and a wire."""
    boxes, edges = [], []
    for hub in hub_boxes:
        for node, *_ in hub.rows:
            if node and node["kind"] == "uplink" and not node["peer"]:
                ns = {"id": f"external:{node['id']}", "label": "network", "ns_kind": "outside", "is_host": False,
                      "container": None, "trace": None, "hops": [], "detail": f"beyond {node['name']} ({node['link_kind']})"}
                boxes.append(_Box(ns, 0, []))
                edges.append({"kind": "external", "source": node["id"], "target": ns["id"],
                              "down": bool(node["status"]), "trace": None})
    return boxes, edges


def _peers_uplink(v: _View, ns: dict) -> bool:
    return any(v.by_id.get(n["peer"] or "", {}).get("kind") == "uplink" for n in v.ifaces[ns["id"]])


def _attached_order(v: _View, hubs: list[dict]) -> list[dict]:
    """Namespaces whose veth peers sit in a hub, in the order of the hub rows (fewer crossings)."""
    out, seen = [], set()
    for hub in hubs:
        for node, *_ in _hub_rows(v, hub["id"]):
            peer = v.by_id.get((node or {}).get("peer") or "")
            if not peer or node["kind"] == "uplink":
                continue
            ns = v.by_id[peer["parent"]]
            if ns["id"] not in seen and not v.is_hub(ns):
                seen.add(ns["id"])
                out.append(ns)
    return out


def _place(boxes: list[_Box], gap: float) -> tuple[list[_Box], float, float]:
    """Stack each column's boxes; hubs are centred against the tallest column so veth lines fan
    out evenly, and column 0 starts level with the hubs, where the uplink is."""
    cols = [[b for b in boxes if b.col == c] for c in range(3)]
    widths = [max((b.w for b in col), default=0) for col in cols]
    gaps = [BOX_GAP, BOX_GAP, gap]
    heights = [sum(b.h for b in col) + gaps[c] * max(len(col) - 1, 0) for c, col in enumerate(cols)]
    tallest = max(heights)
    hub_top = TOP + (tallest - heights[1]) / 2
    tops = [min(hub_top, TOP + tallest - heights[0]), hub_top, TOP + (tallest - heights[2]) / 2]
    x = MARGIN
    for c, col in enumerate(cols):
        if not col:
            continue
        y = tops[c]
        for b in col:
            b.x, b.y, b.w = x, y, widths[c]
            y += b.h + gaps[c]
        x += widths[c] + COL_GAP
    return boxes, x - COL_GAP + MARGIN, TOP + tallest + MARGIN + 28  # + the legend line


# --------------------------------------------------------------------------- SVG drawing

_SVG_STYLE = """
text { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 12px; fill: #1f2328; }
.title { font-size: 15px; font-weight: bold; }
.box { fill: #ffffff; stroke: #8c959f; stroke-width: 1.2; }
.box.host { fill: #f6f8fa; stroke: #57606a; stroke-width: 1.6; }
.box.container { fill: #f0f7ff; stroke: #54aeff; }
.box.netns, .box.pid { fill: #fffbf0; stroke: #d4a72c; }
.box.outside { fill: #ffffff; stroke: #57606a; stroke-dasharray: 5 3; }
.box.trace-path { stroke: #1f6feb; stroke-width: 2.5; }
.box.trace-blocked { stroke: #d1242f; stroke-width: 3; }
.head { fill: #eaeef2; }
.head.container { fill: #ddf4ff; }
.head.netns, .head.pid { fill: #fff1c2; }
.head.outside { fill: #ffffff; }
.r-bridge { fill: #dafbe1; }
.r-uplink { fill: #fff1e5; }
.r-path { fill: #ddf4ff; stroke: #1f6feb; stroke-width: 1.5; }
.r-blocked { fill: #ffebe9; stroke: #d1242f; stroke-width: 2; }
.r-unreached { fill: none; stroke: #8c959f; stroke-dasharray: 3 3; }
.t-ns { font-weight: bold; font-size: 13px; }
.t-kind, .t-dim { fill: #656d76; font-size: 11px; }
.t-if { font-weight: bold; }
.t-ip { fill: #1a7f37; }
.t-tag { fill: #8250df; font-size: 11px; }
.t-vx { fill: #8250df; }
.t-warn { fill: #9a6700; font-weight: bold; }
.t-down, .t-blocked { fill: #d1242f; font-weight: bold; }
.t-path { fill: #0969da; font-weight: bold; }
.t-unreached { fill: #656d76; }
.edge { fill: none; stroke: #57606a; stroke-width: 1.6; }
.edge.bridge, .edge.master { stroke: #1a7f37; stroke-width: 1.6; }
.edge.underlay { stroke: #8250df; stroke-dasharray: 2 3; }
.edge.external { stroke: #57606a; stroke-dasharray: 8 4; }
.edge.down { stroke: #d1242f; stroke-dasharray: 6 4; }
.edge.trace-path { stroke: #1f6feb; stroke-width: 3.5; }
.edge.trace-unreached { stroke: #8c959f; stroke-dasharray: 4 4; }
"""


def render_svg(snapshot: dict, trace: dict | None = None) -> str:
    """A self-made layered drawing: outside | host and other bridge holders | containers."""
    g = graph(snapshot, trace=trace)
    boxes, width, height, extra = _layout(_View(g))
    title = _svg_title(g)
    summary = _short(_trace_summary(g["trace"]).plain, 150) if g["trace"] else ""
    width = max(width, _seg_width([(title, "")]) * 1.25 + 2 * MARGIN, _seg_width([(summary, "")]) + 2 * MARGIN)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
             f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" class="netdiag-topo">',
             f"<title>{_esc(title)}</title>",
             f"<style>{_SVG_STYLE}</style>",
             f'<rect x="0" y="0" width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>',
             f'<text x="{MARGIN}" y="26" class="title">{_esc(title)}</text>']
    if g["trace"]:
        t = g["trace"]
        cls = "t-blocked" if t["failed"] else "t-path"
        summary = _trace_summary(t).plain
        parts.append(f'<text x="{MARGIN}" y="46" class="{cls}" data-verdict="{_esc(t["verdict"])}">'
                     f"<title>{_esc(summary)}</title>{_esc(_short(summary, 150))}</text>")
    for b in boxes:
        parts += _svg_box(b)
    parts += _svg_edges(g["edges"] + extra, boxes)
    parts += _svg_legend(height, bool(g["trace"]))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _svg_title(g: dict) -> str:
    return " · ".join(x for x in ("netdiag topology", g["hostname"], g["captured_at"]) if x)


def _n(x: float) -> str:
    """Numbers as short, stable text."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _svg_text(x: float, y: float, segs: list[tuple[str, str]]) -> str:
    spans = "".join(f'<tspan{" dx=" + chr(34) + "6" + chr(34) if i else ""} class="{cls}">{_esc(t)}</tspan>'
                    for i, (t, cls) in enumerate(segs))
    return f'<text x="{_n(x)}" y="{_n(y)}">{spans}</text>'


def _svg_box(b: _Box) -> list[str]:
    ns = b.ns
    kind = "host" if ns["is_host"] else ns["ns_kind"]
    trace_cls = f" trace-{ns['trace']}" if ns["trace"] else ""
    hop = f' data-hop="{_esc(",".join(map(str, ns["hops"])))}"' if ns["trace"] else ""
    out = [f'<g class="ns {_esc(kind)}{trace_cls}" data-ns="{_esc(ns["id"])}"{hop}>',
           f"<title>{_esc(ns['label'])} ({_esc(ns['ns_kind'])}) {_esc(ns['id'])}</title>",
           f'<rect class="box {_esc(kind)}{trace_cls}" x="{_n(b.x)}" y="{_n(b.y)}" width="{_n(b.w)}" '
           f'height="{_n(b.h)}" rx="6"/>']
    if b.inline:
        out.append(_svg_text(b.x + PAD, b.row_y(0) + 14, b.title))
    else:
        out.append(f'<rect class="head {_esc(kind)}" x="{_n(b.x + 1)}" y="{_n(b.y + 1)}" width="{_n(b.w - 2)}" '
                   f'height="{_n(b.head_h - 4)}" rx="5"/>')
        out.append(_svg_text(b.x + PAD, b.y + 17, b.title))
    if b.detail:
        out.append(_svg_text(b.x + PAD, b.y + 31, b.detail))
    if ns["trace"]:
        out.append(f'<text x="{_n(b.x + b.w - PAD)}" y="{_n(b.y + 17)}" text-anchor="end" class="t-{ns["trace"]}">'
                   f"{_esc(_hop_label(ns))}</text>")
    for i, row in enumerate(b.rows):
        out += _svg_row(b, i, *row)
    out.append("</g>")
    return out


def _svg_row(b: _Box, i: int, node: dict | None, segs: list, indent: int, cls: str) -> list[str]:
    y = b.row_y(i)
    trace = node["trace"] if node else None
    attrs = f' data-node="{_esc(node["id"])}"' if node else ""
    if trace:
        attrs += f' data-hop="{_esc(",".join(map(str, node["hops"])))}" data-trace="{trace}"'
    row_cls = "row" + (f" hop hop-{trace}" if trace else "") + (" down" if node and node["status"] else "")
    out = [f'<g class="{row_cls}"{attrs}>']
    if node:
        out.append(f"<title>{_esc(_row_title(node))}</title>")
    if cls in ("r-bridge", "r-uplink"):
        out.append(f'<rect class="{cls}" x="{_n(b.x + 4)}" y="{_n(y + 1)}" width="{_n(b.w - 8)}" height="{ROW_H - 2}" rx="3"/>')
    if trace:
        out.append(f'<rect class="r-{trace}" x="{_n(b.x + 4 + indent)}" y="{_n(y + 1)}" '
                   f'width="{_n(b.w - 8 - indent)}" height="{ROW_H - 2}" rx="3"/>')
    out.append(_svg_text(b.x + PAD + indent, y + 14, segs))
    out.append("</g>")
    return out


def _row_title(n: dict) -> str:
    bits = [n["name"], n["link_kind"], *n["addresses"], n["mac"], f"mtu {n['mtu']}" if n["mtu"] else "",
            n["status"] or "", _vxlan_text(n) if n.get("vxlan") else ""]
    return " ".join(b for b in bits if b)


def _svg_edges(edges: list[dict], boxes: list[_Box]) -> list[str]:
    box_of = {node["id"]: b for b in boxes for node, *_ in b.rows if node}
    box_of.update({b.ns["id"]: b for b in boxes if b.ns["id"].startswith("external:")})
    out = ['<g class="edges">']
    for e in edges:
        a, b = box_of.get(e["source"]), box_of.get(e["target"])
        if not a or not b:
            continue
        d = _member_path(a, e) if e["kind"] in ("bridge", "master", "underlay") else _wire_path(a, b, e)
        cls = " ".join(["edge", e["kind"]] + (["down"] if e["down"] else []) + ([f"trace-{e['trace']}"] if e["trace"] else []))
        out.append(f'<path class="{cls}" d="{d}" data-source="{_esc(e["source"])}" data-target="{_esc(e["target"])}"/>')
    out.append("</g>")
    return out


def _member_path(box: _Box, e: dict) -> str:
    """Port -> bridge (or vxlan -> dev) inside one box: a bracket on the left, like a bus."""
    ys = [box.anchor(e["source"], "left")[1], box.anchor(e["target"], "left")[1]]
    if e["kind"] == "underlay":
        x = box.x + 5
        return f"M {_n(x + 4)} {_n(ys[0])} H {_n(x)} V {_n(ys[1])} H {_n(x + 4)}"
    x = box.x + PAD + 6
    return f"M {_n(x)} {_n(ys[1] + 6)} V {_n(ys[0])} H {_n(box.x + PAD + PORT_INDENT - 3)}"


def _wire_path(a: _Box, b: _Box, e: dict) -> str:
    """A wire between two boxes (a veth pair): a smooth S-curve between the facing sides, or a
    loop out to the right when both sit in the same column."""
    if a.col == b.col:
        (x1, y1), (x2, y2) = a.anchor(e["source"], "right"), b.anchor(e["target"], "right")
        bulge = max(x1, x2) + 40
        return f"M {_n(x1)} {_n(y1)} C {_n(bulge)} {_n(y1)} {_n(bulge)} {_n(y2)} {_n(x2)} {_n(y2)}"
    left, right = (a, b) if a.col < b.col else (b, a)
    lid, rid = (e["source"], e["target"]) if left is a else (e["target"], e["source"])
    (x1, y1), (x2, y2) = left.anchor(lid, "right"), right.anchor(rid, "left")
    mid = (x1 + x2) / 2
    return f"M {_n(x1)} {_n(y1)} C {_n(mid)} {_n(y1)} {_n(mid)} {_n(y2)} {_n(x2)} {_n(y2)}"


def _svg_legend(height: float, trace: bool) -> list[str]:
    y = height - MARGIN - 4
    items = [("edge veth", "veth pair"), ("edge bridge", "bridge port"), ("edge underlay", "vxlan underlay"),
             ("edge down", "down")]
    if trace:
        items += [("edge trace-path", "trace path"), ("edge trace-unreached", "not reached")]
    out, x = ['<g class="legend">'], MARGIN
    for cls, label in items:
        out.append(f'<path class="{cls}" d="M {_n(x)} {_n(y - 4)} H {_n(x + 28)}"/>')
        out.append(f'<text x="{_n(x + 34)}" y="{_n(y)}" class="t-dim">{label}</text>')
        x += 34 + len(label) * CHAR_W + 24
    out.append("</g>")
    return out


# --------------------------------------------------------------------------- HTML

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
    title = _svg_title(g)
    body = [f"<h1>{_esc(title)}</h1>"]
    if g["trace"]:
        cls = ' class="blocked"' if g["trace"]["failed"] else ""
        body.append(f"<p{cls}>{_esc(_trace_summary(g['trace']).plain)}</p>")
    body.append(f'<div class="diagram">\n{render_svg(snapshot, trace)}</div>')
    body.append(_html_table("Containers", ["name", "runtime", "image", "network", "address", "MAC", "host veth", "ports"],
                            _container_rows(snapshot)))
    body.append(_html_table("Networks", ["name", "runtime", "driver", "subnet", "gateway", "bridge", "endpoints"],
                            _network_rows(snapshot)))
    if snapshot.get("errors"):
        body.append(_html_table("Observation errors", ["namespace", "what", "error"],
                                [[e.get("ns", ""), e.get("what", ""), e.get("error", "")] for e in snapshot["errors"]]))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _container_rows(snapshot: dict) -> list[list[str]]:
    rows = []
    for c in sorted(snapshot.get("containers") or [], key=lambda c: (c.get("name", ""), c.get("id", ""))):
        ports = ", ".join(f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}→{p.get('ctr_port')}/{p.get('proto')}"
                          for p in c.get("ports") or [])
        nets = sorted((c.get("networks") or {}).items()) or [("", {})]
        for net, e in nets:
            addr = f"{e['ip']}/{e.get('prefix')}" if e.get("ip") else ""
            rows.append([c.get("name", ""), c.get("runtime", ""), c.get("image", ""), net, addr,
                         e.get("mac", ""), e.get("host_veth", ""), ports])
    return rows


def _network_rows(snapshot: dict) -> list[list[str]]:
    rows = []
    for n in sorted(snapshot.get("networks") or [], key=lambda n: (n.get("name", ""), n.get("id", ""))):
        members = ", ".join(sorted(e.get("name", "") for e in (n.get("endpoints") or {}).values()))
        rows.append([n.get("name", ""), n.get("runtime", ""), n.get("driver", ""), n.get("subnet", ""),
                     n.get("gateway", ""), n.get("bridge", ""), members])
    return rows


def _html_table(caption: str, headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">none</td></tr>'
    return f"<h2>{_esc(caption)}</h2>\n<table>\n<tr>{head}</tr>\n{body}\n</table>"


# --------------------------------------------------------------------------- files

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
