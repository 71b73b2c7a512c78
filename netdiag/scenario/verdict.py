"""Pure: did netdiag name the planted cause? Reads the JSON of `trace`, `health` or `explain`
(one diagnosis, or a load balancer's servers, each with its own) and lists every cause it names
with the hop where it names it."""
from __future__ import annotations


def causes(result) -> list[dict]:
    """Every {cause, label, interface} a diagnosis result names, outermost first."""
    found: list[dict] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("cause"), str):
                hop = node.get("hop") if isinstance(node.get("hop"), dict) else _blocked_hop(node)
                found.append({"cause": node["cause"], "label": (hop or {}).get("label", ""),
                              "interface": (hop or {}).get("interface", ""), "kind": (hop or {}).get("kind", "")})
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(result)
    return found


def _blocked_hop(result: dict) -> dict | None:
    at = result.get("blocked_at")
    return next((h for h in result.get("hops") or [] if isinstance(h, dict) and h.get("n") == at), None) if at else None


def matches(result, expected: dict) -> tuple[bool, list[dict]]:
    """Whether the result names expected["cause"] at the hop expected["at"] describes (a label
    prefix, an interface, a hop kind), and every cause it names."""
    at = expected.get("at") or {}
    named = causes(result)

    def fits(c: dict) -> bool:
        return (c["cause"] == expected["cause"] and c["label"].startswith(at.get("label", ""))
                and (not at.get("interface") or c["interface"] == at["interface"]) and (not at.get("kind") or c["kind"] == at["kind"]))

    return any(fits(c) for c in named), named
