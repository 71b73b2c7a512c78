"""The embedded resolver on a real gateway-like address, port 53, in a throwaway network namespace
(nddns-XXXX: a veth interface with 10.99.0.1/24 and 10.99.0.2/24; nothing leaves it). The root
namespace is never changed; the namespace and anything left running in it are removed also on
failure."""
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def netns():
    name = f"nddns-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        # a veth pair with both ends inside (the dummy module is not always available)
        _ip("-n", name, "link", "add", "ndgw0", "type", "veth", "peer", "name", "ndgw1")
        _ip("-n", name, "addr", "add", "10.99.0.1/24", "dev", "ndgw0")
        _ip("-n", name, "addr", "add", "10.99.0.2/24", "dev", "ndgw0")
        _ip("-n", name, "link", "set", "ndgw0", "up")
        _ip("-n", name, "link", "set", "ndgw1", "up")
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:  # only processes inside our throwaway namespace
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


SCENARIO = textwrap.dedent("""
    import json, os, socket, struct, sys, threading, time
    from runtime.errors import KernelError
    from runtime.networks import dns
    from runtime.networks.dns import control as dns_control

    records = sys.argv[1]
    out = {}

    # a fake upstream on 10.99.0.2:53 answering a fixed A
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.bind(("10.99.0.2", 53))
    seen = []
    def serve():
        while True:
            data, addr = up.recvfrom(65535)
            seen.append(data)
            q = dns.parse_query(data)
            up.sendto(dns.build_response(q, answers=[(dns.A, socket.inet_aton("198.51.100.7"))]), addr)
    threading.Thread(target=serve, daemon=True).start()

    def ask(name, tcp=False):
        msg = dns.build_query(name)
        if tcp:
            with socket.create_connection(("10.99.0.1", 53), timeout=3) as s:
                s.sendall(struct.pack("!H", len(msg)) + msg)
                f = s.makefile("rb")
                data = f.read(struct.unpack("!H", f.read(2))[0])
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(msg, ("10.99.0.1", 53))
                data = s.recv(65535)
        r = dns.parse_response(data)
        return [r.rcode, sorted(a[3] for a in r.answers)]

    def write(internal):
        with open(records + ".tmp", "w") as f:
            json.dump({"network": "n1", "internal": internal, "upstream": ["10.99.0.2"],
                       "records": {"web1": ["10.99.0.10"], "alias": ["10.99.0.10", "10.99.0.11"]}}, f)
        os.replace(records + ".tmp", records)

    write(internal=False)
    pid = dns.start("10.99.0.1", records)
    try:
        out["web1_udp"] = ask("web1")
        out["alias_tcp"] = ask("alias", tcp=True)
        out["forwarded"] = ask("example.com")
        write(internal=True)
        time.sleep(0.5)
        n = len(seen)
        out["internal_unknown"] = ask("example.com")
        time.sleep(0.2)
        out["internal_sent_upstream"] = len(seen) - n
        try:
            dns.start("10.99.0.77", records)
            out["absent_ip_error"] = None
        except KernelError as e:
            out["absent_ip_error"] = str(e)
        os.unlink(records)
        proc = dns_control._children[pid]
        out["exit_after_unlink"] = proc.wait(timeout=1.0)
    finally:
        dns.stop(pid)
    print(json.dumps(out))
""")


def test_resolver_on_a_gateway_address_port_53(netns, tmp_path):
    p = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", SCENARIO, str(tmp_path / "n1.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["web1_udp"] == [0, ["10.99.0.10"]]
    assert out["alias_tcp"] == [0, ["10.99.0.10", "10.99.0.11"]]
    assert out["forwarded"] == [0, ["198.51.100.7"]]
    assert out["internal_unknown"] == [3, []]  # NXDOMAIN
    assert out["internal_sent_upstream"] == 0
    assert out["absent_ip_error"] and "10.99.0.77" in out["absent_ip_error"]
    assert "Cannot assign requested address" in out["absent_ip_error"]
    assert out["exit_after_unlink"] == 0
    assert subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.strip() == ""
