import os
import signal
import subprocess

import pytest

# Ctrl-C means KeyboardInterrupt here and in every process a test starts, however the run was
# launched: a shell that starts a command in the background (`cmd &`, CI wrappers) leaves SIGINT
# ignored, Python then keeps it ignored, and the tests of what Ctrl-C does would send it to no one.
# A caught signal is reset to its default in a child at exec, so children get Ctrl-C back too.
signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    """Integration tests need root; without it they are skipped, not failed."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (they build namespaces)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def _root_namespace_state() -> dict:
    """What no test may change in the machine's own network namespace."""
    def run(*argv):
        return subprocess.run(list(argv), capture_output=True, text=True).stdout

    return {
        "links": sorted(line.split()[0] for line in run("ip", "-br", "link").splitlines()),
        "routes": run("ip", "-4", "route", "show", "table", "all"),
        "rules": run("ip", "rule"),
        "nft tables": run("nft", "list", "tables"),
        "ip_forward": open("/proc/sys/net/ipv4/ip_forward").read(),
    }


@pytest.fixture(scope="session", autouse=True)
def root_namespace_untouched():
    """Tests build their own worlds (labs); the machine's namespace must end as it began."""
    if os.geteuid() != 0:
        yield
        return
    before = _root_namespace_state()
    yield
    after = _root_namespace_state()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"tests changed the machine's network namespace: {changed}"
