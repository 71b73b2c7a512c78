"""The host model and the inspect view, over a snapshot taken in a lab (no root, no kernel)."""
import json
from pathlib import Path

import pytest

from netdiag.model import Model
from netdiag.views import inspect_view
from runtime.errors import InvalidArgument, NotFound

FIXTURE = Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json"


@pytest.fixture(scope="module")
def model():
    return Model.load(str(FIXTURE))


def test_targets_resolve_to_their_namespaces(model):
    web = model.resolve("web")
    assert web["kind"] == "container" and web["name"] == "web"
    cid = next(c["id"] for c in model.containers() if c["name"] == "api")
    assert model.resolve(cid[:8])["name"] == "api"
    assert model.resolve("host") is model.host
    plain = next(n for ns in model.namespaces.values() for n in ns["netns_names"] if n.startswith("plain"))
    assert model.resolve(f"ns:{plain}")["kind"] == "netns"
    assert model.resolve("10.50.0.3")["name"] == "db"
    assert model.resolve(f"pid:{web['pids'][0]}") is web
    for bad in ("nosuch", "ns:nosuch", "192.0.2.99"):
        with pytest.raises(NotFound):
            model.resolve(bad)
    # a name that is no target is bad input (exit 2, not "diagnosed: not delivered"), with a suggestion
    with pytest.raises(InvalidArgument) as e:
        model.resolve("wbe")
    assert e.value.exit_code == 2 and "did you mean 'web'?" in str(e.value).lower()
    with pytest.raises(InvalidArgument, match="(?i)did you mean"):
        model.resolve(f"ns:{plain[:-1]}")
    with pytest.raises(InvalidArgument):
        model.resolve("pid:abc")


def test_every_container_veth_is_matched_to_its_host_end_on_the_right_bridge(model):
    bridges = {n["name"]: n["bridge"] for n in model.snap["networks"]}
    for c in model.containers():
        ns = model.namespaces[c["ns"]]
        for net, ep in c["networks"].items():
            eth = model.link(ns, ep["interface"])
            other, peer = model.peer(ns, eth)
            assert other is model.host and peer["name"] == ep["host_veth"]
            assert peer["master"] == bridges[net]
            back = model.peer(other, peer)  # and the pairing is symmetric
            assert back[0] is ns and back[1]["name"] == ep["interface"]


def test_inspect_view_shows_host_side_ports_rules_and_findings(model):
    v = inspect_view.view(model, "web")
    eth0 = next(i for i in v["interfaces"] if i["name"] == "eth0")
    assert eth0["addresses"] == ["172.17.0.2/16"] and eth0["peer"]["namespace"] == "host"
    (side,) = v["host_side"]
    assert side["bridge"] == "docker0" and side["bridge_addresses"] == ["172.17.0.1/16"]
    assert [(p["host_port"], p["ctr_port"]) for p in side["published_ports"]] == [(8080, 80)]
    assert any("dnat" in r["rule"] and "172.17.0.2" in r["rule"] for r in side["nft_rules"])
    assert any(r["dst"] == "default" and r["gateway"] == "172.17.0.1" for r in v["routes"])
    api = inspect_view.view(model, "api")
    assert any("127.0.0.1:9000" in f and "0.0.0.0:9000" in f for f in api["findings"])
    assert "nameserver 10.50.0.1" in api["resolv_conf"]
    json.dumps(v)  # the --json output is plain JSON


def test_findings_for_down_links_and_missing_routes(model):
    snap = json.loads(FIXTURE.read_text())
    m = Model(snap)
    ns = m.resolve("db")
    for link in ns["links"]:
        if link["name"] == "eth0":
            link["up"] = False
    ns["routes"] = [r for r in ns["routes"] if r["dst"] != "default"]
    host_veth = m.peer(ns, m.link(ns, "eth0"))[1]
    host_veth["up"] = False
    findings = inspect_view.view(m, "db")["findings"]
    assert any("eth0 is DOWN" in f for f in findings)
    assert any("no default route" in f for f in findings)
    assert any(host_veth["name"] in f and "DOWN" in f for f in findings)


def test_snapshot_of_another_format_is_refused(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"schema": "something/9"}))
    with pytest.raises(InvalidArgument, match="s.json: unsupported snapshot format"):
        Model.load(str(bad))
    with pytest.raises(InvalidArgument, match="missing.json: No such file or directory"):
        Model.load(str(tmp_path / "missing.json"))


