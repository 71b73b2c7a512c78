"""Topology views over a snapshot: the graph, the terminal tree, DOT, SVG, HTML. Pure, no root."""
import copy
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from netdiag.views import topo
from runtime.errors import InvalidArgument

FIXTURE = Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json"
SVG_NS = "{http://www.w3.org/2000/svg}"
EVIL = '<&"evil\'>\\n'


@pytest.fixture(scope="module")
def lab():
    return json.loads(FIXTURE.read_text())


def lab_trace(lab):
    """From the outside to db: reaches the host and the bridge, dies there."""
    host = lab["host"]
    db = next(c for c in lab["containers"] if c["name"] == "db")
    out = next(ns for ns in lab["namespaces"].values() if ns["name"].endswith("-out"))["id"]
    return {"verdict": "blocked", "blocked_at": 3, "summary": "no rule accepts it",
            "hops": [{"n": 1, "namespace": out, "interface": "eth0", "seen": True},
                     {"n": 2, "namespace": host, "interface": "eth0", "seen": True},
                     {"n": 3, "namespace": host, "interface": "br-2c95fb7b093b", "seen": True},
                     {"n": 4, "namespace": host, "interface": "veth6f813bc", "seen": False},
                     {"n": 5, "namespace": db["ns"], "interface": "eth0", "seen": False}]}


# --------------------------------------------------------------- small hand-made snapshots

def link(index, name, kind="veth", *, master=None, peer=None, up=True, state="UP", vxlan=None):
    out = {"index": index, "name": name, "kind": kind, "mac": f"02:00:00:00:00:{index:02x}", "mtu": 1500,
           "state": state, "flags": [], "up": up, "master": master, "peer": peer or {"ns": None, "index": None}}
    if vxlan:
        out["vxlan"] = vxlan
    return out


def namespace(ns_id, kind, name, links, addrs=()):
    return {"id": ns_id, "inode": 1, "kind": kind, "name": name, "label": name, "runtime": "", "container": "",
            "netns_names": [], "pids": [], "links": links,
            "addresses": [{"ifname": i, "address": a, "prefixlen": p, "scope": "global"} for i, a, p in addrs],
            "routes": [], "rules": [], "neighbours": [], "fdb": [], "sockets": [], "sysctls": {}, "nftables": [],
            "conntrack": [], "resolv_conf": None}


def container(cid, name, ns_id, net, ip, host_veth):
    return {"runtime": "netdiag", "id": cid, "name": name, "image": "busybox", "pid": 1, "ns": ns_id, "ports": [],
            "networks": {net: {"ip": ip, "prefix": 24, "mac": "02:42:0a:09:00:02", "host_veth": host_veth,
                               "interface": "eth0", "aliases": []}}}


def snapshot(namespaces, containers=(), networks=()):
    return {"schema": "netdiag.snapshot/1", "captured_at": "2026-01-01T00:00:00Z", "hostname": "h", "kernel": "6",
            "host": "ns-1", "namespaces": {n["id"]: n for n in namespaces}, "containers": list(containers),
            "networks": list(networks), "errors": []}


def edge_world():
    """A physical uplink, a vxlan on a bridge, a down veth to a container with a hostile name,
    a veth whose peer was not observed, and a plain netns plugged into the bridge."""
    host = namespace("ns-1", "host", "host", [
        link(1, "lo", "loopback", state="UNKNOWN"),
        link(2, "eth0", "device"),
        link(3, "br0", "bridge"),
        link(4, "vx42", "vxlan", master="br0",
             vxlan={"vni": 42, "group": "192.0.2.9", "local": "192.0.2.1", "port": 4789, "dev": "eth0", "learning": True}),
        link(5, "vethdown", master="br0", peer={"ns": "ns-2", "index": 2, "name": "eth0"}, up=False, state="DOWN"),
        link(6, "vethlost", master="br0", peer={"ns": None, "index": 9}),
        link(7, "vethns", master="br0", peer={"ns": "ns-3", "index": 2, "name": "eth0"}),
    ], [("eth0", "192.0.2.1", 24), ("br0", "10.9.0.1", 24)])
    evil = namespace("ns-2", "container", "x", [
        link(1, "lo", "loopback"),
        link(2, "eth0", peer={"ns": "ns-1", "index": 5, "name": "vethdown"}, state="LOWERLAYERDOWN")],
        [("eth0", "10.9.0.2", 24)])
    plain = namespace("ns-3", "netns", "plain", [link(2, "eth0", peer={"ns": "ns-1", "index": 7, "name": "vethns"})],
                      [("eth0", "10.9.0.3", 24)])
    return snapshot([host, evil, plain], [container("c" * 64, EVIL, "ns-2", "n1", "10.9.0.2", "vethdown")],
                    [{"runtime": "netdiag", "name": "n1", "driver": "bridge", "subnet": "10.9.0.0/24",
                      "gateway": "10.9.0.1", "bridge": "br0", "endpoints": {}}])


