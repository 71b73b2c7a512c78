"""The `quiet` kind: nothing fails for a window (a CI job's "nothing is timing out").

A `netdiag watch` session (netdiag.watch.session, the same events, grouping and background
diagnoses as the command) runs on the watched namespaces for `for` seconds. Every failing flow
it sees fails the check and is listed with the session's own diagnosis of it (cause, hop, checked
fix); a flow that failed and then recovered within the window still fails it (it did time out or
get refused), marked recovered. Drops (placed in the watched namespaces where watch can, else
host-wide counts) are evidence, failing the check only for the reasons the check names.

The session's objects are watch's JSON lines (netdiag/schemas/watch.schema.json), collected
instead of printed; verdict() turns them into the check's result and is pure.
"""
from __future__ import annotations

import threading

from ..watch.flows import KINDS
from ..watch.view import JsonView, diagnosis_text as watch_line  # watch's one line for a diagnosis

MAX_LISTED = 20  # flows named in the summary's evidence; the JSON's `flows` has all of them


class Collected(JsonView):
    """The session's view: keeps its objects. When `cancel` is set (a served check file stopping),
    the next tick ends the window as Ctrl-C ends a watch (the session cleans up the same way)."""

    def __init__(self, cancel: threading.Event | None = None):
        super().__init__()
        self.objects: list[dict] = []
        self.cancel, self.cancelled = cancel, False

    def emit(self, obj: dict) -> None:
        self.objects.append(obj)

    event = drops = diagnosis = end = emit  # JsonView binds its own emit to these names

    def tick(self, flows) -> None:
        if self.cancel is not None and self.cancel.is_set() and not self.cancelled:
            self.cancelled = True  # once: the session ticks again while it cleans up
            raise KeyboardInterrupt


def quiet(p: dict, model, *, live: bool, cancel: threading.Event | None = None) -> dict:
    from ..watch.events import check_reasons
    from ..watch.scope import Scope
    from ..watch.session import Session

    def not_run(why: str) -> dict:
        return {"status": "error", "summary": why, "expected": f"no failing flow for {p['for']:g}s", "observed": "not watched"}

    scope = Scope(model, namespaces=p["namespaces"], containers=p["containers"], networks=p["networks"])
    view = Collected(cancel)
    try:
        if p["reasons"]:
            try:
                check_reasons(p["reasons"])
            except ValueError as e:  # a drop reason this kernel does not know
                return not_run(f"could not run: {e}")
        Session(scope, view, reasons=p["reasons"]).run(p["for"])
    except OSError as e:
        return not_run(f"could not watch the kernel's events: {e.strerror or e} (watch needs root and tracefs)")
    end = view.objects[-1] if view.objects and view.objects[-1].get("type") == "end" else {}
    if end.get("interrupted") and not view.cancelled:
        raise KeyboardInterrupt  # Ctrl-C reached the session (a check run in the main thread): stop the run
    return verdict(view.objects, p)


def flow_text(f: dict) -> str:
    dst = f["dst"]
    port = f"/{dst['port']}" if dst.get("port") is not None else ""
    return (f"#{f['id']} {f['src']['label']} -> {dst['label']}" + (f" ({dst['ip']})" if dst["label"] != dst["ip"] else "")
            + f" {f['proto']}{port}: {KINDS.get(f['kind'], f['kind'])} x{f['count']}" + (" (recovered)" if f.get("recovered") else ""))


def diagnosis_text(d: dict | None) -> str:
    return watch_line(d) if d else "not diagnosed"


def verdict(objects: list[dict], p: dict) -> dict:
    """The check's result from the session's objects: failed when a flow failed (or a drop of a
    named reason was seen), each flow with its diagnosis; the first flow (the most events) gives
    the result's cause, hop and fix."""
    diagnoses = {o["flow"]: {k: v for k, v in o.items() if k not in ("type", "flow")} for o in objects if o.get("type") == "diagnosis"}
    flows = [{**o, "diagnosis": diagnoses.get(o["id"])} for o in objects if o.get("type") == "flow" and o.get("final")]
    for f in flows:
        for k in ("type", "final"):
            f.pop(k, None)
    end = next((o for o in reversed(objects) if o.get("type") == "end"), {})
    drops = end.get("drops") or {}
    named = {r: n for r, n in drops.items() if r in p["reasons"]}
    watched = next((o["watching"] for o in objects if o.get("type") == "start"), [])
    where = ", ".join(watched) or "every namespace"
    expected = f"no failing flow for {p['for']:g}s" + (f" and no drop for {', '.join(p['reasons'])}" if p["reasons"] else "")
    evidence = [{"kind": "flow", "detail": f"{flow_text(f)}: {diagnosis_text(f['diagnosis'])}"} for f in flows[:MAX_LISTED]]
    if drops:
        # placed by watch's drop counter where it can; tracefs's fallback counts are host-wide
        unplaced = any(o.get("type") == "drops" and o.get("scope") == "host" for o in objects)
        evidence.append({"kind": "drops", "detail": ("host-wide" if unplaced else f"in {where}") + ": "
                         + ", ".join(f"{r} {n}" for r, n in sorted(drops.items(), key=lambda x: -x[1]))})
    out = {"expected": expected, "flows": flows, "drops": drops, "evidence": evidence, "watched": watched}
    if end.get("interrupted"):
        return {**out, "status": "error", "observed": f"{len(flows)} failing flow(s) before it was stopped",
                "summary": f"stopped after {end.get('seconds', 0):g}s of {p['for']:g}s (the run was stopped)"}
    if not flows and not named:
        return {**out, "status": "passed", "observed": "no failing flow",
                "summary": f"no failing flow in {end.get('seconds', p['for']):g}s watching {where}"
                           + (f" ({end['elsewhere']} event(s) of other namespaces with a watched address left out)" if end.get("elsewhere") else "")}
    observed = ", ".join(x for x in (f"{len(flows)} failing flow(s)" if flows else "",
                                     ", ".join(f"{n} drop(s) for {r}" for r, n in named.items())) if x)
    summary = f"{observed} in {p['for']:g}s watching {where}"
    if flows:
        summary += ": " + "; ".join(flow_text(f) + (f" {f['diagnosis']['cause']}" if (f["diagnosis"] or {}).get("cause") else "")
                                    for f in flows[:3]) + ("; ..." if len(flows) > 3 else "")
    first = next((f["diagnosis"] for f in flows if f["diagnosis"]), None) or {}
    fix_check = ({"checked": True, "delivers": first["fix_checked"], "detail": "checked on the model by watch's diagnosis"}
                 if first.get("fix_checked") is not None else None)
    return {**out, "status": "failed", "observed": observed, "summary": summary, "cause": first.get("cause"), "hop": first.get("hop"),
            "fix": first.get("fix") or "", "fix_command": first.get("fix_command"), "fix_check": fix_check}
