"""ICC_DISABLED's fix check applies what the printed command does: the network re-created with icc
on, its rules as its driver plans them (netdiag's renderer; Docker's setIcc), never "the rule
that matched, removed by hand"."""
import copy
import json
from pathlib import Path

import pytest

from netdiag import driver_plan
from netdiag.diagnose import diagnose
from netdiag.snapshot_model import Model
from netdiag.reason.static_trace import run_static

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


@pytest.fixture
def model():
    m = Model(copy.deepcopy(FIXTURE))
    back = next(n for n in m.snap["networks"] if n["name"] == "back")
    back["options"] = {"com.docker.network.bridge.enable_icc": "false"}
    h = m.namespaces[m.snap["host"]]
    h.setdefault("sysctls", {})["net.bridge.bridge-nf-call-iptables"] = "1"
    name = f"ports_{back['id'][:12]}"
    veths = sorted(e["host_veth"] for e in back["endpoints"].values())
    # what netdiag's driver installs for icc off (runtime/networks/firewall.py), as nft -j lists it
    h["nftables"]["nftables"] += [
        {"table": {"family": "bridge", "name": "netdiag", "handle": 90}},
        {"set": {"family": "bridge", "table": "netdiag", "name": name, "type": "ifname", "handle": 91, "elem": veths}},
        {"chain": {"family": "bridge", "table": "netdiag", "name": "forward", "handle": 92, "type": "filter",
                   "hook": "forward", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "bridge", "table": "netdiag", "chain": "forward", "handle": 93, "comment": f"icc off on {back['bridge']}",
                  "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": f"@{name}"}},
                           {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": f"@{name}"}}, {"drop": None}]}}]
    return m


def test_icc_fix_is_the_recreation_checked_by_the_drivers_plan(model):
    _, fix = run_static(model, "api", "db", port=5432)
    assert fix.apply is None and fix.owner_change[0] == "icc_on"  # the reasoning names the change, the pipeline plans it
    r = diagnose(model, "api", "db", port=5432, live=False)
    assert (r.verdict, r.cause) == ("blocked", "ICC_DISABLED"), r.summary
    assert r.fix.command.startswith("netdiag network rm -f back && netdiag network create --subnet 10.50.0.0/24")
    assert "enable_icc" not in r.fix.command
    assert r.fix.check["checked"] and r.fix.check["delivers"], r.fix.check
    assert r.fix.kernel == "nft delete rule bridge netdiag forward handle 93"


def test_a_users_rule_is_not_what_the_recreation_removes(model):
    """A user's own `iifname BR oifname BR drop` looks like the icc rule; re-creating the network
    does not remove it, so the check must not pass (it did when the matched rule was removed)."""
    h = model.namespaces[model.snap["host"]]
    h["nftables"]["nftables"] = [i for i in h["nftables"]["nftables"] if i.get("rule", {}).get("family") != "bridge"]
    bridge = next(n["bridge"] for n in model.snap["networks"] if n["name"] == "back")
    h["nftables"]["nftables"] += [
        {"chain": {"family": "ip", "table": "mine", "name": "fw", "type": "filter", "hook": "forward", "prio": -10, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "mine", "chain": "fw", "handle": 9, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": bridge}},
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": bridge}}, {"drop": None}]}}]
    r = diagnose(model, "api", "db", port=5432, live=False)
    assert r.cause == "ICC_DISABLED"
    assert r.fix.check["checked"] and r.fix.check["delivers"] is False, r.fix.check
    assert r.fix.kernel is None and "fix_kernel" not in r.to_json()


def test_dockers_icc_plan_turns_the_drop_into_an_accept():
    rule = {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 12, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "br-x"}},
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "br-x"}}, {"counter": None}, {"drop": None}]}
    host = {"id": "h", "kind": "host", "nftables": {"nftables": [{"rule": rule}]}}
    apply, kernel = driver_plan.icc_on(host, {"runtime": "docker", "bridge": "br-x", "name": "n"})
    assert kernel == "nft replace rule ip filter FORWARD handle 12 iifname br-x oifname br-x counter accept"

    class Ov:
        def __init__(self):
            self.ns = copy.deepcopy(host)

        def edit(self, ns_id):
            return self.ns
    ov = Ov()
    apply(None, ov)
    (item,) = ov.ns["nftables"]["nftables"]
    assert item["rule"]["expr"][-1] == {"accept": None} and {"drop": None} not in item["rule"]["expr"]


def test_netdiag_plan_has_the_icc_rule_only_with_icc_off():
    net = {"id": "abcdef123456", "bridge": "br-abcdef123456", "subnet": "10.9.0.0/24", "gateway": "10.9.0.1",
           "options": {}, "endpoints": {"x": {"host_veth": "vethA"}, "y": {"host_veth": "vethB"}}}
    off, on = driver_plan.netdiag_plan(net, False), driver_plan.netdiag_plan(net, True)
    assert off[("bridge", "netdiag", "forward")] == ["iifname @ports_abcdef123456 oifname @ports_abcdef123456 drop"]
    assert ("bridge", "netdiag", "forward") not in on
    assert off[("ip", "netdiag", "forward")] == on[("ip", "netdiag", "forward")]