def crowd(n, bridges=3):
    """n containers spread over a few bridges."""
    links, addrs, nss, ctrs = [link(1, "lo", "loopback"), link(2, "eth0", "device")], [("eth0", "192.0.2.1", 24)], [], []
    for b in range(bridges):
        links.append(link(3 + b, f"br{b}", "bridge"))
    for i in range(n):
        b, veth = i % bridges, f"veth{i:04d}"
        links.append(link(100 + i, veth, master=f"br{b}", peer={"ns": f"ns-c{i}", "index": 2, "name": "eth0"}))
        nss.append(namespace(f"ns-c{i}", "container", f"app-{i}",
                             [link(1, "lo", "loopback"), link(2, "eth0", peer={"ns": "ns-1", "index": 100 + i, "name": veth})],
                             [("eth0", f"10.{b}.0.{i + 2}", 24)]))
        ctrs.append(container(f"{i:064x}", f"app-{i}", f"ns-c{i}", f"net{b}", f"10.{b}.0.{i + 2}", veth))
    return snapshot([namespace("ns-1", "host", "host", links, addrs)] + nss, ctrs)


def edges(g, kind):
    return {(e["source"], e["target"]) for e in g["edges"] if e["kind"] == kind}


def tree_text(snap, trace=None) -> str:
    console = Console(record=True, width=120)
    console.print(topo.render_tree(snap, trace=trace))
    return console.export_text()


