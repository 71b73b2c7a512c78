"""The overlay fault world (netdiag/faults/overlay.py) leaves nothing behind: not after a case, not
when its building fails half-way (a cluster with etcd, two agents, containers on both hosts)."""
import pytest

from netdiag.faults import case as cases
from netdiag.faults import overlay
from netdiag.worlds import ClusterLab

pytestmark = pytest.mark.integration


@pytest.fixture
def clusters(monkeypatch):
    """Every ClusterLab made meanwhile, to look for what it left."""
    made = []
    create = ClusterLab.create

    def spy(self):
        made.append(self)
        return create(self)
    monkeypatch.setattr(ClusterLab, "create", spy)
    return made


def test_a_world_that_fails_half_way_is_torn_down_whole(clusters, monkeypatch):
    def broken(self, *opts):
        raise RuntimeError("the client could not start")
    monkeypatch.setattr(overlay.OverlayWorld, "start_client", broken)
    with pytest.raises(RuntimeError, match="the client could not start"):
        overlay.build(7)
    assert len(clusters) == 1 and clusters[0].leaks() == []


def test_a_case_whose_planting_fails_reports_it_and_leaves_nothing(clusters, monkeypatch):
    def broken(w, rng):
        w.nft(None, "this is no nft script")
    monkeypatch.setattr(cases.KINDS["overlay-vxlan-dropped-on-underlay"], "plant", broken)
    r = cases.run(cases.Case(7, "overlay-vxlan-dropped-on-underlay", overlay.SHAPE))
    assert not r.ok and r.problems[0].startswith("planting failed"), r.problems
    assert len(clusters) == 1 and clusters[0].leaks() == []
