"""Text the renderers share: hop marks, VXLAN details, the trace's one-line summary, and escaping
for the XML formats (SVG, HTML) and DOT."""
from __future__ import annotations

import html
import re

from rich.text import Text

TRACE_MARK = {"path": ("●", "bold cyan"), "blocked": ("✗", "bold red"), "unreached": ("○", "dim")}


def trace_summary(t: dict) -> Text:
    verdict = t["verdict"] or "trace"
    style = "bold red" if t["failed"] else "bold green"
    text = Text.assemble("trace: ", (verdict, style))
    if t["blocked_at"] is not None:
        text.append(f" at hop {t['blocked_at']}", style=style)
    if t["reason"]:
        text.append(f" ({t['reason']})")
    return text


def hop_label(n: dict) -> str:
    """'● hop 2 passed', '● hop 1 seen', '✗ hop 3 failed', '○ hop 5 not reached' for a node the
    trace touched; one node passed and then failed at says both: '● hop 3 passed ✗ hop 4 failed'."""
    return " ".join(f"{TRACE_MARK[m['state']][0]} hop {','.join(str(h) for h in m['hops'])} {m['word']}"
                    for m in n["trace_marks"])


ENGINE_NAMES = {"netdiag": "netdiag", "docker": "Docker", "podman": "Podman", "cni": "CNI"}
# what an isolation mark means, said once where there is room (tree, DOT, the SVG's tooltip)
MARK_HELP = {"icc=false": "its containers cannot reach each other", "internal": "no traffic in or out of it"}


def engine_name(engine: str) -> str:
    return ENGINE_NAMES.get(engine, engine)


def ns_kind_text(ns: dict) -> str:
    """'netdiag container', 'Docker container', 'CNI pod' (another runtime's, wired by the CNI
    plugins), or the namespace's kind (host, netns, pid)."""
    if ns["ns_kind"] == "container":
        members = (ns.get("container") or {}).get("members")
        if members is not None:  # a Podman pod: its infra container's namespace, shared by its members
            return f"{engine_name(ns.get('engine', ''))} pod: {', '.join(members) or 'no other container'}"
        what = "pod" if ns.get("engine") == "cni" else "container"
        return " ".join(x for x in (engine_name(ns.get("engine", "")), what) if x)
    return ns["ns_kind"]


def network_text(net: dict) -> str:
    """'Docker network bridge', 'netdiag network back': who owns the bridge and its network's name."""
    return " ".join(x for x in (engine_name(net["engine"]), "network", net["name"]) if x)


def mark_text(mark: str) -> str:
    return f"{mark}: {MARK_HELP[mark]}"


def vxlan_text(n: dict) -> str:
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


def clean(s) -> str:
    """Text without control characters (XML forbids most of them even escaped)."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "\ufffd", str(s))


def esc(s) -> str:
    return html.escape(clean(s), quote=True)
