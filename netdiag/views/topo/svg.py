"""The map as a self-made SVG (no Graphviz needed): layout, then drawing."""
from __future__ import annotations

from .graph import View, graph
from .labels import MARK_HELP, esc, hop_label, network_text, ns_kind_text, trace_summary, vxlan_text

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
LEGEND_H = 48        # two legend lines under the picture: wires (and the trace), then boxes and marks
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
        hop = _seg_width([(hop_label(ns), "")]) + PAD if ns["trace"] else 0
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
    kind = ns_kind_text(ns)
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


def _row_segments(v: View, n: dict, far: bool) -> list[tuple[str, str]]:
    """One interface row: name, addresses, then what it is; `far` rows (containers) show the MAC."""
    segs = [(_short(n["name"]), "t-if")]
    segs += [(a, "t-ip") for a in n["addresses"]]
    if n["kind"] == "bridge":
        net = n.get("network")
        segs.append(("bridge" + (f" · {_short(network_text(net))}" if net else ""), "t-tag"))
        segs += [(f"⊘ {mark}", "t-iso") for mark in (net or {}).get("marks", [])]
    elif n["kind"] == "uplink":
        segs.append(("uplink", "t-tag"))
    if n.get("vxlan"):
        segs.append((vxlan_text(n), "t-vx"))
    if far and n["mac"] and n["kind"] != "loopback":
        segs.append((n["mac"], "t-dim"))
    if n["peer_unknown"]:
        segs.append(("peer ?", "t-warn"))
    if n["status"]:
        segs.append((n["status"], "t-down"))
    if n["trace"]:
        segs.append((hop_label(n), f"t-{n['trace']}"))
    return segs


def _hub_rows(v: View, ns_id: str) -> list[tuple]:
    uplinks, bridges, vxlans, other = v.hub_sections(ns_id)
    rows = [(n, _row_segments(v, n, False), 0, "r-uplink") for n in uplinks]
    for bridge, ports in bridges:
        isolated = bool((bridge.get("network") or {}).get("marks"))
        rows.append((bridge, _row_segments(v, bridge, False), 0, "r-bridge r-isolated" if isolated else "r-bridge"))
        rows += [(p, _row_segments(v, p, False), PORT_INDENT, "r-port") for p in ports]
    rows += [(n, _row_segments(v, n, False), 0, "r-if") for n in vxlans + other]
    if not rows:
        rows = [(n, _row_segments(v, n, False), 0, "r-if") for n in v.visible(ns_id)]
    return rows


def _layout(v: View) -> tuple[list[_Box], list[dict], float, float]:
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


def _peers_uplink(v: View, ns: dict) -> bool:
    return any(v.by_id.get(n["peer"] or "", {}).get("kind") == "uplink" for n in v.ifaces[ns["id"]])


def _attached_order(v: View, hubs: list[dict]) -> list[dict]:
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
    return boxes, x - COL_GAP + MARGIN, TOP + tallest + MARGIN + LEGEND_H


# --------------------------------------------------------------------------- SVG drawing

