"""The topology picture of a host where Docker and netdiag both run containers (a real engine in the
lab, tests/dockerkit.py), plus a plain namespace: the picture tells the engines and the plain
namespace apart, names each bridge by its owner and network (docker0 is Docker's, netdiag's default
falls back to netdiag0), marks Docker's icc=false network and netdiag's internal one, and a trace
drawn over it shows the hops before the failing one as passed. Read as a user reads it: the tree,
the DOT, the SVG and the HTML page that `netdiag topo` prints or writes."""
from __future__ import annotations

import contextlib
import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from tests.dockerkit import HAVE_DOCKER, IMAGE, docker_lab
from tests.unit.test_topo_marks import hop_words

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")]

SVG = "{http://www.w3.org/2000/svg}"
PAGE = "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"


def docker_side(d) -> None:
    """Docker: dweb on docker0; d1 and d2 (httpd on 80) on dquiet, created with enable_icc=false."""
    d.docker("run", "-d", "--name", "dweb", IMAGE, "sleep", "600")
    d.docker("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "dquiet")
    for name in ("d1", "d2"):
        d.docker("run", "-d", "--network", "dquiet", "--name", name, IMAGE, "sh", "-c", PAGE.format(body=name))


def netdiag_side(lab) -> None:
    """netdiag: def on its default network (netdiag0: docker0 is Docker's), vault on the internal network inner."""
    lab.ok("run", "-d", "--name", "def", "busybox", "sleep", "600")
    lab.ok("network", "create", "--internal", "--subnet", "10.126.0.0/24", "inner")
    lab.ok("run", "-d", "--name", "vault", "--network", "inner", "busybox", "sleep", "600")


@contextlib.contextmanager
def plain_namespace(lab):
    """A plain namespace wired to the lab host by a veth, the way people test things by hand."""
    plain = f"{lab.name}-plain"
    subprocess.run(["ip", "netns", "add", plain], check=True)
    try:
        for argv in (["ip", "link", "add", "vplain", "type", "veth", "peer", "name", "inner0", "netns", plain],
                     ["ip", "addr", "add", "192.0.2.1/24", "dev", "vplain"], ["ip", "link", "set", "vplain", "up"]):
            assert lab.in_lab(*argv).returncode == 0, argv
        subprocess.run(["ip", "-n", plain, "addr", "add", "192.0.2.2/24", "dev", "inner0"], check=True)
        subprocess.run(["ip", "-n", plain, "link", "set", "inner0", "up"], check=True)
        yield plain
    finally:
        lab.in_lab("ip", "link", "del", "vplain")
        subprocess.run(["ip", "netns", "del", plain], capture_output=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with docker_lab(tmp_path_factory.mktemp("topo-engines"), docker_side) as d:
        netdiag_side(d.lab)
        with plain_namespace(d.lab) as plain:
            yield d, plain


def topo(lab, *args: str) -> subprocess.CompletedProcess:
    p = lab.netdiag("topo", *args, env={**lab.env, "COLUMNS": "400"}, timeout=120)  # wide: one line per interface
    assert p.returncode == 0, p.stderr
    return p


def bridge_of(lab, net: str, docker: bool) -> str:
    if docker:
        return "br-" + json.loads(lab.docker("network", "inspect", net).stdout)[0]["Id"][:12]
    return json.loads(lab.ok("network", "inspect", net))[0]["Bridge"]


def line_of(text: str, needle: str) -> str:
    lines = [ln for ln in text.splitlines() if needle in ln]
    assert len(lines) >= 1, f"{needle!r} not in:\n{text}"
    return lines[0]


def test_tree_tells_engines_apart_and_marks_isolated_networks(world):
    d, plain = world
    lab = d.lab
    dquiet, inner = bridge_of(lab, "dquiet", True), bridge_of(lab, "inner", False)
    assert bridge_of(lab, "bridge", False) == "netdiag0"
    text = topo(lab).stdout
    assert "Docker network bridge" in line_of(text, "bridge docker0 ")
    assert "netdiag network bridge" in line_of(text, "bridge netdiag0 ")
    quiet = line_of(text, f"bridge {dquiet} ")
    assert "Docker network dquiet" in quiet and "icc=false" in quiet and "internal" not in quiet
    closed = line_of(text, f"bridge {inner} ")
    assert "netdiag network inner" in closed and "internal" in closed and "icc=false" not in closed
    for name in ("dweb", "d1", "d2"):
        assert f"⇄ {name} (Docker container)" in text
    for name in ("def", "vault"):
        assert f"⇄ {name} (netdiag container)" in text
    assert f"{plain} (netns)" in text


def test_written_pictures_say_the_same_and_only_the_file_is_written(world, tmp_path):
    d, plain = world
    lab = d.lab
    dquiet, inner = bridge_of(lab, "dquiet", True), bridge_of(lab, "inner", False)
    for suffix in ("svg", "dot", "html"):
        out = tmp_path / f"map.{suffix}"
        p = topo(lab, "-o", str(out))
        assert p.stdout == "" and f"wrote {out}" in p.stderr  # the file is the output: no tree printed
    root = ET.fromstring((tmp_path / "map.svg").read_text())
    boxes = {"".join(g.find(f"{SVG}title").itertext()).split(" (")[0]: g.get("class").split()
             for g in root.iter(f"{SVG}g") if g.get("data-ns")}
    assert all("engine-docker" in boxes[n] for n in ("dweb", "d1", "d2"))
    assert all("engine-netdiag" in boxes[n] for n in ("def", "vault"))
    assert "netns" in boxes[plain] and "container" not in boxes[plain]
    rows = {g.get("data-node", "").split("/")[-1]: g for g in root.iter(f"{SVG}g") if g.get("data-node")}
    assert "⊘ icc=false" in "".join(rows[dquiet].itertext())
    assert "⊘ internal" in "".join(rows[inner].itertext())
    assert "Docker network bridge" in "".join(rows["docker0"].itertext())
    assert "netdiag network bridge" in "".join(rows["netdiag0"].itertext())
    assert [r.get("class") for r in rows[dquiet].iter(f"{SVG}rect")] == ["r-bridge r-isolated"]
    legend = " ".join(" ".join(t.itertext()) for g in root.iter(f"{SVG}g") if g.get("class") == "legend"
                      for t in g.iter(f"{SVG}text"))
    for words in ("netdiag container", "Docker container", "plain namespace", "icc=false", "internal"):
        assert words in legend, words

    dot = (tmp_path / "map.dot").read_text()
    assert 'label="d1 (Docker container)"' in dot and 'label="def (netdiag container)"' in dot
    assert f'label="{plain} (netns)"' in dot
    assert "Docker network dquiet\\nicc=false: its containers cannot reach each other" in dot
    assert "netdiag network inner\\ninternal: no traffic in or out of it" in dot

    page = (tmp_path / "map.html").read_text()
    assert "<td>dquiet</td><td>Docker</td>" in page and "icc=false: its containers cannot reach each other" in page
    assert "<td>inner</td><td>netdiag</td>" in page and "internal: no traffic in or out of it" in page


def test_trace_picture_marks_hops_before_the_failure_passed(world, tmp_path):
    lab = world[0].lab
    p = lab.netdiag("trace", "d1", "d2", "--port", "80", "--json", timeout=120)
    r = json.loads(p.stdout)
    assert (p.returncode, r["verdict"], r["cause"]) == (1, "blocked", "ICC_DISABLED"), r["summary"]
    assert r["blocked_at"] > 1  # there is a path before the failing hop to draw
    trace_file = tmp_path / "trace.json"
    trace_file.write_text(p.stdout)
    out = tmp_path / "trace.svg"
    topo(lab, "--trace", str(trace_file), "-o", str(out))
    svg = out.read_text()
    ET.fromstring(svg)  # well-formed
    request = [h["n"] for h in r["hops"] if h.get("leg") != "reply"]
    for text in (svg, topo(lab, "--trace", str(trace_file)).stdout):
        said = hop_words(text)
        for n in request:  # a capture that missed a hop before the failing one is not "not reached"
            want = ("passed", "seen") if n < r["blocked_at"] else ("failed",) if n == r["blocked_at"] else ("not reached",)
            assert said.get(n) in want, (n, r["hops"][n - 1], said)

