"""The `command` check kind: an argument list that must exit as expected (a pull that works is
graded so). Pure: real short programs, no probes, no namespaces."""
import sys

from netdiag.check import spec
from netdiag.check.live_kinds import command
from netdiag.check.runner import evaluate


def load(tmp_path, text):
    p = tmp_path / "checks.yaml"
    p.write_text(text)
    return spec.load([str(p)], environ={}).checks


def test_parsed_with_defaults_and_named_from_its_argv(tmp_path):
    (c,) = load(tmp_path, "checks:\n  - command: {run: [netdiag, pull, reg:5000/app:1], within: 5s}\n")
    assert c.kind == "command" and c.params == {"run": ["netdiag", "pull", "reg:5000/app:1"], "exit": 0, "within": 5.0}
    assert c.name == "`netdiag pull reg:5000/app:1` exits 0"


def test_a_shell_string_is_refused(tmp_path):
    p = tmp_path / "checks.yaml"
    p.write_text("checks:\n  - command: {run: 'netdiag pull x'}\n")
    try:
        spec.load([str(p)], environ={})
    except spec.CheckFileError as e:
        assert any("checks[0].command.run" in x for x in e.problems), e.problems
    else:
        raise AssertionError("a shell string was accepted")


def test_exit_status_decides_and_a_failure_shows_the_output():
    ok = command({"run": [sys.executable, "-c", "pass"], "exit": 0, "within": 10}, None, live=True)
    assert ok["status"] == "passed" and ok["observed"] == "exit 0"
    bad = command({"run": [sys.executable, "-c", "import sys; sys.exit('x509: certificate signed by unknown authority')"],
                   "exit": 0, "within": 10}, None, live=True)
    assert bad["status"] == "failed" and bad["summary"].endswith("exited 1 (expected 0): x509: certificate signed by unknown authority")
    assert bad["evidence"] == [{"kind": "output", "detail": "x509: certificate signed by unknown authority"}]
    diagnosed = command({"run": [sys.executable, "-c", "import sys; sys.exit('netdiag: error: Registry r:5000 timed out.\\n"
                                 "cause: MTU_BLACKHOLE\\nfix:   ip link set eth0 mtu 1300')"], "exit": 0, "within": 10}, None, live=True)
    assert diagnosed["cause"] == "MTU_BLACKHOLE" and diagnosed["summary"].endswith("(expected 0): Registry r:5000 timed out."), diagnosed
    slow = command({"run": [sys.executable, "-c", "import time; time.sleep(5)"], "exit": 0, "within": 0.3}, None, live=True)
    assert slow["status"] == "failed" and "did not finish within 0.3s" in slow["summary"]


def test_netdiag_first_is_this_netdiag_and_a_snapshot_skips_it(tmp_path):
    (c,) = load(tmp_path, "checks:\n  - command: {run: [netdiag, --version]}\n")
    assert evaluate(c, None)["status"] == "passed"
    assert evaluate(c, None, snapshot=True)["status"] == "skipped"
