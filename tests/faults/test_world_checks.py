"""The fault worlds' own live checks (netdiag/faults/world.py) can fail, and fail for the planted
reason: a padded HTTP request crosses an MTU step for real (path MTU discovery saves it, an eaten
ICMP 'fragmentation needed' does not), and a UDP request counts only when the echo answers."""
import pytest

from netdiag.faults.world import build

pytestmark = pytest.mark.integration

EAT_FRAG_NEEDED = ("table inet eat { chain output { type filter hook output priority 0; "
                   "icmp type destination-unreachable icmp code frag-needed drop; }; }")


@pytest.fixture
def world():
    w = build(4242, "routed")
    yield w
    w.destroy()


def test_a_padded_request_hits_the_mtu_step_and_only_the_eaten_icmp_makes_it_a_black_hole(world):
    w = world
    w.ip(None, "link", "set", w.host_server_if, "mtu", "1400")
    w.nft(None, EAT_FRAG_NEEDED)
    assert w.connects(timeout=2) and not w.connects(timeout=2, pad=1460)  # small passes, full-size vanishes
    w.run(None, "nft", "delete", "table", "inet", "eat")
    assert w.connects(timeout=3, pad=1460)  # the ICMP gets through: the client learns the path MTU


def test_a_udp_request_counts_only_when_answered(world):
    w = world
    assert not w.answers_udp(w.port, timeout=1)  # nothing listens: ICMP port unreachable
    w.serve_udp(w.port)
    assert w.answers_udp(w.port, size=1000)
    w.nft(None, f"table inet u {{ chain forward {{ type filter hook forward priority 0; udp sport {w.port} drop; }}; }}")
    assert not w.answers_udp(w.port, timeout=1)  # the request arrives, the answer does not
