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


def test_slow_kinds_take_part_in_fewer_rounds_but_in_the_first():
    plan = cases.plan(7, 150)
    slow = {k for k, v in KINDS.items() if v.every > 1}
    assert slow and {c.kind for c in plan} == set(KINDS)
    per_kind = {k: sum(c.kind == k for c in plan) for k in KINDS}
    assert max(per_kind[k] for k in slow) < min(per_kind[k] for k in KINDS if k not in slow)
    assert {c.shape for c in plan if c.kind in slow} == {"docker", "overlay"}


def test_every_overlay_kind_is_in_the_suites_plan():
    """The overlay world (a cluster with etcd) is slow, so its kinds run every third round; the
    150 cases of the suite must still try each of them."""
    from tests.faults.test_faults import PLAN

    overlay = {k for k, v in KINDS.items() if "overlay" in v.shapes}
    assert len(overlay) >= 3 and overlay <= {c.kind for c in PLAN}
    assert all(c.shape == "overlay" for c in PLAN if c.kind in overlay)


def test_the_ci_plan_runs_every_kind_and_has_no_gaps():
    """tests/faults' fixed plan: every kind of the catalogue, none only as a gap."""
    from tests.faults.test_faults import COUNT, GAPS, PLAN

    assert COUNT >= 150 and len(PLAN) == COUNT and not GAPS
    assert {c.kind for c in PLAN} == set(KINDS)
    assert {"mtu-blackhole", "dnat-to-wrong-port", "udp-forward-drop", "udp-no-listener"} <= set(KINDS)
