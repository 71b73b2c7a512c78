"""The diagnosis contract every producer keeps, whatever path its verdict took: a delivered result
names no cause and no hop (graders and tests compare the top-level `cause`)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from netdiag import diagnose as pipeline
from netdiag.snapshot_model import Model
from netdiag.reason import static_trace

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


def test_a_delivered_diagnosis_names_no_cause(monkeypatch):
    model = Model(copy.deepcopy(FIXTURE))
    real = static_trace.run_static

    def contradictory(*a, **kw):  # a producer that says delivered yet leaves a cause behind
        r, _ = real(*a, **kw)
        r.verdict, r.cause, r.blocked_at = "delivered", "MTU_BLACKHOLE", 1
        return r, None

    monkeypatch.setattr(static_trace, "run_static", contradictory)
    r = pipeline.diagnose(model, "db", "api", port=9000, live=False)
    assert (r.verdict, r.cause, r.blocked_at, r.fix.command) == ("delivered", None, None, None)


def test_the_fixtures_delivered_paths_name_no_cause():
    model = Model(copy.deepcopy(FIXTURE))
    names = sorted(c["name"] for c in model.containers())
    for src in names:
        for dst in names:
            r = pipeline.diagnose(model, src, dst, port=80, live=False)
            assert r.verdict != "delivered" or (r.cause, r.blocked_at) == (None, None), (src, dst, r.cause)