_SVG_STYLE = """
text { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 12px; fill: #1f2328; }
.title { font-size: 15px; font-weight: bold; }
.box { fill: #ffffff; stroke: #8c959f; stroke-width: 1.2; }
.box.host { fill: #f6f8fa; stroke: #57606a; stroke-width: 1.6; }
.box.container { fill: #f0f7ff; stroke: #54aeff; }
.box.container.engine-docker { fill: #e3f6f3; stroke: #0a7d6e; stroke-width: 2.2; }
.box.netns, .box.pid { fill: #fffbf0; stroke: #d4a72c; }
.box.outside { fill: #ffffff; stroke: #57606a; stroke-dasharray: 5 3; }
.box.trace-path { stroke: #1f6feb; stroke-width: 2.5; }
.box.trace-blocked { stroke: #d1242f; stroke-width: 3; }
.head { fill: #eaeef2; }
.head.container { fill: #ddf4ff; }
.head.container.engine-docker { fill: #c4ece5; }
.head.netns, .head.pid { fill: #fff1c2; }
.head.outside { fill: #ffffff; }
.r-bridge { fill: #dafbe1; }
.r-uplink { fill: #fff1e5; }
.r-bridge.r-isolated { fill: #fff8c5; stroke: #bf8700; stroke-width: 1.5; stroke-dasharray: 6 3; }
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
.t-iso { fill: #9a6700; font-weight: bold; font-size: 11px; }
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
    boxes, width, height, extra = _layout(View(g))
    title = svg_title(g)
    summary = _short(trace_summary(g["trace"]).plain, 150) if g["trace"] else ""
    legend = _legend_rows(g, boxes)
    width = max(width, _seg_width([(title, "")]) * 1.25 + 2 * MARGIN, _seg_width([(summary, "")]) + 2 * MARGIN,
                _legend_width(legend) + MARGIN)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
             f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" class="netdiag-topo">',
             f"<title>{esc(title)}</title>",
             f"<style>{_SVG_STYLE}</style>",
             f'<rect x="0" y="0" width="{_n(width)}" height="{_n(height)}" fill="#ffffff"/>',
             f'<text x="{MARGIN}" y="26" class="title">{esc(title)}</text>']
    if g["trace"]:
        t = g["trace"]
        cls = "t-blocked" if t["failed"] else "t-path"
        summary = trace_summary(t).plain
        parts.append(f'<text x="{MARGIN}" y="46" class="{cls}" data-verdict="{esc(t["verdict"])}">'
                     f"<title>{esc(summary)}</title>{esc(_short(summary, 150))}</text>")
    for b in boxes:
        parts += _svg_box(b)
    parts += _svg_edges(g["edges"] + extra, boxes)
    parts += _svg_legend(height, legend)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def svg_title(g: dict) -> str:
    return " · ".join(x for x in ("netdiag topology", g["hostname"], g["captured_at"]) if x)


def _n(x: float) -> str:
    """Numbers as short, stable text."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _svg_text(x: float, y: float, segs: list[tuple[str, str]]) -> str:
    spans = "".join(f'<tspan{" dx=" + chr(34) + "6" + chr(34) if i else ""} class="{cls}">{esc(t)}</tspan>'
                    for i, (t, cls) in enumerate(segs))
    return f'<text x="{_n(x)}" y="{_n(y)}">{spans}</text>'


def _svg_box(b: _Box) -> list[str]:
    ns = b.ns
    kind = _box_class(ns)
    trace_cls = f" trace-{ns['trace']}" if ns["trace"] else ""
    hop = f' data-hop="{esc(",".join(map(str, ns["hops"])))}"' if ns["trace"] else ""
    out = [f'<g class="ns {esc(kind)}{trace_cls}" data-ns="{esc(ns["id"])}"{hop}>',
           f"<title>{esc(ns['label'])} ({esc(ns_kind_text(ns))}) {esc(ns['id'])}</title>",
           f'<rect class="box {esc(kind)}{trace_cls}" x="{_n(b.x)}" y="{_n(b.y)}" width="{_n(b.w)}" '
           f'height="{_n(b.h)}" rx="6"/>']
    if b.inline:
        out.append(_svg_text(b.x + PAD, b.row_y(0) + 14, b.title))
    else:
        out.append(f'<rect class="head {esc(kind)}" x="{_n(b.x + 1)}" y="{_n(b.y + 1)}" width="{_n(b.w - 2)}" '
                   f'height="{_n(b.head_h - 4)}" rx="5"/>')
        out.append(_svg_text(b.x + PAD, b.y + 17, b.title))
    if b.detail:
        out.append(_svg_text(b.x + PAD, b.y + 31, b.detail))
    if ns["trace"]:
        out.append(f'<text x="{_n(b.x + b.w - PAD)}" y="{_n(b.y + 17)}" text-anchor="end" class="t-{ns["trace"]}">'
                   f"{esc(hop_label(ns))}</text>")
    for i, row in enumerate(b.rows):
        out += _svg_row(b, i, *row)
    out.append("</g>")
    return out


