"""`--verify-fix`'s pure parts (netdiag/verify.py): a printed fix command rewritten to a replica's
namespaces, what cannot run there refused with the reason, nft handles mapped by their place in the
chain, and the one line that says which proof was made."""
import pytest

from netdiag import verify
from netdiag.reason.result import Diagnosis, FixClaim
from netdiag.verify import Names, NotVerifiable

NAMES = Names(host=("h", "vf1-host"), netns={"ndlab-1-c": ("c", "vf1-c"), "ndlab-1-s": ("s", "vf1-s"),
                                             "ndlab-1": ("h", "vf1-host")},
              pids={4242: ("w", "vf1-web")})


def shown(command):
    return [s.shown() for s in verify.steps(command, NAMES)]


def test_each_namespace_is_mapped_to_its_replica():
    assert shown("ip netns exec ndlab-1-s nft insert rule inet f forward_filter ip daddr 10.1.2.3 accept") == \
        ["ip netns exec vf1-s nft insert rule inet f forward_filter ip daddr 10.1.2.3 accept"]
    assert shown("nsenter -t 4242 -n ip route add default via 10.61.0.1 dev eth0") == \
        ["ip netns exec vf1-web ip route add default via 10.61.0.1 dev eth0"]
    assert shown("nsenter --net=/proc/4242/ns/net ip link set eth0 up") == ["ip netns exec vf1-web ip link set eth0 up"]
    assert shown("ip -n ndlab-1-c route add default via 10.1.1.1") == ["ip netns exec vf1-c ip route add default via 10.1.1.1"]


def test_a_bare_command_runs_in_the_replicas_host_and_compound_commands_keep_their_order():
    steps = verify.steps("iptables -I DOCKER-USER -i br1 -o br1 -j ACCEPT && ip netns exec ndlab-1-c sysctl -w "
                         "net.ipv4.conf.all.rp_filter=2 ; sudo nft 'add rule ip t c accept'", NAMES)
    assert [(s.netns, s.argv[0], s.then) for s in steps] == [("vf1-host", "iptables", "&&"), ("vf1-c", "sysctl", ";"),
                                                             ("vf1-host", "nft", "&&")]
    assert steps[2].argv == ["nft", "add rule ip t c accept"]  # quoted words stay one word


def test_the_advice_after_a_comment_is_not_a_command():
    assert shown("ip link set vc12 up  # the host's end of the veth") == ["ip netns exec vf1-host ip link set vc12 up"]


@pytest.mark.parametrize("command,why", [
    ("netdiag network connect appnet web", "netdiag's state"),
    ("docker rm -f web && docker run -d --name web -p 8080:80 nginx", "Docker's state"),
    ("ip netns exec other-ns ip route add default via 10.0.0.1", "other-ns, which the replica does not rebuild"),
    ("nsenter -t 99 -n ip link set eth0 up", "process 99"),
    ("nsenter -t 4242 -n -m ip link set eth0 up", "more than a network namespace"),
    ("sysctl -w kernel.panic=1", "not a network namespace's setting"),
    ("ip link set eth0 netns ndlab-1-s", "reaches other namespaces"),
    ("ip -4 -n ndlab-1-s route add default via 10.0.0.1", "reaches other namespaces"),
    ("curl http://example.com", "not one of the kernel tools"),
    ("ip route add default via 10.0.0.1 | tee x", "shell syntax"),
    ("ip route add default via 10.0.0.1 > /tmp/x", "shell syntax"),
    ("ip route add default via $GW", "expansion"),
    ("ip route add default via 10.0.0.1 || true", "shell syntax"),
    ("ip netns exec ndlab-1-s sh -c 'ip route add default via 10.0.0.1'", "not one of the kernel tools"),
    ("FOO=1 ip link set eth0 up", "environment variable"),
    ("nft insert rule ip t c position 5 accept", "position"),
])
def test_what_cannot_run_on_a_replica_is_refused_with_the_reason(command, why):
    with pytest.raises(NotVerifiable, match=why):
        verify.steps(command, NAMES)


