"""--format and --filter as a user types them, on an empty state directory (no root, no lab): the
built-in busybox image and the host/none networks are all there is."""
import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def netdiag(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "netdiag", *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "NETDIAG_ROOT": str(tmp_path)})
    return run


def test_inspect_format_runs_the_template_on_each_object(netdiag):
    p = netdiag("inspect", "-f", "{{.Config.Cmd}} {{json .Config.Cmd}} {{index .RepoTags 0}}", "busybox", "busybox")
    assert (p.returncode, p.stdout) == (0, '[sh] ["sh"] busybox:latest\n' * 2), p.stderr
    p = netdiag("image", "inspect", "--format", "json", "busybox")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1 and json.loads(p.stdout)["RepoTags"] == ["busybox:latest"]


def test_network_format_and_table_prefix(netdiag):
    p = netdiag("network", "ls", "--format", r"table {{.Name}}\t{{.Driver}}")
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0] == "NAME      DRIVER" and "none      null" in lines, p.stdout + p.stderr
    p = netdiag("network", "inspect", "-f", "{{.Name}}/{{.Driver}}", "none")
    assert (p.returncode, p.stdout) == (0, "none/null\n"), p.stderr


@pytest.mark.parametrize("args, words", [
    (("inspect", "-f", "{{.Config.Cmd", "busybox"), "Unclosed action"),
    (("inspect", "-f", "{{range .Config.Cmd}}", "busybox"), "has no {{end}}"),
    (("inspect", "-f", "{{.Name}}", "--net", "host"), "does not apply to the network view"),
    (("ps", "--format", "table {{.Nmes}}"), "the fields are .ID"),
    (("images", "--format", "table {{upper .Size 1}}"), "Error calling upper"),
    (("ps", "--filter", "colour=red"), "Unknown filter 'colour'"),
    (("ps", "--filter", "status=sleeping"), "a status is one of"),
    (("ps", "--filter", "name=(web"), "regular expression"),
    (("ps", "--filter", "status"), "KEY=VALUE"),
])
def test_bad_templates_and_filters_exit_2_saying_what_to_do(netdiag, args, words):
    p = netdiag(*args)
    assert p.returncode == 2 and words.lower() in p.stderr.lower() and "Traceback" not in p.stderr, p.stderr


def test_ps_format_json_keeps_one_object_per_line_and_filters_apply_before_listing(netdiag):
    assert netdiag("ps", "-a", "--format", "json").stdout == ""
    p = netdiag("ps", "--filter", "status=exited", "--filter", "name=x", "--format", "table {{.Names}}")
    assert (p.returncode, p.stdout) == (0, "NAMES\n"), p.stderr


def test_inspect_shows_what_it_found_and_fails_for_the_rest_like_docker(netdiag):
    p = netdiag("inspect", "-f", "{{index .RepoTags 0}}", "busybox", "MISSING", "busybox")
    assert (p.returncode, p.stdout) == (1, "busybox:latest\n" * 2) and "No such object: MISSING" in p.stderr, p.stderr
    p = netdiag("network", "inspect", "none", "nonet")
    assert p.returncode == 1 and [n["Name"] for n in json.loads(p.stdout)] == ["none"] and "No such network: nonet" in p.stderr
