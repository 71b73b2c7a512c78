"""The embedded resolver as a real process served on 127.0.0.1 with a fake upstream on 127.0.0.2
(loopback only; nothing leaves the machine). No root needed, but processes and waiting: not a unit test."""
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from runtime.errors import KernelError
from runtime.networks import dns
from runtime.networks.dns import control as dns_control

pytestmark = pytest.mark.integration

UPSTREAM_ANSWER = "198.51.100.7"


# --- the resolver process ---------------------------------------------------------------------

class FakeUpstream:
    """A UDP DNS server on 127.0.0.2 that records queries and (unless silent) answers a fixed A."""

    def __init__(self, silent=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.2", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.silent, self.received, self.running = silent, [], True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            self.received.append(data)
            if not self.silent:
                q = dns.parse_query(data)
                self.sock.sendto(dns.build_response(q, answers=[(dns.A, socket.inet_aton(UPSTREAM_ANSWER))],
                                                    aa=False), addr)

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def write_records(path, records, internal=False, upstream=()):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"network": "n1", "internal": internal, "upstream": list(upstream),
                               "records": records}))
    os.replace(tmp, path)  # atomic, like the runtime should do


def query(port, name, qtype=dns.A, tcp=False, timeout=3.0):
    msg = dns.build_query(name, qtype)
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(msg)) + msg)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack_from("!H", buf)[0]:
                chunk = s.recv(65535)
                assert chunk, "server closed the TCP connection"
                buf += chunk
            data = buf[2:]
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(msg, ("127.0.0.1", port))
            data = s.recv(65535)
    r = dns.parse_response(data)
    assert r.id == struct.unpack_from("!H", msg)[0]
    return r


def addrs(r):
    return sorted(a[3] for a in r.answers)


@pytest.fixture
def upstream():
    u = FakeUpstream()
    yield u
    u.close()


@pytest.fixture
def resolver(tmp_path):
    """resolver(records, internal=, upstream=) -> (pid, port, records path); stopped afterwards."""
    started = []

    def make(records, internal=False, upstream=()):
        path = tmp_path / "dns.json"
        write_records(path, records, internal, upstream)
        pid, port = dns.spawn("127.0.0.1", str(path), port=0)
        started.append(pid)
        return pid, port, path

    yield make
    for pid in started:
        dns.stop(pid)


RECORDS = {"web1": ["172.18.0.2"], "db": ["172.18.0.3"], "alias": ["172.18.0.2", "172.18.0.3"]}


def test_known_names_and_aliases_resolve_case_insensitively(resolver):
    _, port, _ = resolver(RECORDS, internal=True)
    r = query(port, "web1")
    assert (r.rcode, r.answers) == (dns.NOERROR, [("web1", dns.A, 600, "172.18.0.2")])
    assert r.flags & 0x0400  # authoritative
    assert addrs(query(port, "alias")) == ["172.18.0.2", "172.18.0.3"]
    assert addrs(query(port, "WEB1.")) == ["172.18.0.2"]


def test_aaaa_for_a_known_name_is_nodata(resolver):
    _, port, _ = resolver(RECORDS, internal=True)
    r = query(port, "web1", dns.AAAA)
    assert (r.rcode, r.answers) == (dns.NOERROR, [])
    r = query(port, "web1", 16)  # TXT
    assert (r.rcode, r.answers) == (dns.NOERROR, [])


def test_reverse_lookup_of_a_container_ip(resolver):
    _, port, _ = resolver(RECORDS, internal=True)
    r = query(port, "2.0.18.172.in-addr.arpa", dns.PTR)
    assert r.answers == [("2.0.18.172.in-addr.arpa", dns.PTR, 600, "web1")]


def test_internal_network_answers_nxdomain_and_sends_nothing_upstream(resolver, upstream):
    _, port, _ = resolver(RECORDS, internal=True, upstream=[f"127.0.0.2:{upstream.port}"])
    assert query(port, "example.com").rcode == dns.NXDOMAIN
    assert query(port, "example.com", tcp=True).rcode == dns.NXDOMAIN
    time.sleep(0.3)
    assert upstream.received == []


def test_unknown_name_is_forwarded_and_answered_with_the_clients_id(resolver, upstream):
    _, port, _ = resolver(RECORDS, upstream=[f"127.0.0.2:{upstream.port}"])
    r = query(port, "example.com")  # query() checks the id
    assert (r.rcode, addrs(r)) == (dns.NOERROR, [UPSTREAM_ANSWER])
    assert len(upstream.received) == 1
    assert dns.parse_query(upstream.received[0]).name == "example.com"
    assert addrs(query(port, "web1")) == ["172.18.0.2"] and len(upstream.received) == 1  # local stays local


def test_dead_upstream_is_skipped_for_the_next_one(resolver, upstream):
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.2", 0))
    dead = closed.getsockname()[1]
    closed.close()  # nothing listens there any more: ICMP port unreachable
    _, port, _ = resolver(RECORDS, upstream=[f"127.0.0.2:{dead}", f"127.0.0.2:{upstream.port}"])
    t0 = time.monotonic()
    assert addrs(query(port, "example.com")) == [UPSTREAM_ANSWER]
    assert time.monotonic() - t0 < 1.0


