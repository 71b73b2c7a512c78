import pytest

from tests.labkit import World


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A lab host (own eth0 203.0.113.2 towards an 'outside' namespace at .1) with a private netdiag
    root and cgroup parent. `lab.run(...)` runs the netdiag CLI inside it. Removed also on failure."""
    w = World(state_dir=tmp_path / "ndroot")
    w.create()
    monkeypatch.setenv("NETDIAG_ROOT", str(w.state_dir))
    monkeypatch.setenv("NETDIAG_CGROUP_PARENT", w.cgroup_parent)
    try:
        yield w
    finally:
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"
