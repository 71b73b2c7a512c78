"""The contract of netdiag.worlds' one interface, where it is pure: create() tears a world down when
it fails half-way and re-raises, leaks() reports what the world left and any change it made to
the root namespace, `where` names the same namespaces in every kind of world. No root, no kernel:
the root namespace's state is a stand-in and no world here is built for real."""
from __future__ import annotations

import pytest

from netdiag.faults.world import FaultWorld
from netdiag.worlds import ClusterLab, DockerLab, Lab, World, base


@pytest.fixture
def root(monkeypatch):
    """A stand-in for the root namespace's links and nftables tables, changed at will."""
    state = {"nft table ip nat", "nft table inet filter"}
    monkeypatch.setattr(base, "root_namespace_state", lambda: frozenset(state))
    return state


class Halfway(World):
    """A world of three parts whose build fails after `fail_after` of them; destroy removes what exists."""

    def __init__(self, fail_after: int | None = None):
        self.name, self.env = "halfway", {}
        self.fail_after, self.made, self.destroyed = fail_after, [], 0

    def _build(self) -> None:
        for part in ("netns", "link", "server"):
            if self.fail_after is not None and len(self.made) == self.fail_after:
                raise RuntimeError(f"cannot make {part}")
            self.made.append(part)

    def destroy(self) -> None:
        self.destroyed += 1
        self.made.clear()

    def _leftovers(self) -> list[str]:
        return list(self.made)


@pytest.mark.parametrize("fail_after", [0, 1, 2])
def test_a_failed_create_destroys_what_was_made_and_reraises(root, fail_after):
    w = Halfway(fail_after)
    with pytest.raises(RuntimeError, match="cannot make"):
        w.create()
    assert w.destroyed == 1 and w.leaks() == []


def test_create_returns_the_world_and_leaks_say_what_a_destroy_left(root):
    w = Halfway().create()
    assert w.made == ["netns", "link", "server"] and w.leaks() == ["netns", "link", "server"]
    w.destroy()
    assert w.leaks() == []


def test_an_interrupted_create_is_torn_down_too(root):
    class Interrupted(Halfway):
        def _build(self):
            self.made.append("netns")
            raise KeyboardInterrupt

    w = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        w.create()
    assert w.destroyed == 1 and w.leaks() == []


def test_leaks_report_a_root_namespace_changed_during_the_worlds_life(root):
    w = Halfway().create()
    root.add("nft table inet netdiag")  # a table made in the wrong namespace
    root.discard("nft table inet filter")  # a table someone else owns, removed
    w.destroy()
    assert w.leaks() == ["root namespace: nft table inet netdiag appeared", "root namespace: nft table inet filter went away"]


def test_with_destroys_also_when_the_body_fails(root):
    w = Halfway()
    with pytest.raises(ValueError):
        with w:
            assert w.made
            raise ValueError("test body")
    assert w.destroyed == 1 and w.leaks() == []


def test_where_names_the_same_namespaces_in_every_kind_of_lab():
    lab = Lab(name="ndlab-x")
    assert lab.namespace() == lab.namespace("host") == "/run/netns/ndlab-x"
    assert lab.namespace("outside") == "/run/netns/ndlab-x-out"
    assert DockerLab(name="ndlab-d").namespace("outside") == "/run/netns/ndlab-d-out"
    cl = ClusterLab(name="ndcl-x", names=["web", "db"])
    assert cl.namespace() == cl.namespace("web") == cl.namespace("ndcl-x-web") == "/run/netns/ndcl-x-web"
    assert cl.namespace("db") == "/run/netns/ndcl-x-db"
    assert (cl.namespace("underlay"), cl.namespace("store")) == ("/run/netns/ndcl-x-ul", "/run/netns/ndcl-x-kv")
    assert cl.env_of("db")["NETDIAG_ROOT"].endswith("/db") and cl.env_of()["NETDIAG_ROOT"].endswith("/web")


def test_the_cli_runs_with_the_hosts_own_state():
    cl = ClusterLab(name="ndcl-y", hosts=2)
    seen = {}

    def run_in(where, argv, **kw):
        seen.update(where=where, argv=argv, root=kw["env"]["NETDIAG_ROOT"])

    cl.run_in = run_in
    cl.netdiag("ps", where="h2")
    assert seen["where"] == "h2" and seen["argv"][1:] == ["-m", "netdiag", "ps"] and seen["root"].endswith("/h2")


class FakeLab(World):
    def __init__(self, fail: bool = False):
        self.name, self.env, self.fail, self.up = "ndlab-f", {"NETDIAG_ROOT": "/tmp/x"}, fail, False

    def _build(self):
        self.up = True
        if self.fail:
            raise OSError("no namespace")

    def destroy(self):
        self.up = False

    def _leftovers(self):
        return ["netns ndlab-f"] if self.up else []


class Planted(FaultWorld):
    def __init__(self, lab, fail: bool = False):
        super().__init__(7, lab)
        self.fail = fail

    def setup(self):
        if self.fail:
            raise RuntimeError("the world does not work before any fault")


@pytest.mark.parametrize("lab_fails, setup_fails", [(True, False), (False, True)])
def test_a_fault_world_that_fails_half_way_leaves_its_lab_destroyed(root, lab_fails, setup_fails):
    w = Planted(FakeLab(fail=lab_fails), fail=setup_fails)
    with pytest.raises((OSError, RuntimeError)):
        w.create()
    assert not w.lab.up and w.leaks() == []


def test_worlds_import_nothing_of_netdiag_but_themselves_and_only_the_runtimes_kernel_side():
    """The layers above (demo, scenario, faults, tests, benches) import worlds, never the other way."""
    import ast
    from pathlib import Path

    allowed = ("runtime.kernel", "runtime.records", "runtime.containers.cgroups")
    found = {}
    for path in sorted((Path(__file__).resolve().parents[2] / "netdiag" / "worlds").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module or ""]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            bad = [m for m in mods if m.split(".")[0] in ("netdiag", "runtime") and not m.startswith(allowed)]
            if bad:
                found.setdefault(path.name, []).extend(bad)
    assert not found, found
