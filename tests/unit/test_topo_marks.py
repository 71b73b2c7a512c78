"""What the topology pictures say about who owns what and about a trace, read as a user reads them
(tree text, DOT, SVG, HTML), over a real snapshot (tests/fixtures/topo_engines.json, made by
regen_topo_engines.py): Docker's and netdiag's containers and plain namespaces drawn three ways,
bridges named by owner and network, icc=false and internal networks marked, and a trace's hops
before the failing one drawn passed. Pure, no root."""
import copy
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from netdiag.views import topo

FIXTURE = Path(__file__).parent.parent / "fixtures" / "topo_engines.json"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def world():
    return json.loads(FIXTURE.read_text())


@pytest.fixture
def snap(world):
    return copy.deepcopy(world["snapshot"])


@pytest.fixture
def trace(world):
    """d1 -> d2 port 80 on Docker's icc=false network: seen at d1's eth0 (1) and the host's veth (2);
    the bridge (3) was not captured (bridged frames never reach the bridge device's own capture),
    Docker's icc rule dropped it at the bridge's forward hook (4)."""
    return copy.deepcopy(world["trace_d1_d2"])


def bridge(snap, name, engine):
    return next(n["bridge"] for n in snap["networks"] if (n["name"], n["runtime"]) == (name, engine))


def tree_text(snap, trace=None, styles=False) -> str:
    console = Console(record=True, width=300, force_terminal=styles, color_system="standard" if styles else None,
                      file=io.StringIO())
    console.print(topo.render_tree(snap, trace=trace))
    return console.export_text(styles=styles)


def line(text: str, needle: str) -> str:
    return next(ln for ln in text.splitlines() if needle in ln)


def svg_groups(svg: str) -> tuple[dict, dict]:
    """(namespace boxes by label, interface rows by interface name) of a drawn SVG."""
    root = ET.fromstring(svg)
    boxes = {"".join(g.find(f"{SVG}title").itertext()).split(" (")[0]: g for g in root.iter(f"{SVG}g") if g.get("data-ns")}
    rows = {g.get("data-node").split("/", 1)[1]: g for g in root.iter(f"{SVG}g") if g.get("data-node")}
    return boxes, rows


def text_of(el) -> str:
    return " ".join(t for t in el.itertext() if t.strip())


def hop_words(text: str) -> dict[int, str]:
    """What a picture says of each hop: '● hop 3 passed ✗ hop 4 failed' -> {3: passed, 4: failed}."""
    said = {}
    for nums, word in re.findall(r"[●✗○] hop ([\d,]+) (passed|seen|failed|last seen|not reached)", text):
        for n in nums.split(","):
            said[int(n)] = word
    return said


# --------------------------------------------------------------- engines and plain namespaces

def test_tree_says_which_engine_runs_each_container(snap):
    text = tree_text(snap)
    for name in ("dweb", "d1", "d2"):
        assert f"⇄ {name} (Docker container)" in text
    for name in ("def", "vault"):
        assert f"⇄ {name} (netdiag container)" in text
    assert "ndlab-26c03a-plain (netns)" in text


def test_tree_colours_docker_netdiag_and_plain_namespaces_apart(snap):
    text = tree_text(snap, styles=True)

    def style_before(word):
        return re.search(r"(\x1b\[[\d;]*m)" + re.escape(word), text).group(1)

    docker, netdiag, plain = style_before("d1"), style_before("def"), style_before("ndlab-26c03a-plain")
    assert len({docker, netdiag, plain}) == 3, (docker, netdiag, plain)


def test_svg_draws_the_three_kinds_of_namespace_differently_and_says_so(snap):
    svg = topo.render_svg(snap)
    boxes, _ = svg_groups(svg)
    assert boxes["d1"].get("class").split()[:3] == ["ns", "container", "engine-docker"]
    assert boxes["def"].get("class").split()[:3] == ["ns", "container", "engine-netdiag"]
    assert boxes["ndlab-26c03a-plain"].get("class").split()[:2] == ["ns", "netns"]
    assert "Docker container" in text_of(boxes["d1"]) and "netdiag container" in text_of(boxes["def"])
    css = ET.fromstring(svg).find(f"{SVG}style").text
    docker_rule = re.search(r"\.box\.container\.engine-docker \{([^}]*)\}", css).group(1)
    netdiag_rule = re.search(r"\.box\.container \{([^}]*)\}", css).group(1)
    assert re.search(r"fill: (#\w+)", docker_rule).group(1) != re.search(r"fill: (#\w+)", netdiag_rule).group(1)
    legend = text_of(next(g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "legend"))
    assert "netdiag container" in legend and "Docker container" in legend and "plain namespace" in legend


