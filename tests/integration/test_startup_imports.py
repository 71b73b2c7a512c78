"""The start-up import budget on the real path (issue 24): `run --rm` with no network and on the
default bridge, and `ps` listing a container, run in a lab under `python -X importtime`, so every
module the command imports, lazily inside the runtime and in the forked monitor included, is held
to the budget of tests/unit/test_startup_imports.py. That unit test stops `run` before the
container and imports its RUN_PATH/BRIDGE_PATH lists instead: this one also says when those lists
no longer cover what a real run imports."""
import sys

import pytest

from tests.unit.test_startup_imports import BRIDGE_PATH, HEAVY, RUN_PATH, STDLIB_CUT

pytestmark = pytest.mark.integration

# imported before the unit test's stand-in takes over (the CLI and runtime.api.containers)
BEFORE_THE_STAND_IN = {"runtime.api.containers", "runtime.containers.container_records", "runtime.errors", "runtime.paths"}


def _imports(lab, *argv: str) -> set[str]:
    p = lab.run_in(None, [sys.executable, "-X", "importtime", "-m", "netdiag", *argv], env=lab.env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [line.split("|", 2)[2].strip() for line in p.stderr.splitlines() if line.startswith("import time:")]
    return {name for name in lines if name != "imported package"}


def _stand_in_misses(loaded: set[str], path: list[str]) -> set[str]:
    parents = {m.rsplit(".", 1)[0] for m in loaded}  # packages: imported on the way to their modules
    return {m for m in loaded if m.startswith("runtime.")} - set(path) - BEFORE_THE_STAND_IN - parents


@pytest.mark.parametrize("network, path, needed", [("none", RUN_PATH, set()), ("bridge", BRIDGE_PATH, {"threading"})],
                         ids=["none", "bridge"])
def test_a_real_run_imports_nothing_heavy(lab, network, path, needed):
    lab.ok("run", "--rm", "--network", network, "busybox", "true")  # the built-in image is made once, untimed
    loaded = _imports(lab, "run", "--rm", "--network", network, "busybox", "true")
    top = {m.split(".")[0] for m in loaded}
    heavy = top & (HEAVY | STDLIB_CUT) - needed
    assert "runtime" in top and not heavy, f"netdiag run --network {network} imports {sorted(heavy)}"
    assert not _stand_in_misses(loaded, path), "add these to the unit test's lists"


def test_ps_of_a_running_container_imports_nothing_heavy(lab):
    lab.ok("run", "-d", "--network", "none", "--name", "idle", "busybox", "sleep", "60")
    top = {m.split(".")[0] for m in _imports(lab, "ps", "-a")}
    heavy = top & (HEAVY | STDLIB_CUT)
    assert "runtime" in top and not heavy, f"netdiag ps imports {sorted(heavy)}"
