"""The CLI as a user meets it: help that explains, fast start-up paths, clear usage errors, the demo."""
import os
import subprocess
import sys

import pytest


def _netdiag(*args, env=None):
    return subprocess.run([sys.executable, "-m", "netdiag", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_help_lists_the_docker_commands():
    out = _netdiag("--help").stdout
    for cmd in ("run", "ps", "exec", "logs", "stop", "rm", "inspect", "images", "build", "network", "system"):
        assert cmd in out


def test_commands_do_not_import_scapy_or_pyroute2():
    code = ("import sys; sys.argv=['netdiag', 'ps']; from netdiag.cli import main as m\n"
            "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('scapy', 'pyroute2')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "NETDIAG_ROOT": "/nonexistent-netdiag-root"})
    assert p.stdout.strip().endswith("[]"), p.stdout + p.stderr


def test_usage_errors_exit_2_without_traceback():
    p = _netdiag("run", "--bogus", "busybox")  # Docker's code for a `run` that failed itself
    assert p.returncode == 125 and "unrecognized arguments: --bogus" in p.stderr and "Traceback" not in p.stderr
    p = _netdiag("ps", "--bogus")
    assert p.returncode == 2 and "No such option" in p.stderr
    p = _netdiag("nosuchcommand")
    assert p.returncode == 2


def test_run_of_an_unknown_image_exits_125_like_docker(tmp_path):
    p = _netdiag("run", "busyboxx", env={"NETDIAG_ROOT": str(tmp_path)})
    assert p.returncode == 125 and "busyboxx" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "containers").exists() or not list((tmp_path / "containers").iterdir())


def test_a_typo_gets_one_suggestion_and_version_works_like_dockers():
    p = _netdiag("trcae")
    assert p.returncode == 2 and p.stderr.count("Did you mean 'trace'?") == 1, p.stderr
    p = _netdiag("network", "lss")
    assert p.returncode == 2 and p.stderr.count("Did you mean 'ls'?") == 1, p.stderr
    for flag in ("--version", "-v"):
        p = _netdiag(flag)
        assert p.returncode == 0 and p.stdout.startswith("netdiag version "), p.stdout + p.stderr


@pytest.mark.integration
def test_demo_runs_on_the_defaults_and_leaves_nothing(tmp_path):
    def labs():
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return {line.split()[0] for line in out.splitlines() if line.startswith("ndlab-")}

    import re

    p = _netdiag("demo")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "nothing left behind" in p.stdout and "api says hi" in p.stdout and "hello from netdiag" in p.stdout
    assert re.search(r"^busybox\s+latest\s", p.stdout, re.M), "the images step lists the built-in image"
    heads = [line.split()[:2] for line in p.stdout.splitlines() if line.startswith(("BLOCKED", "DELIVERED"))]
    assert [h[0] for h in heads] == ["BLOCKED", "DELIVERED"] and heads[0][1] == "PORT_NOT_PUBLISHED", heads  # the traces' headlines
    name = re.search(r"building lab (ndlab-[0-9a-f]+)", p.stdout).group(1)
    assert not {name, f"{name}-out"} & labs()  # the demo's own lab is gone (other tests' labs may come and go)


def test_cli_inspect_works_offline_from_a_snapshot():
    import json
    from pathlib import Path

    fixture = Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json"
    p = _netdiag("inspect", "--snapshot", str(fixture), "api", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["container"]["name"] == "api"


def test_inspect_of_nothing_says_no_such_object_like_docker(tmp_path):
    env = {"NETDIAG_ROOT": str(tmp_path)}
    p = _netdiag("inspect", "MISSING", env=env)
    assert p.returncode == 1 and "No such object: MISSING" in p.stderr and "Traceback" not in p.stderr
    p = _netdiag("inspect", "--type", "image", "MISSING", env=env)
    assert p.returncode == 1 and "No such image: MISSING" in p.stderr


def test_topo_with_an_output_file_writes_the_file_and_prints_no_tree(tmp_path):
    from pathlib import Path

    snap = Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json"
    out = tmp_path / "map.svg"
    p = _netdiag("topo", "--snapshot", str(snap), "-o", str(out))
    assert p.returncode == 0 and p.stdout == "" and f"wrote {out}" in p.stderr, p.stdout[:500] + p.stderr
    assert out.read_text().lstrip().startswith("<")
    assert _netdiag("topo", "--snapshot", str(snap)).stdout.strip()  # without -o: the tree