def test_dot_clusters_name_the_engine_and_differ_in_style(snap):
    dot = topo.render_dot(snap)

    def cluster(label):
        """The cluster's attributes after its label (style, colours)."""
        return re.search(r'label="' + re.escape(label) + r'";\n((?:    \w+=".*";\n)*)', dot).group(1)

    docker, netdiag, plain = cluster("d1 (Docker container)"), cluster("def (netdiag container)"), \
        cluster("ndlab-26c03a-plain (netns)")
    assert len({docker, netdiag, plain}) == 3


# --------------------------------------------------------------- bridges by owner and network

def test_docker0_and_netdiag0_are_named_by_owner_and_network(snap):
    text = tree_text(snap)
    assert line(text, "bridge docker0 ").rstrip().endswith("Docker network bridge")
    assert line(text, "bridge netdiag0 ").rstrip().endswith("netdiag network bridge")
    _, rows = svg_groups(topo.render_svg(snap))
    assert "bridge · Docker network bridge" in text_of(rows["docker0"])
    assert "bridge · netdiag network bridge" in text_of(rows["netdiag0"])
    dot = topo.render_dot(snap)
    assert "docker0 (bridge)\\n172.17.0.1/16\\nDocker network bridge" in dot
    assert "netdiag0 (bridge)\\n172.19.0.1/16\\nnetdiag network bridge" in dot


def test_isolated_networks_are_marked_everywhere(snap):
    quiet, inner = bridge(snap, "dquiet", "docker"), bridge(snap, "inner", "netdiag")
    text = tree_text(snap)
    assert "Docker network dquiet  ⊘ icc=false: its containers cannot reach each other" in line(text, f"bridge {quiet} ")
    assert "netdiag network inner  ⊘ internal: no traffic in or out of it" in line(text, f"bridge {inner} ")
    assert "⊘" not in line(text, "bridge docker0 ") + line(text, "bridge netdiag0 ")

    _, rows = svg_groups(topo.render_svg(snap))
    assert "⊘ icc=false" in text_of(rows[quiet]) and "⊘ internal" in text_of(rows[inner])
    assert [r.get("class") for r in rows[quiet].iter(f"{SVG}rect")] == ["r-bridge r-isolated"]
    assert [r.get("class") for r in rows["docker0"].iter(f"{SVG}rect")] == ["r-bridge"]

    dot = topo.render_dot(snap)
    quiet_node = line(dot, f'"{snap["host"]}/{quiet}" [')
    assert "Docker network dquiet\\nicc=false: its containers cannot reach each other" in quiet_node
    assert 'peripheries="2"' in quiet_node and 'peripheries' not in line(dot, f'"{snap["host"]}/docker0" [')
    assert "internal: no traffic in or out of it" in line(dot, f'"{snap["host"]}/{inner}" [')

    page = topo.render_html(snap)
    assert "<td>dquiet</td><td>Docker</td><td>bridge</td>" in page
    row = line(page, "<td>dquiet</td><td>Docker</td><td>bridge</td>")
    assert "<td>icc=false: its containers cannot reach each other</td>" in row
    assert "<td>internal: no traffic in or out of it</td>" in line(page, "<td>inner</td><td>netdiag</td><td>bridge</td>")
    assert "<td></td>" in line(page, "<td>docker0</td>")  # nothing to mark there


def test_netdiag_icc_option_is_read_like_dockers(snap):
    net = next(n for n in snap["networks"] if n["name"] == "inner")
    net["internal"] = False
    net["options"] = {"com.docker.network.bridge.enable_icc": "false"}
    assert "⊘ icc=false" in line(tree_text(snap), f"bridge {net['bridge']} ")


# --------------------------------------------------------------- the trace picture

def test_hops_before_the_failing_one_are_passed_even_where_no_capture_saw_them(snap, trace):
    quiet = bridge(snap, "dquiet", "docker")
    assert [(h["n"], h["seen"]) for h in trace["hops"]] == [(1, True), (2, True), (3, False), (4, False)]
    assert trace["blocked_at"] == 4
    want = {1: "seen", 2: "seen", 3: "passed", 4: "failed"}
    text = tree_text(snap, trace)
    assert hop_words(text) == want
    assert "● hop 3 passed ✗ hop 4 failed" in line(text, f"bridge {quiet} ")
    assert hop_words(topo.render_dot(snap, trace)) == want
    svg = topo.render_svg(snap, trace)
    assert hop_words(svg) == want
    _, rows = svg_groups(svg)
    assert rows[quiet].get("data-trace") == "blocked"
    legend = text_of(next(g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "legend"))
    assert "passed" in legend and "failed" in legend and "not reached" in legend


