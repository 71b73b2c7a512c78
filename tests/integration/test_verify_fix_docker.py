"""`--verify-fix` on a host where Docker runs (a real engine inside the lab, tests/dockerkit.py): a
plain Linux bridge under Docker's FORWARD policy drop (with br_netfilter) is FOREIGN_FIREWALL,
fixed in Docker's DOCKER-USER chain. The replica loads Docker's iptables-nft rules and the bridge
sysctls, the fix runs there and works; the real host keeps its drop and its rules. (A Docker-level
command, `docker ...`, is refused before any replica is built: tests/unit/test_verify_rewrite.py.)"""
from __future__ import annotations

import json
import os

import pytest

from tests.dockerkit import HAVE_DOCKER, docker_lab, plain_bridge_under_docker
from tests.integration.test_verdicts import connect

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")]


def test_docker_user_fix_verified_on_a_replica(tmp_path_factory):
    with docker_lab(tmp_path_factory.mktemp("verifydock")) as d:
        lab = d.lab
        with plain_bridge_under_docker(lab) as (br, names, ips):
            assert connect(names["a"], ips["b"], 8080, timeout=2) is None
            rules_before = lab.in_lab("iptables-nft-save").stdout.count("\n-A ")
            p = lab.run("trace", f"ns:{names['a']}", ips["b"], "--port", "8080", "--json", "--verify-fix", "--timeout", "1",
                        timeout=180)
            r = json.loads(p.stdout)
            assert r["cause"] == "FOREIGN_FIREWALL" and "DOCKER-USER" in r["fix_command"], r["fix_command"]
            v = r["fix_verified"]
            assert v["replica"] is True, v
            assert all(a["command"].startswith(f"ip netns exec {v['replica_world']['prefix']}-host iptables") for a in v["applied"])
            assert connect(names["a"], ips["b"], 8080, timeout=2) is None  # the real host still drops
            assert lab.in_lab("iptables-nft-save").stdout.count("\n-A ") == rules_before
            assert not [n for n in os.listdir("/run/netns") if n.startswith(v["replica_world"]["prefix"])]