def _svg_row(b: _Box, i: int, node: dict | None, segs: list, indent: int, cls: str) -> list[str]:
    y = b.row_y(i)
    trace = node["trace"] if node else None
    attrs = f' data-node="{esc(node["id"])}"' if node else ""
    if trace:
        attrs += f' data-hop="{esc(",".join(map(str, node["hops"])))}" data-trace="{trace}"'
    row_cls = "row" + (f" hop hop-{trace}" if trace else "") + (" down" if node and node["status"] else "")
    out = [f'<g class="{row_cls}"{attrs}>']
    if node:
        out.append(f"<title>{esc(_row_title(node))}</title>")
    if cls.split()[0] in ("r-bridge", "r-uplink"):
        out.append(f'<rect class="{cls}" x="{_n(b.x + 4)}" y="{_n(y + 1)}" width="{_n(b.w - 8)}" height="{ROW_H - 2}" rx="3"/>')
    if trace:
        out.append(f'<rect class="r-{trace}" x="{_n(b.x + 4 + indent)}" y="{_n(y + 1)}" '
                   f'width="{_n(b.w - 8 - indent)}" height="{ROW_H - 2}" rx="3"/>')
    out.append(_svg_text(b.x + PAD + indent, y + 14, segs))
    out.append("</g>")
    return out


def _row_title(n: dict) -> str:
    net = n.get("network")
    bits = [n["name"], n["link_kind"], *n["addresses"], n["mac"], f"mtu {n['mtu']}" if n["mtu"] else "",
            n["status"] or "", vxlan_text(n) if n.get("vxlan") else "", network_text(net) if net else "",
            *(f"{m}: {MARK_HELP[m]}" for m in (net or {}).get("marks", []))]
    return " ".join(b for b in bits if b)


def _box_class(ns: dict) -> str:
    """host, netns, pid (plain namespaces), or "container engine-docker" / "container engine-netdiag"."""
    if ns["is_host"]:
        return "host"
    if ns["ns_kind"] == "container":
        return f"container engine-{ns.get('engine') or 'other'}"
    return ns["ns_kind"]


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
        out.append(f'<path class="{cls}" d="{d}" data-source="{esc(e["source"])}" data-target="{esc(e["target"])}"/>')
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


def _legend_rows(g: dict, boxes: list[_Box]) -> list[list[tuple[str, str, str]]]:
    """(shape, css class, words) per legend line: the wires (and the trace's marks), then the kinds
    of box drawn (which engine runs a container; plain namespaces) and the isolation marks."""
    wires = [("line", "edge veth", "veth pair"), ("line", "edge bridge", "bridge port"),
             ("line", "edge underlay", "vxlan underlay"), ("line", "edge down", "down")]
    if g["trace"]:
        wires += [("box", "r-path", "passed"), ("box", "r-blocked", "failed"), ("box", "r-unreached", "not reached")]
    drawn = {_box_class(b.ns) for b in boxes}
    kinds = [("box", f"box {cls}", words) for cls, words in (
        ("container engine-netdiag", "netdiag container"), ("container engine-docker", "Docker container"),
        ("netns", "plain namespace"), ("pid", "namespace of a process")) if cls in drawn]
    marks = {m for n in g["nodes"] for m in (n.get("network") or {}).get("marks", [])}
    kinds += [("box", "r-bridge r-isolated", f"⊘ {m}: {MARK_HELP[m]}") for m in ("icc=false", "internal") if m in marks]
    return [row for row in (wires, kinds) if row]


def _legend_width(rows: list[list[tuple[str, str, str]]]) -> float:
    return max((sum(34 + len(words) * CHAR_W + 24 for *_, words in row) for row in rows), default=0)


def _svg_legend(height: float, rows: list[list[tuple[str, str, str]]]) -> list[str]:
    out = ['<g class="legend">']
    y = height - MARGIN - 4 - 20 * (len(rows) - 1)
    for row in rows:
        x = MARGIN
        for shape, cls, words in row:
            if shape == "line":
                out.append(f'<path class="{cls}" d="M {_n(x)} {_n(y - 4)} H {_n(x + 28)}"/>')
            else:
                out.append(f'<rect class="{cls}" x="{_n(x)}" y="{_n(y - 11)}" width="28" height="13" rx="3"/>')
            out.append(f'<text x="{_n(x + 34)}" y="{_n(y)}" class="t-dim">{esc(words)}</text>')
            x += 34 + len(words) * CHAR_W + 24
        y += 20
    out.append("</g>")
    return out
