"""trace across a VXLAN between two lab hosts, built with plain netlink (ip): delivery, a missing
FDB entry, and an overlay MTU that drops big packets."""
import json
import secrets
import subprocess

import pytest

pytestmark = pytest.mark.integration


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def overlay(lab):
    a, b = f"ndvxa-{secrets.token_hex(2)}", f"ndvxb-{secrets.token_hex(2)}"
    try:
        for ns in (a, b):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", a, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", b)
        for ns, under, over, peer in ((a, "10.200.0.1", "10.99.0.1", "10.200.0.2"), (b, "10.200.0.2", "10.99.0.2", "10.200.0.1")):
            ip("-n", ns, "addr", "add", f"{under}/24", "dev", "ul0")
            ip("-n", ns, "link", "set", "ul0", "up")
            ip("-n", ns, "link", "add", "vxlan0", "type", "vxlan", "id", "42", "local", under, "dstport", "4789", "nolearning", "df", "set")
            ip("-n", ns, "link", "set", "vxlan0", "mtu", "1450")
            ip("-n", ns, "addr", "add", f"{over}/24", "dev", "vxlan0")
            ip("-n", ns, "link", "set", "vxlan0", "up")
            subprocess.run(["ip", "netns", "exec", ns, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0", "dst", peer], check=True)
        yield lab, a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def trace(lab, *args):
    p = lab.run("trace", *args, "--json", timeout=60)
    return json.loads(p.stdout)


def test_vxlan_delivery_fdb_and_mtu(overlay):
    lab, a, b = overlay
    r = trace(lab, f"ns:{a}", "10.99.0.2", "--proto", "icmp")
    assert r["verdict"] == "delivered", r["summary"]
    assert any(h["kind"] == "vxlan" and h["direction"] == "egress" for h in r["hops"])
    assert any(e["kind"] == "vxlan" and "VNI 42" in e["detail"] for e in r["evidence"])
    assert r["live"]["outcome"] == "replied"

    subprocess.run(["ip", "netns", "exec", a, "bridge", "fdb", "del", "00:00:00:00:00:00", "dev", "vxlan0", "dst", "10.200.0.2"], check=True)
    r = trace(lab, f"ns:{a}", "10.99.0.2", "--proto", "icmp")
    assert (r["verdict"], r["cause"]) == ("blocked", "OVERLAY_PEER_UNKNOWN") and "bridge fdb append" in r["fix"]
    subprocess.run(["ip", "netns", "exec", a, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0", "dst", "10.200.0.2"], check=True)
    assert trace(lab, f"ns:{a}", "10.99.0.2", "--proto", "icmp")["verdict"] == "delivered"

    # the classic overlay trap: the overlay MTU equals the underlay's, so big packets cannot fit
    for ns in (a, b):
        ip("-n", ns, "link", "set", "vxlan0", "mtu", "1500")
    r = trace(lab, f"ns:{a}", "10.99.0.2", "--proto", "icmp", "--size", "1440")
    assert (r["verdict"], r["cause"]) == ("blocked", "MTU_BLACKHOLE")
    assert r["hops"][r["blocked_at"] - 1]["interface"] == "ul0" and "1450" in r["fix"]
    for ns in (a, b):
        ip("-n", ns, "link", "set", "vxlan0", "mtu", "1450")
    assert trace(lab, f"ns:{a}", "10.99.0.2", "--proto", "icmp", "--size", "1400")["verdict"] == "delivered"
