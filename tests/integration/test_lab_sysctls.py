"""Every lab namespace starts from the lab's own sysctls (netdiag/worlds/host.py FRESH_SYSCTLS and
BRIDGE_NF_SYSCTLS), never the machine's. A new namespace inherits the root namespace's IPv4
conf/all, conf/default and ip_forward; rather than change the root namespace, each test poisons
every namespace the moment it is made with what a Docker host passes on (forwarding on) and what
other machines set (rp_filter, route_localnet, proxy_arp, bridge netfilter off), and the lab must
still come out with its explicit values: a lab, a cluster lab, a replayed world."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from netdiag.worlds import BRIDGE_NF_SYSCTLS, FRESH_SYSCTLS, ClusterLab, Lab
from runtime.kernel import ns, sysctl

pytestmark = pytest.mark.integration

POISON = (("net/ipv4/ip_forward", "1"),  # also sets conf/all, conf/default and lo's forwarding
          *((f"net/ipv4/conf/{dev}/{key}", value) for dev in ("all", "default", "lo")
            for key, value in (("rp_filter", "2"), ("route_localnet", "1"), ("proxy_arp", "1"))),
          *((key, "0") for key, _ in BRIDGE_NF_SYSCTLS))
EXPECTED = dict(FRESH_SYSCTLS)


@pytest.fixture
def poisoned(monkeypatch):
    """ns.create makes namespaces that start like a Docker host's on a machine with other defaults."""
    real = ns.create

    def create(name: str) -> str:
        path = real(name)
        with ns.netns(path):
            for key, value in POISON:
                if sysctl.read(key) is not None:
                    sysctl.write(key, value)
            assert sysctl.read("net/ipv4/conf/all/forwarding") == "1"  # the poison took
        return path

    monkeypatch.setattr(ns, "create", create)


def values(path: str, keys) -> dict:
    with ns.netns(path):
        return {k: sysctl.read(k) for k in keys}


def expected_here(path: str) -> dict:
    """The lab's values; bridge netfilter's where br_netfilter exists (it cannot be loaded from a lab)."""
    with ns.netns(path):
        bridge = {k: v for k, v in BRIDGE_NF_SYSCTLS if sysctl.read(k) is not None}
    return {**EXPECTED, **bridge}


def assert_fresh(path: str, interfaces=("eth0",)) -> None:
    want = expected_here(path)
    assert values(path, want) == want, path
    # interfaces made after the namespace copy conf/default: the lab's values, not the machine's
    per_if = {f"net/ipv4/conf/{dev}/{key}": "0" for dev in interfaces for key in ("forwarding", "rp_filter", "route_localnet", "proxy_arp")}
    assert values(path, per_if) == per_if, path


def test_a_lab_starts_with_its_own_sysctls_whatever_the_machine_has(poisoned, tmp_path):
    lab = Lab(state_dir=tmp_path / "nd")
    try:
        lab.create()
        for name in (lab.name, lab.outside):
            assert_fresh(f"/run/netns/{name}")
        with ns.netns(f"/run/netns/{lab.name}"):
            assert sysctl.read("net/bridge/bridge-nf-call-iptables") in ("1", None)  # what a Docker host has
    finally:
        lab.destroy()
    assert not lab.leaks()


def test_netdiags_runtime_turns_forwarding_on_when_it_needs_it(lab):
    path = f"/run/netns/{lab.name}"
    assert values(path, ["net/ipv4/ip_forward"]) == {"net/ipv4/ip_forward": "0"}  # a host that just booted
    lab.ok("network", "create", "--subnet", "10.131.0.0/24", "fw")
    assert values(path, ["net/ipv4/ip_forward", "net/ipv4/conf/eth0/forwarding"]) == \
        {"net/ipv4/ip_forward": "1", "net/ipv4/conf/eth0/forwarding": "1"}


def test_a_cluster_lab_starts_with_its_own_sysctls(poisoned, tmp_path):
    cl = ClusterLab(hosts=2, state_dir=tmp_path / "cl")
    try:
        cl.create()
        for name in [h.name for h in cl.hosts] + [cl.kv]:
            assert_fresh(f"/run/netns/{name}")
        assert_fresh(f"/run/netns/{cl.underlay}", interfaces=("ul0", "p0"))
    finally:
        cl.destroy()
    assert not cl.leaks()


def test_a_replayed_world_starts_from_the_labs_sysctls_then_the_snapshots(poisoned):
    from netdiag.scenario import replay

    snap = json.loads((Path(__file__).parents[1] / "fixtures" / "lab_snapshot.json").read_text())
    record = replay.rebuild(snap, f"rp{secrets.token_hex(2)}")
    try:
        for ns_id, name in record["namespaces"].items():
            own = {k.replace(".", "/"): v for k, v in (snap["namespaces"][ns_id].get("sysctls") or {}).items()
                   if k.startswith(("net.ipv4.conf.all.", "net.ipv4.conf.default.", "net.ipv4.conf.lo.", "net.ipv4.ip_forward",
                                    "net.bridge."))}
            want = expected_here(f"/run/netns/{name}")
            if "net/ipv4/ip_forward" in own:  # writing it sets conf/all and conf/default forwarding too
                want.update({f"net/ipv4/conf/{d}/forwarding": own["net/ipv4/ip_forward"] for d in ("all", "default", "lo")})
            want.update(own)
            assert values(f"/run/netns/{name}", want) == want, name
        for name in record["stubs"]:
            want = expected_here(f"/run/netns/{name}")
            assert values(f"/run/netns/{name}", want) == want, name
    finally:
        assert replay.remove(record) == []
