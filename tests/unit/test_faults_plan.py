"""The fault-injection plan (netdiag/faults): pure, no root."""
from netdiag.faults import case as cases
from netdiag.faults.case import KINDS


def test_the_plan_covers_every_kind_and_is_reproducible():
    plan = cases.plan(7, 3 * len(KINDS))
    assert {c.kind for c in plan} == set(KINDS)
    assert plan == cases.plan(7, 3 * len(KINDS)) and plan != cases.plan(8, 3 * len(KINDS))
    assert all(c.shape in KINDS[c.kind].shapes for c in plan)


def test_the_catalogue_has_at_least_25_kinds():
    assert len(KINDS) >= 25