def svg_root(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{SVG_NS}svg"
    return root


def svg_text(root: ET.Element) -> str:
    """All drawn text; tspans are separate words (they are spaced with dx, not with blanks)."""
    return " ".join(" ".join(t.itertext()) for t in root.iter(f"{SVG_NS}text"))


def wires(root: ET.Element, kind: str) -> list[ET.Element]:
    return [p for p in root.iter(f"{SVG_NS}path") if p.get("data-source") and kind in p.get("class").split()]


# --------------------------------------------------------------- graph

def test_every_container_eth0_is_paired_with_its_host_veth_on_its_bridge(lab):
    g = topo.graph(lab)
    host = lab["host"]
    bridge_of = {n["name"]: n["bridge"] for n in lab["networks"]}
    veths, members = edges(g, "veth"), edges(g, "bridge")
    for c in lab["containers"]:
        for net, e in c["networks"].items():
            host_end, ctr_end = f"{host}/{e['host_veth']}", f"{c['ns']}/{e['interface']}"
            assert (host_end, ctr_end) in veths, (c["name"], net)
            assert (host_end, f"{host}/{bridge_of[net]}") in members, (c["name"], net)
    assert len(veths) == 4  # three containers and the uplink to the outside


def test_bridge_memberships_come_from_master(lab):
    h = lab["host"]
    assert edges(topo.graph(lab), "bridge") == {
        (f"{h}/veth45a9c08", f"{h}/docker0"),
        (f"{h}/veth44faa61", f"{h}/br-2c95fb7b093b"),
        (f"{h}/veth6f813bc", f"{h}/br-2c95fb7b093b"),
    }


def test_uplink_is_the_host_veth_to_the_outside_namespace(lab):
    g = topo.graph(lab)
    uplinks = [n for n in g["nodes"] if n["kind"] == "uplink"]
    assert [n["id"] for n in uplinks] == [f"{lab['host']}/eth0"]
    outside = g["nodes"][[n["id"] for n in g["nodes"]].index(uplinks[0]["peer"].split("/")[0])]
    assert outside["ns_kind"] == "netns" and outside["label"].endswith("-out")
    assert uplinks[0]["addresses"] == ["203.0.113.2/24"]


def test_namespaces_are_groups_and_nodes_carry_labels(lab):
    g = topo.graph(lab)
    groups = {n["id"]: n for n in g["nodes"] if n["kind"] == "namespace"}
    assert set(groups) == set(lab["namespaces"])
    assert g["nodes"][0]["id"] == lab["host"]
    web = next(n for n in groups.values() if n["label"] == "web")
    assert web["container"]["image"] == "busybox"
    eth0 = next(n for n in g["nodes"] if n["id"] == f"{web['id']}/eth0")
    assert eth0["label"] == "eth0 172.17.0.2/16" and eth0["parent"] == web["id"]


def test_physical_uplink_vxlan_down_and_unknown_peer():
    g = topo.graph(edge_world())
    by_id = {n["id"]: n for n in g["nodes"]}
    assert by_id["ns-1/eth0"]["kind"] == "uplink" and by_id["ns-1/eth0"]["link_kind"] == "device"
    assert [n["id"] for n in g["nodes"] if n["kind"] == "uplink"] == ["ns-1/eth0"]
    assert edges(g, "underlay") == {("ns-1/vx42", "ns-1/eth0")}
    assert ("ns-1/vx42", "ns-1/br0") in edges(g, "bridge")
    assert by_id["ns-1/vx42"]["vxlan"]["vni"] == 42
    assert by_id["ns-1/vethdown"]["status"] == "DOWN" and by_id["ns-2/eth0"]["status"] == "NO-CARRIER"
    down = next(e for e in g["edges"] if e["kind"] == "veth" and e["source"] == "ns-1/vethdown")
    assert down["target"] == "ns-2/eth0" and down["down"]
    lost = by_id["ns-1/vethlost"]
    assert lost["peer"] is None and lost["peer_unknown"]
    assert not any("ns-1/vethlost" in (e["source"], e["target"]) for e in g["edges"] if e["kind"] == "veth")
    assert by_id["ns-2"]["label"] == EVIL  # the container's name, not the namespace's


def test_trace_overlay_marks_path_blocked_and_unreached(lab):
    h = lab["host"]
    g = topo.graph(lab, trace=lab_trace(lab))
    by_id = {n["id"]: n for n in g["nodes"]}
    assert by_id[f"{h}/eth0"]["trace"] == "path" and by_id[f"{h}/eth0"]["hops"] == [2]
    assert by_id[f"{h}/br-2c95fb7b093b"]["trace"] == "blocked"
    assert by_id[f"{h}/veth6f813bc"]["trace"] == "unreached"
    assert by_id[f"{h}/veth45a9c08"]["trace"] is None
    assert g["trace"]["blocked_node"] == f"{h}/br-2c95fb7b093b" and g["trace"]["missing"] == []
    uplink_pair = next(e for e in g["edges"] if e["kind"] == "veth" and e["source"] == f"{h}/eth0")
    assert uplink_pair["trace"] == "path"
    port = next(e for e in g["edges"] if e["source"] == f"{h}/veth6f813bc" and e["kind"] == "bridge")
    assert port["trace"] == "unreached"


def test_static_trace_without_probe_results(lab):
    """A reasoned trace has seen=None everywhere: hops before the dead one are the path, later ones not reached."""
    trace = lab_trace(lab)
    for hop in trace["hops"]:
        hop["seen"] = None
    trace["blocked_at"] = 2
    g = topo.graph(lab, trace=trace)
    states = {h["n"]: h["state"] for h in g["trace"]["hops"]}
    assert states == {1: "path", 2: "blocked", 3: "unreached", 4: "unreached", 5: "unreached"}
    assert g["trace"]["failed"] and g["trace"]["reason"] == "no rule accepts it"


def test_trace_hops_that_name_nothing_are_reported_not_fatal(lab):
    trace = {"verdict": "blocked", "blocked_at": 2,
             "hops": [{"n": 1, "namespace": "web", "interface": "eth0", "seen": True},
                      {"n": 2, "namespace": "ns-0", "interface": "eth9", "seen": True}]}
    g = topo.graph(lab, trace=trace)
    assert g["trace"]["missing"] == [2] and g["trace"]["blocked_node"] is None
    web = next(c["ns"] for c in lab["containers"] if c["name"] == "web")
    assert next(n for n in g["nodes"] if n["id"] == f"{web}/eth0")["trace"] == "path"  # found by name


# --------------------------------------------------------------- terminal tree

def test_tree_puts_containers_under_their_bridges_with_ips(lab):
    text = tree_text(lab)
    lines = text.splitlines()
    assert "labhost" in lines[0] and lab["host"] in lines[0]

    def at(needle):
        return next(i for i, ln in enumerate(lines) if needle in ln)

    docker0, back = at("bridge docker0"), at("bridge br-2c95fb7b093b")
    assert "172.17.0.1/16" in lines[docker0] and "10.50.0.1/24" in lines[back]
    assert docker0 < at("⇄ web") < back < at("⇄ api") and back < at("⇄ db")
    assert "veth45a9c08" in lines[at("⇄ web")] and "172.17.0.2/16" in lines[at("⇄ web")]
    assert "02:42:ac:11:00:02" in lines[at("⇄ web")]
    assert "veth44faa61" in lines[at("⇄ api")] and "10.50.0.2/24" in lines[at("⇄ api")]
    assert "veth6f813bc" in lines[at("⇄ db")] and "10.50.0.3/24" in lines[at("⇄ db")]
    assert "uplink eth0 203.0.113.2/24" in lines[at("uplink")] and "203.0.113.1/24" in lines[at("uplink")]


def test_tree_lists_namespaces_on_no_bridge(lab):
    lines = tree_text(lab).splitlines()
    start = next(i for i, ln in enumerate(lines) if "namespaces on no bridge" in ln)
    rest = "\n".join(lines[start:])
    assert "ndlab-0b486d-out (netns)" in rest and "eth0 203.0.113.1/24" in rest and "⇄ host" in rest
    assert "plain-0b486d (netns)" in rest and "lo DOWN" in rest
    assert "web" not in rest  # containers hang off bridges above


def test_tree_shows_vxlan_down_unknown_peer_and_hostile_names_verbatim():
    text = tree_text(edge_world())
    assert "VNI 42" in text and "remote 192.0.2.9" in text and "dev eth0" in text
    assert re.search(r"vethdown DOWN\s+⇄ " + re.escape(EVIL), text)
    assert "vethlost" in text and "peer not observed" in text


def test_tree_down_is_red():
    console = Console(record=True, width=120, force_terminal=True, color_system="standard", file=io.StringIO())
    console.print(topo.render_tree(edge_world()))
    assert re.search(r"\x1b\[[\d;]*31m DOWN", console.export_text(styles=True))


def test_tree_trace_marks_hops_and_the_dead_one(lab):
    text = tree_text(lab, lab_trace(lab))
    assert "trace: blocked at hop 3 (no rule accepts it)" in text
    bridge_line = next(ln for ln in text.splitlines() if "bridge br-2c95fb7b093b" in ln)
    assert "✗ hop 3 failed" in bridge_line
    assert "● hop 2 seen" in next(ln for ln in text.splitlines() if "uplink eth0" in ln)
    assert "○ hop 4 not reached" in text and "○ hop 5 not reached" in text


# --------------------------------------------------------------- DOT / SVG / HTML

def test_dot_has_clusters_and_escapes():
    dot = topo.render_dot(edge_world())
    assert dot.startswith("graph netdiag {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    assert dot.count("subgraph cluster_") == 3
    assert '"ns-1/vethdown" -- "ns-2/eth0"' in dot
    assert r'label="<&\"evil' + "'>" + r"\\n (netdiag container)" in dot  # quote escaped, user backslash kept literal
    for ln in dot.splitlines():  # every double quote inside a line is paired or escaped
        assert len(re.findall(r'(?<!\\)"', ln.replace("\\\\", ""))) % 2 == 0, ln


def test_dot_of_lab_connects_veths(lab):
    dot = topo.render_dot(lab, trace=lab_trace(lab))
    h = lab["host"]
    assert f'"{h}/veth45a9c08" -- "{next(c["ns"] for c in lab["containers"] if c["name"] == "web")}/eth0"' in dot
    assert "✗ hop 3 failed" in dot


def test_svg_is_well_formed_and_labelled(lab):
    root = svg_root(topo.render_svg(lab))
    text = svg_text(root)
    for needle in ("labhost", "web", "api", "db", "docker0", "br-2c95fb7b093b", "172.17.0.2/16", "10.50.0.3/24",
                   "203.0.113.2/24", "uplink", "ndlab-0b486d-out", "plain-0b486d", "DOWN"):
        assert needle in text, needle
    assert len(wires(root, "veth")) == 4 and len(wires(root, "bridge")) == 3
    assert float(root.get("width")) < 1600 and float(root.get("height")) < 600


def test_svg_lays_out_outside_host_containers_left_to_right(lab):
    root = svg_root(topo.render_svg(lab))
    x = {g.get("data-ns"): float(g.find(f"{SVG_NS}rect").get("x")) for g in root.iter(f"{SVG_NS}g") if g.get("data-ns")}
    out = next(ns["id"] for ns in lab["namespaces"].values() if ns["name"].endswith("-out"))
    assert x[out] < x[lab["host"]] < min(x[c["ns"]] for c in lab["containers"])


def test_svg_escapes_and_marks_down_and_vxlan():
    svg = topo.render_svg(edge_world())
    root = svg_root(svg)
    assert EVIL in svg_text(root)
    assert '<&"evil' not in svg
    down = [p for p in wires(root, "veth") if "down" in p.get("class").split()]
    assert [p.get("data-source") for p in down] == ["ns-1/vethdown"]
    assert "VNI 42" in svg_text(root) and "network" in svg_text(root)  # the world beyond the physical uplink


def test_svg_trace_marks_blocked_hop(lab):
    root = svg_root(topo.render_svg(lab, trace=lab_trace(lab)))
    rows = {g.get("data-node"): g for g in root.iter(f"{SVG_NS}g") if g.get("data-node")}
    blocked = rows[f"{lab['host']}/br-2c95fb7b093b"]
    assert blocked.get("data-trace") == "blocked" and "hop-blocked" in blocked.get("class")
    assert blocked.get("data-hop") == "3" and "✗ hop 3 failed" in "".join(blocked.itertext())
    assert rows[f"{lab['host']}/eth0"].get("data-trace") == "path"
    assert [p.get("data-source") for p in wires(root, "trace-path")] == [f"{lab['host']}/eth0"]


def test_svg_scales_to_fifty_containers():
    snap = crowd(50)
    root = svg_root(topo.render_svg(snap))
    text = svg_text(root)
    assert all(f"app-{i} " in text + " " for i in range(50))
    assert float(root.get("height")) < 2500 and float(root.get("width")) < 1600
    assert len(wires(root, "veth")) == 50


def test_html_is_self_contained_and_embeds_the_svg(lab):
    page = topo.render_html(lab, trace=lab_trace(lab))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    start, end = page.index("<svg"), page.index("</svg>") + len("</svg>")
    svg_root(page[start:end])
    assert page[start:end] == topo.render_svg(lab, trace=lab_trace(lab)).strip()
    for c in lab["containers"]:
        assert f"<td>{c['name']}</td>" in page
    assert "<td>br-2c95fb7b093b</td>" in page and "0.0.0.0:8080→80/tcp" in page
    assert not re.search(r"\b(src|href)=|url\(|@import|<script", page)


def test_html_escapes_names():
    page = topo.render_html(edge_world())
    assert '<&"evil' not in page and "&lt;&amp;&quot;evil" in page


@pytest.mark.parametrize("render", [topo.render_svg, topo.render_dot, topo.render_html])
def test_output_is_deterministic(lab, render):
    shuffled = copy.deepcopy(lab)
    shuffled["namespaces"] = dict(reversed(list(shuffled["namespaces"].items())))
    shuffled["containers"].reverse()
    assert render(lab) == render(copy.deepcopy(lab)) == render(shuffled)
    assert render(lab, lab_trace(lab)) == render(lab, lab_trace(lab))


def test_tree_is_deterministic(lab):
    assert tree_text(lab) == tree_text(copy.deepcopy(lab))


# --------------------------------------------------------------- write

@pytest.mark.parametrize("suffix,start", [(".svg", "<svg"), (".html", "<!DOCTYPE html>"), (".dot", "graph netdiag {"),
                                          (".SVG", "<svg")])
def test_write_picks_format_by_suffix(lab, tmp_path, suffix, start):
    path = tmp_path / f"topo{suffix}"
    topo.write(lab, str(path), trace=lab_trace(lab))
    assert path.read_text(encoding="utf-8").startswith(start)


@pytest.mark.parametrize("name", ["topo.png", "topo"])
def test_write_refuses_unknown_suffix(lab, tmp_path, name):
    with pytest.raises(InvalidArgument) as e:
        topo.write(lab, str(tmp_path / name))
    assert ".svg, .html or .dot" in str(e.value) and e.value.exit_code == 2
    assert not (tmp_path / name).exists()
