"""The embedded resolver's DNS codec and upstream parsing: pure (the resolver process itself is
tested in tests/integration/test_dns_server.py)."""
import random
import struct

import pytest

from runtime.networks import dns



# --- codec ------------------------------------------------------------------------------------

def test_query_round_trip_keeps_case_and_normalises_name():
    q = dns.parse_query(dns.build_query("Web1.Example.", dns.AAAA, qid=0x1234))
    assert (q.id, q.qtype, q.qclass, q.opcode) == (0x1234, dns.AAAA, dns.CLASS_IN, 0)
    assert q.labels == (b"Web1", b"Example") and q.name == "web1.example"
    assert q.flags & 0x0100  # RD


def test_response_round_trip():
    q = dns.parse_query(dns.build_query("web1", qid=7))
    msg = dns.build_response(q, answers=[(dns.A, bytes([172, 18, 0, 2])), (dns.A, bytes([172, 18, 0, 3]))])
    r = dns.parse_response(msg)
    assert (r.id, r.rcode, r.question) == (7, dns.NOERROR, ("web1", dns.A))
    assert r.flags & 0x8000 and r.flags & 0x0400 and r.flags & 0x0100  # QR, AA, RD copied
    assert r.answers == [("web1", dns.A, 600, "172.18.0.2"), ("web1", dns.A, 600, "172.18.0.3")]
    assert dns.parse_response(dns.build_response(q, dns.NXDOMAIN)).rcode == dns.NXDOMAIN


def test_oversized_udp_answer_is_truncated_with_tc():
    q = dns.parse_query(dns.build_query("many"))
    answers = [(dns.A, bytes([10, 0, i // 256, i % 256])) for i in range(100)]
    r = dns.parse_response(dns.build_response(q, answers=answers, max_size=512))
    assert r.flags & 0x0200 and r.answers == []
    assert len(dns.parse_response(dns.build_response(q, answers=answers)).answers) == 100


def test_compressed_question_name_is_read():
    header = struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0)
    # question name is a pointer to offset 18, where "web1" is spelled out after the type/class
    data = header + b"\xc0\x12" + struct.pack("!HH", dns.A, 1) + b"\x04WEB1\x00"
    q = dns.parse_query(data)
    assert q.name == "web1" and q.qtype == dns.A


@pytest.mark.parametrize("data", [
    b"", b"\x00" * 11,
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01",   # pointer loop
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab",                            # label too short
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # bad type
    struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01",         # two questions
    struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01",    # a response
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x01a\x00\x00\x01",                 # no class
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",  # 257
])
def test_malformed_queries_are_rejected(data):
    with pytest.raises(dns.MalformedPacket):
        dns.parse_query(data)


def test_fuzz_random_and_mutated_bytes_never_crash_the_codec():
    rng = random.Random(1035)
    good = dns.build_query("web1.example")
    for i in range(20000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:
            data = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            data = bytes(data[: rng.randrange(len(data) + 1)])
        for parse in (dns.parse_query, dns.parse_response):
            try:
                parse(data)
            except dns.MalformedPacket:
                pass
        try:
            q = dns.parse_query(data)
        except dns.MalformedPacket:
            continue
        dns.parse_response(dns.build_response(q))  # anything we accept, we can answer


def test_upstream_syntax():
    assert dns.parse_upstream("203.0.113.1") == ("203.0.113.1", 53)
    assert dns.parse_upstream("127.0.0.2:5353") == ("127.0.0.2", 5353)
    assert dns.parse_upstream("2001:db8::1") == ("2001:db8::1", 53)
    assert dns.parse_upstream("[2001:db8::1]:5300") == ("2001:db8::1", 5300)
    for bad in ("dns.example", "1.2.3.4:0", "1.2.3.4:x"):
        with pytest.raises(ValueError):
            dns.parse_upstream(bad)
