"""Docker's --format templates and ps --filter, the same command lines given to a real Docker engine
(tests/dockerkit.py, inside the lab) and to netdiag, on the same set of containers made by each:
web (running, label tier=front), xa and xb (exited), yy (exited), xy (running)."""
from __future__ import annotations

import json
import re

import pytest

from tests.dockerkit import HAVE_DOCKER, IMAGE, docker_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")]

HTTPD = ["httpd", "-f", "-p", "80"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(docker, netdiag): each a function running its CLI in the lab and returning stdout."""
    def make(run, image, port):
        run("run", "-d", "--name", "web", "--label", "tier=front", "-p", f"{port}:80", image, *HTTPD)
        run("run", "-d", "--name", "xy", image, "sleep", "600")
        for name, code in (("xa", 0), ("xb", 3), ("yy", 0)):
            run("run", "--name", name, image, "sh", "-c", f"exit {code}", check_exit=False)

    with docker_lab(tmp_path_factory.mktemp("format-lab"), lambda d: None) as d:
        lab = d.lab

        def docker(*args, check_exit=True):
            p = d.docker(*args, check=check_exit)
            return p.stdout

        def netdiag(*args, check_exit=True):
            p = lab.run(*args)
            assert p.returncode == 0 or not check_exit, p.stderr
            return p.stdout

        make(docker, IMAGE, 18081)
        make(netdiag, "busybox", 18082)
        yield docker, netdiag


def test_inspect_format_prints_one_line_per_object_like_docker(both):
    docker, netdiag = both
    for run in (docker, netdiag):
        ip = run("inspect", "-f", "{{.NetworkSettings.Networks.bridge.IPAddress}}", "web")
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+\n", ip), ip
        assert json.loads(run("inspect", "web"))[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ip.strip()
        ranged = run("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}", "web")
        assert ranged == f"bridge={ip.strip()} \n"
    template = "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{index .Config.Labels \"tier\"}} {{json .Config.Cmd}}"
    assert netdiag("inspect", "-f", template, "web", "xb") == docker("inspect", "-f", template, "web", "xb") == (
        '/web running 0 front ["httpd","-f","-p","80"]\n/xb exited 3  ["sh","-c","exit 3"]\n')


def test_docker_docs_port_template_works(both):
    docker, netdiag = both
    template = "{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}"
    assert docker("inspect", "--format", template, "web") == " 80/tcp -> 18081 \n"
    assert netdiag("inspect", "--format", template, "web") == " 80/tcp -> 18082 \n"


def _up(text: str) -> str:
    return re.sub(r"Up [^\n]*", "Up", text)


def test_ps_table_template_matches_dockers_alignment_and_headers(both):
    docker, netdiag = both
    args = ("ps", "--format", r"table {{.Names}}\t{{.Status}}")
    assert _up(netdiag(*args)).splitlines()[0] == _up(docker(*args)).splitlines()[0] == "NAMES     STATUS"
    assert sorted(_up(netdiag(*args)).splitlines()) == sorted(_up(docker(*args)).splitlines())
    args = ("ps", "-a", "--format", r"table {{.Names}}\t{{.State}}\t{{.Labels}}")
    assert sorted(netdiag(*args).splitlines()) == sorted(docker(*args).splitlines())


@pytest.mark.parametrize("filters", [
    ("--filter", "status=exited", "--filter", "name=x"),
    ("--filter", "status=exited"),
    ("--filter", "label=tier=front"),
    ("--filter", "label=tier"),
    ("--filter", "name=^xa$", "--filter", "name=y"),
    ("--filter", "status=running", "--filter", "status=exited", "--filter", "name=x"),
    ("--filter", "network=bridge"),
])
def test_ps_filters_pick_what_dockers_pick(both, filters):
    docker, netdiag = both
    for extra in ((), ("-a",)):
        shown = [sorted(run("ps", *extra, *filters, "--format", "{{.Names}}").split()) for run in (docker, netdiag)]
        assert shown[0] == shown[1] and shown[0], (extra, filters, shown)
    # the default table lists the same containers (NAMES is its last column)
    tables = [sorted(line.split()[-1] for line in run("ps", "-a", *filters).splitlines()[1:]) for run in (docker, netdiag)]
    assert tables[0] == tables[1]


def test_ps_ancestor_and_id_filters(both):
    docker, netdiag = both
    for run, image in ((docker, IMAGE), (netdiag, "busybox")):
        assert sorted(run("ps", "-a", "--filter", f"ancestor={image}", "--format", "{{.Names}}").split()) == ["web", "xa", "xb", "xy", "yy"]
        web_id = run("inspect", "-f", "{{.Id}}", "web").strip()
        assert run("ps", "--filter", f"id={web_id[:6]}", "--format", "{{.Names}}") == "web\n"


def test_images_format_prints_repository_and_tag_like_docker(both):
    docker, netdiag = both
    assert f"{IMAGE}:latest" in docker("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines()
    assert "busybox:latest" in netdiag("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines()
    header = [run("images", "--format", r"table {{.Repository}}\t{{.Tag}}\t{{.ID}}").splitlines()[0] for run in (docker, netdiag)]
    assert header[0].split() == header[1].split() == ["REPOSITORY", "TAG", "IMAGE", "ID"]