def test_nft_handles_are_mapped_by_their_place_in_the_chain():
    step, = verify.steps("ip netns exec ndlab-1-s nft delete rule inet f forward_filter handle 7", NAMES)
    assert step.argv[step.nft_handle] == "7" and verify.nft_chain_of(step.argv) == ("inet", "f", "forward_filter")
    assert verify.nft_chain_of(["nft", "delete", "rule", "filter", "FORWARD", "handle", "3"]) == ("ip", "filter", "FORWARD")
    assert verify.map_handle([2, 7, 9], [4, 5, 6], 7) == 5
    assert verify.map_handle([2, 7, 9], [4, 5], 7) is None  # the chains differ: no guess
    assert verify.map_handle([2, 9], [4, 5], 7) is None
    ruleset = [{"table": {"family": "inet", "name": "f"}}, {"rule": {"family": "inet", "table": "f", "chain": "x", "handle": 3}},
               {"rule": {"family": "inet", "table": "f", "chain": "y", "handle": 4}},
               {"rule": {"family": "inet", "table": "f", "chain": "x", "handle": 5}}]
    assert verify.chain_handles(ruleset, "inet", "f", "x") == [3, 5]


def test_the_names_of_a_rebuilt_world():
    snap = {"host": "h", "namespaces": {"h": {"kind": "host", "netns_names": ["ndlab-1"]},
                                        "c": {"kind": "netns", "netns_names": ["ndlab-1-c"]},
                                        "w": {"kind": "container", "pids": [4242, 4243]}}}
    names = verify.names_for(snap, {"namespaces": {"h": "vf1-host", "c": "vf1-c", "w": "vf1-web"}})
    assert names.host == ("h", "vf1-host") and names.netns["ndlab-1-c"] == ("c", "vf1-c")
    assert names.pids[4243] == ("w", "vf1-web") and names.netns["ndlab-1"] == ("h", "vf1-host")


def test_the_proof_line_says_which_proof_was_made():
    both = {"checked": True, "delivers": True, "detail": "with this fix the static path delivers, request and reply"}
    assert verify.proof(FixClaim(command=None)) is None
    assert verify.proof(FixClaim.from_json({"fix_command": "x", "fix_check": both})) == \
        "checked on the model (both directions) (not on a replica: not tried (use --verify-fix))"
    assert verify.proof(FixClaim.from_json({"fix_command": "x", "fix_check": both, "fix_verified": {"replica": True, "detail": "ok"}})) == \
        "checked on the model (both directions) and verified on a replica"
    unchecked = {"checked": False, "delivers": None, "detail": "the model cannot express this change"}
    assert verify.proof(FixClaim.from_json({"fix_command": "x", "fix_check": unchecked, "fix_verified": {"replica": True, "detail": "ok"}})) == \
        "verified on a replica (not on the model: the model cannot express this change)"
    assert verify.proof(FixClaim.from_json({"fix_command": "x", "fix_check": unchecked,
                         "fix_verified": {"replica": None, "detail": "not verifiable on a replica: 'docker ...'"}})) == \
        "no proof: not on the model: the model cannot express this change; not on a replica: not verifiable on a replica: 'docker ...'"
    # an owner-level command whose kernel change ran on the replica instead: the line says the command itself did not
    kernel = {"replica": True, "detail": "ok", "kernel_equivalent": {
        "command": "netdiag network rm -f n && ...", "ran_instead": "nft delete rule bridge netdiag forward handle 3",
        "why": "the command itself is 'netdiag ...' acts through netdiag's state (its networks and containers), which the "
               "replica (plain namespaces) does not have"}}
    line = verify.proof(FixClaim.from_json({"fix_command": "x", "fix_check": both, "fix_verified": kernel}))
    assert line.startswith("checked on the model (both directions) and its kernel change verified on a replica (the command "
                           "itself, 'netdiag ...' acts through netdiag's state"), line
    assert "was not run there" in line and " and verified on a replica" not in line


def test_verify_says_why_without_a_command_or_root(monkeypatch):
    assert verify.verify(None, Diagnosis("blocked"))["replica"] is None
    monkeypatch.setattr(verify.os, "geteuid", lambda: 1000)
    r = verify.verify(None, Diagnosis.from_json({"verdict": "blocked", "fix_command": "ip link set eth0 up",
                                              "hops": [{"n": 1, "namespace": "h"}], "dst_ip": "10.0.0.1"}))
    assert r == {"replica": None, "detail": "a replica needs root (it builds network namespaces)"}