def test_silent_upstream_gives_servfail_in_time_and_resolver_keeps_serving(resolver):
    silent = FakeUpstream(silent=True)
    try:
        _, port, _ = resolver(RECORDS, upstream=[f"127.0.0.2:{silent.port}"])
        t0 = time.monotonic()
        assert query(port, "example.com", timeout=4).rcode == dns.SERVFAIL
        assert 1.8 < time.monotonic() - t0 < 2.5
        assert len(silent.received) == 1
    finally:
        silent.close()


def test_no_upstream_configured_is_refused(resolver):
    _, port, _ = resolver(RECORDS)
    assert query(port, "example.com").rcode == dns.REFUSED


def test_records_file_edits_are_picked_up(resolver):
    _, port, path = resolver(RECORDS, internal=True)
    assert query(port, "web2").rcode == dns.NXDOMAIN
    write_records(path, dict(RECORDS, web2=["172.18.0.4"]), internal=True)
    deadline = time.monotonic() + 1.0
    while query(port, "web2").rcode != dns.NOERROR:
        assert time.monotonic() < deadline, "edit not picked up"
        time.sleep(0.05)
    assert addrs(query(port, "web2")) == ["172.18.0.4"]
    path.write_text("{ half written")  # a broken rewrite keeps the old records
    time.sleep(0.3)
    assert addrs(query(port, "web2")) == ["172.18.0.4"]


def test_deleting_the_records_file_ends_the_resolver(resolver):
    pid, port, path = resolver(RECORDS, internal=True)
    path.unlink()
    assert dns_control._children[pid].wait(timeout=1.0) == 0


def test_sigterm_ends_the_resolver_and_stop_is_idempotent(resolver):
    pid, port, _ = resolver(RECORDS, internal=True)
    proc = dns_control._children[pid]
    dns.stop(pid)
    assert proc.returncode == 0
    dns.stop(pid)  # already gone: fine


def test_stop_leaves_an_unrelated_process_alone():
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dns.stop(other.pid)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_tcp_queries_with_length_prefix_and_pipelining(resolver):
    _, port, _ = resolver(RECORDS, internal=True)
    r = query(port, "db", tcp=True)
    assert (r.rcode, addrs(r)) == (dns.NOERROR, ["172.18.0.3"])
    # two queries in one segment on one connection, both answered in order
    q1, q2 = dns.build_query("web1", qid=1), dns.build_query("nope", qid=2)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"".join(struct.pack("!H", len(q)) + q for q in (q1, q2)))
        f = s.makefile("rb")
        got = []
        for _ in range(2):
            n = struct.unpack("!H", f.read(2))[0]
            got.append(dns.parse_response(f.read(n)))
    assert [(r.id, r.rcode) for r in got] == [(1, dns.NOERROR), (2, dns.NXDOMAIN)]


def test_large_answer_is_truncated_over_udp_and_complete_over_tcp(resolver):
    many = {"big": [f"172.18.{i // 250}.{i % 250 + 1}" for i in range(60)]}
    _, port, _ = resolver(many, internal=True)
    r = query(port, "big")
    assert r.flags & 0x0200 and r.answers == []
    assert len(query(port, "big", tcp=True).answers) == 60


def test_garbage_does_not_kill_it(resolver):
    pid, port, _ = resolver(RECORDS, internal=True)
    rng = random.Random(53)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(500):
            s.sendto(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 100))), ("127.0.0.1", port))
        s.sendto(b"", ("127.0.0.1", port))
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"\x00\x05hello\x00")  # a framed non-DNS message, then a dangling half length
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"\xff\xff" + b"x" * 1000)  # promises more than it sends, then goes away
    # a burst can overflow the socket buffer and drop a query, as UDP may: retry like a stub would
    for attempt in range(3):
        try:
            assert addrs(query(port, "web1", timeout=1.0)) == ["172.18.0.2"]
            break
        except TimeoutError:
            assert attempt < 2, "resolver stopped answering UDP"
    assert addrs(query(port, "web1", tcp=True)) == ["172.18.0.2"]
    assert dns_control._children[pid].poll() is None


def test_start_fails_clearly_when_the_address_is_not_on_this_host(tmp_path):
    with open("/proc/sys/net/ipv4/ip_nonlocal_bind") as f:
        if f.read().strip() != "0":
            pytest.skip("ip_nonlocal_bind lets any address bind")
    path = tmp_path / "dns.json"
    write_records(path, RECORDS, internal=True)
    t0 = time.monotonic()
    with pytest.raises(KernelError) as e:
        dns.start("192.0.2.1", str(path), port=0)  # TEST-NET-1: on no interface here
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert "192.0.2.1" in msg and "Cannot assign requested address" in msg
    assert not dns_control._children


def test_start_fails_clearly_on_a_bad_records_file(tmp_path):
    path = tmp_path / "dns.json"
    path.write_text("[]")
    with pytest.raises(KernelError, match="records file"):
        dns.start("127.0.0.1", str(path), port=0)
    with pytest.raises(KernelError, match="No such file"):
        dns.start("127.0.0.1", str(tmp_path / "missing.json"), port=0)


def test_startup_is_quick(resolver):
    t0 = time.monotonic()
    resolver(RECORDS, internal=True)
    assert time.monotonic() - t0 < 1.0
