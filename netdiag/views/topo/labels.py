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
    """'● hop 2', '✗ hop 3 blocked', '○ hop 5' for a node the trace touched."""
    sign = TRACE_MARK[n["trace"]][0]
    label = f"{sign} hop {','.join(str(h) for h in n['hops'])}"
    return label + " blocked" if n["trace"] == "blocked" else label


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
