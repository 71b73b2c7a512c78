"""Which driver module handles a network record: `bridge` or `overlay` (the same create/delete,
attach/detach shape; CNI's plugin dispatch)."""
from __future__ import annotations

from ..errors import NetdiagError


def of(net: dict):
    if net["Driver"] == "overlay":
        from . import overlay

        return overlay
    if net["Driver"] == "bridge":
        from . import bridge

        return bridge
    raise NetdiagError(f"Network {net['Name']} has no endpoints to manage", f"it is a {net['Driver']} network", "")