def test_hops_after_the_failing_one_are_not_reached(snap, trace):
    d2 = next(c["ns"] for c in snap["containers"] if c["name"] == "d2")
    veth = next(link["peer"]["name"] for link in snap["namespaces"][d2]["links"] if link["name"] == "eth0")
    trace["hops"] += [{"n": 5, "namespace": snap["host"], "label": "host", "interface": veth, "kind": "veth",
                       "direction": "egress", "seen": None, "detail": ""},
                      {"n": 6, "namespace": d2, "label": "d2 (docker container)", "interface": "eth0", "kind": "veth",
                       "direction": "ingress", "seen": None, "detail": ""}]
    svg = topo.render_svg(snap, trace)
    assert hop_words(svg) == {1: "seen", 2: "seen", 3: "passed", 4: "failed", 5: "not reached", 6: "not reached"}
    root = ET.fromstring(svg)
    unreached = [p for p in root.iter(f"{SVG}path") if "trace-unreached" in (p.get("class") or "").split()]
    assert {p.get("data-source") for p in unreached} == {f"{snap['host']}/{veth}"}  # the veth pair to d2
    passed = [p.get("class").split()[1] for p in root.iter(f"{SVG}path") if "trace-path" in (p.get("class") or "").split()]
    assert sorted(passed) == ["bridge", "veth"]  # d1's veth pair, and its port on the bridge


def test_a_delivered_trace_passed_every_hop_whatever_its_captures(snap, trace):
    trace.update(verdict="delivered", cause=None, blocked_at=None)
    del trace["hops"][3]
    assert set(hop_words(tree_text(snap, trace)).values()) <= {"seen", "passed"}
    assert hop_words(tree_text(snap, trace))[3] == "passed"


def test_an_undecided_trace_says_last_seen_not_failed(snap, trace):
    trace.update(verdict="unknown", cause=None, blocked_at=2)
    said = hop_words(tree_text(snap, trace))
    assert said == {1: "seen", 2: "last seen", 3: "not reached", 4: "not reached"}


def test_without_a_failing_hop_a_missed_capture_after_the_last_seen_is_not_reached(snap, trace):
    trace.update(verdict="unknown", cause=None, blocked_at=None)
    assert hop_words(tree_text(snap, trace)) == {1: "seen", 2: "seen", 3: "not reached", 4: "not reached"}


def test_a_hop_at_no_device_is_drawn_on_its_namespace(snap, trace):
    """A drop the kernel's packet trace saw in a namespace (interface "-"), a socket hop ("tcp/80"):
    the namespace box carries the mark, the hop is not lost."""
    d2 = next(c["ns"] for c in snap["containers"] if c["name"] == "d2")
    trace["hops"][3]["interface"] = "-"
    trace["hops"].append({"n": 5, "namespace": d2, "label": "d2 (docker container)", "interface": "tcp/80",
                          "kind": "socket", "direction": "local", "seen": None, "detail": ""})
    g = topo.graph(snap, trace=trace)
    assert g["trace"]["missing"] == [] and g["trace"]["blocked_node"] == snap["host"]
    boxes, _ = svg_groups(topo.render_svg(snap, trace))
    assert "✗ hop 4 failed" in text_of(boxes["host"]) and "○ hop 5 not reached" in text_of(boxes["d2"])


def test_a_plain_namespace_wired_by_hand_is_not_the_uplink(snap):
    """Both the lab's "outside" and the plain namespace hang off a host veth on no bridge; only the
    one the default route leaves by is the way out."""
    uplinks = [n["name"] for n in topo.graph(snap)["nodes"] if n["kind"] == "uplink"]
    assert uplinks == ["eth0"]
    text = tree_text(snap)
    assert line(text, "vplain").lstrip("├└─│ ").startswith("vplain 192.0.2.1/24  ⇄ ndlab-26c03a-plain (netns)")


def test_html_lists_the_containers_of_dockers_networks_too(snap):
    page = topo.render_html(snap)
    assert line(page, "<td>dquiet</td><td>Docker</td><td>bridge</td>").endswith("<td>d1, d2</td></tr>")
    assert line(page, "<td>bridge</td><td>Docker</td><td>bridge</td>").endswith("<td>dweb</td></tr>")
    assert line(page, "<td>bridge</td><td>netdiag</td><td>bridge</td>").endswith("<td>def</td></tr>")