def test_the_replicas_world_and_names_from_a_snapshot():
    """Over the lab fixture: the host, its containers and their veth peers are rebuilt; a fix for a
    container's namespace (nsenter -t PID -n) lands in that container's replica."""
    import copy
    import json
    from pathlib import Path

    from netdiag.snapshot_model import Model
    from netdiag.scenario import replay_plan

    fixture = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())
    model = Model(copy.deepcopy(fixture))
    snap = verify.world_snapshot(model)
    assert snap["host"] in snap["namespaces"] and "probes" not in snap
    containers = [i for i, ns in fixture["namespaces"].items() if ns.get("kind") == "container"]
    assert containers and set(containers) <= set(snap["namespaces"])
    plan = replay_plan.plan(snap, "vf1")
    names = verify.names_for(snap, {"namespaces": plan["namespaces"]})
    ns_id = containers[0]
    pid = fixture["namespaces"][ns_id]["pids"][0]
    step, = verify.steps(f"nsenter -t {pid} -n ip link set eth0 up", names)
    assert step.netns == plan["namespaces"][ns_id] and step.netns.startswith("vf1-") and step.ns_id == ns_id
    assert verify.steps("sysctl -w net.ipv4.ip_forward=1", names)[0].netns == plan["host"]


def test_the_replica_of_a_diagnosis_holds_its_path_and_what_the_fix_names_only():
    """api -> db on network back: the host, api and db are rebuilt; web (another network, off the
    path) is neither rebuilt nor a stub, and the host's veth to it is left out with its routes.
    A fix that names web's namespace brings it back. Without a model check of the fix (where the
    fixed path goes is unknown) the whole world is rebuilt."""
    import copy
    import json
    from pathlib import Path

    from netdiag.snapshot_model import Model
    from netdiag.reason.static_trace import run_static
    from netdiag.scenario import replay_plan

    fixture = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())
    model = Model(copy.deepcopy(fixture))
    by_name = {ns["name"]: i for i, ns in fixture["namespaces"].items()}
    result = run_static(model, "api", "db", port=5432)[0]
    assert verify.world_snapshot(model, result)["namespaces"].keys() == verify.world_snapshot(model)["namespaces"].keys()
    # where the fixed path goes, as the model check retraced it (here: the same path)
    result.fix.check = {"checked": True, "delivers": True, "detail": "",
                        "after": {"namespaces": [h.namespace for h in result.hops]}}
    snap = verify.world_snapshot(model, result)
    assert set(snap["namespaces"]) == {snap["host"], by_name["api"], by_name["db"]}
    full = verify.world_snapshot(model)
    assert by_name["web"] in full["namespaces"] and len(full["namespaces"]) > len(snap["namespaces"])
    web_veth = next(e["host_veth"] for n in fixture["networks"] for e in n["endpoints"].values() if e["name"] == "web")
    host = snap["namespaces"][snap["host"]]
    assert web_veth not in {x["name"] for x in host["links"]} and all(r.get("dev") != web_veth for r in host["routes"])
    plan = replay_plan.plan(snap, "vf1")
    assert not any(web_veth in v for v in plan["stubs"].values())  # no stub stands in for the left-out veth
    pid = fixture["namespaces"][by_name["web"]]["pids"][0]
    named = verify.world_snapshot(model, result, f"nsenter -t {pid} -n ip link set eth0 up")
    assert by_name["web"] in named["namespaces"]


def test_a_path_across_hosts_is_not_verified_on_a_one_host_replica():
    """A replica of this host cannot hold the far host's containers: it would say the fix fails
    while the fix works (found by the overlay fault world)."""
    from netdiag import verify

    result = Diagnosis.from_json({"verdict": "blocked", "fix_command": "bridge fdb append 02:42:0a:00:00:03 dev vx-1 dst 10.99.0.2",
                                  "dst_ip": "10.0.0.3", "hops": [{"n": 1, "namespace": "ns-1", "kind": "veth"},
                                                                 {"n": 2, "namespace": "ns-2", "kind": "vxlan"}]})
    out = verify.verify(model=None, result=result)
    assert out["replica"] is None and "crosses hosts over VXLAN" in out["detail"]
