import os

import pytest

from tests.labkit import destroy_world, leaks, make_world

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def ndroot(tmp_path, monkeypatch):
    """A private netdiag state root and cgroup parent, in this process and in CLI subprocesses."""
    w = make_world(tmp_path, lab=False)
    monkeypatch.setenv("NETDIAG_ROOT", str(w.root))
    monkeypatch.setenv("NETDIAG_CGROUP_PARENT", w.cgroup_parent)
    yield w
    destroy_world(w)
    assert not leaks(w), f"left behind: {leaks(w)}"


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A lab: a namespace that plays the host (eth0 198.18.0.2 to an 'outside' namespace at .1),
    with a private netdiag root. `lab.run(...)` runs the netdiag CLI inside it."""
    w = make_world(tmp_path, lab=True)
    monkeypatch.setenv("NETDIAG_ROOT", str(w.root))
    monkeypatch.setenv("NETDIAG_CGROUP_PARENT", w.cgroup_parent)
    yield w
    destroy_world(w)
    assert not leaks(w), f"left behind: {leaks(w)}"
