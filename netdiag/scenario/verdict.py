"""Pure: did netdiag name the planted cause? Reads the JSON of `trace`, `health`, `explain` or `pull` and
grades only what each diagnosis in it says at its top level: its `cause`, and the hop where it
says the packet died (`blocked_at` of a trace, `hop` of a health check).

Which objects are diagnoses is fixed by the command, never found by searching: a trace or a
health check is one; `explain CONTAINER` holds one (its re-run check, `health`); `explain --lb`
holds one per server (`health` for a DOWN server's re-run check, `traffic` for an UP server's
failing traffic port). A cause quoted anywhere else (a fix check's `after`, an evidence entry, a
health check's embedded trace) is not a diagnosis and is never graded. A delivered trace or a
healthy check names no cause, whatever its `cause` field holds (diagnose() keeps it null)."""
from __future__ import annotations


def diagnoses(result) -> list[dict]:
    """The diagnosis objects of a command's JSON, outermost first (see the module's docstring)."""
    if not isinstance(result, dict):
        return []
    if isinstance(result.get("servers"), list):  # explain --lb
        return [s[k] for s in result["servers"] if isinstance(s, dict) for k in ("health", "traffic") if isinstance(s.get(k), dict)]
    if result.get("kind") == "container":  # explain CONTAINER
        return [result["health"]] if isinstance(result.get("health"), dict) else []
    return [result]


def named(diagnosis: dict) -> dict | None:
    """{cause, label, interface, kind} of the cause one diagnosis names at its top level, or None."""
    cause = diagnosis.get("cause")
    if not isinstance(cause, str) or not cause:
        return None
    if "verdict" in diagnosis:
        failed = diagnosis.get("verdict") != "delivered"
    else:  # a health check, or a pull (`pull --json`: its cause is the diagnosis of the failed pull)
        failed = diagnosis.get("healthy") is False or diagnosis.get("pulled") is False
    if not failed:
        return None
    hop = diagnosis.get("hop") if isinstance(diagnosis.get("hop"), dict) else _blocked_hop(diagnosis)
    return {"cause": cause, "label": (hop or {}).get("label") or "", "interface": (hop or {}).get("interface") or "",
            "kind": (hop or {}).get("kind") or ""}


def causes(result) -> list[dict]:
    """Every {cause, label, interface, kind} the diagnoses of a result name, outermost first."""
    return [c for c in map(named, diagnoses(result)) if c is not None]


def _blocked_hop(result: dict) -> dict | None:
    at = result.get("blocked_at")
    return next((h for h in result.get("hops") or [] if isinstance(h, dict) and h.get("n") == at), None) if at else None


def matches(result, expected: dict) -> tuple[bool, list[dict]]:
    """Whether a diagnosis of the result names expected["cause"] at the hop expected["at"]
    describes (a label prefix, an interface, a hop kind), and every cause the diagnoses name."""
    at = expected.get("at") or {}
    found = causes(result)

    def fits(c: dict) -> bool:
        return (c["cause"] == expected["cause"] and c["label"].startswith(at.get("label", ""))
                and (not at.get("interface") or c["interface"] == at["interface"]) and (not at.get("kind") or c["kind"] == at["kind"]))

    return any(fits(c) for c in found), found
