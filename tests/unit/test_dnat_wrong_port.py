"""A DNAT rule that sends a published address to a port where nothing listens (no runtime's
published port: a plain rule): NO_LISTENER at the server, and the fix changes that rule's port,
in place, to the port the server listens on, checked on the model. No root."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.snapshot_model import Model
from netdiag.diagnose import diagnose

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())
HOST_IP, WEB_IP = "203.0.113.2", "172.17.0.2"


def with_dnat(dport: int, to_port: int, extra_listeners=()) -> Model:
    """The fixture's host with a table of its own that DNATs HOST_IP:dport to web:to_port."""
    snap = copy.deepcopy(FIXTURE)
    namespaces = snap["namespaces"].values()
    host = next(ns for ns in namespaces if ns.get("kind") == "host")
    host["nftables"]["nftables"] += [
        {"table": {"family": "ip", "name": "publish", "handle": 90}},
        {"chain": {"family": "ip", "table": "publish", "name": "pre", "handle": 1, "type": "nat", "hook": "prerouting",
                   "prio": -100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "publish", "chain": "pre", "handle": 2, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": HOST_IP}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": dport}},
            {"counter": {"packets": 0, "bytes": 0}}, {"dnat": {"addr": WEB_IP, "port": to_port}}]}}]
    web = next(ns for ns in namespaces if ns.get("label", "").startswith("web"))
    for port in extra_listeners:
        web["sockets"].append({**web["sockets"][0], "port": port})
    return Model(snap)


def outside(m):
    return "ns:" + next(n for ns in m.namespaces.values() for n in ns["netns_names"] if n.endswith("-out"))


@pytest.mark.parametrize("listeners, port", [((), 80), ((8443,), 8443)])
def test_a_dnat_to_the_wrong_port_is_fixed_by_changing_that_rule(listeners, port):
    """The server's only port, or the published port itself where the server listens there too."""
    m = with_dnat(8443, 8444, listeners)
    r = diagnose(m, outside(m), HOST_IP, port=8443, live=False)
    assert (r.verdict, r.cause) == ("blocked", "NO_LISTENER"), r.summary
    assert r.hops[r.blocked_at - 1].label.startswith("web") and "DNAT" in r.summary
    assert r.fix.command == (f"nft replace rule ip publish pre handle 2 ip daddr {HOST_IP} tcp dport 8443 counter "
                                f"dnat to {WEB_IP}:{port}")
    assert r.fix.check["delivers"], r.fix.check


def test_which_port_is_meant_is_not_guessed():
    m = with_dnat(8443, 8444, (8000,))
    r = diagnose(m, outside(m), HOST_IP, port=8443, live=False)
    assert r.cause == "NO_LISTENER" and not r.fix.command
    assert r.fix.text.startswith("manual: change the DNAT rule") and "ip publish pre" in r.fix.text


def test_an_iptables_dnat_rule_is_changed_in_place_by_its_position_in_the_chain():
    from netdiag.reason import fixes
    from netdiag.reason.nftables.evaluate import Step

    def rule(handle, port):
        return {"rule": {"family": "ip", "table": "nat", "chain": "PREROUTING", "handle": handle,
                         "expr": [{"dnat": {"addr": WEB_IP, "port": port}}]}}
    host = {"id": "h", "kind": "host", "nftables": {"nftables": [rule(4, 9000), rule(7, 8444)]}}
    step = Step("ip", "nat", "PREROUTING", 7, f"dnat to {WEB_IP}:8444", "", "dnat",
                f"-A PREROUTING -d {HOST_IP}/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination {WEB_IP}:8444")
    command, _ = fixes.retarget_dnat(host, step, 80)
    assert command == (f"iptables -t nat -R PREROUTING 2 -d {HOST_IP}/32 -p tcp -m tcp --dport 8443 -j DNAT "
                       f"--to-destination {WEB_IP}:80")
