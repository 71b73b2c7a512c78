"""Worlds of plain namespaces in a lab where the kernel's verdict is about a packet the probe
caused, not the probe itself, and where the reply's way back is what is broken.

- An MTU black hole: client - a - (MTU 1400) - b - server, both routers dropping the ICMP
  'fragmentation needed' in their output. The kernel's trace sees the ICMP error die; the probe
  itself dies at the MTU step: MTU_BLACKHOLE at a's a-b, the rule named in evidence and fix.
- No route back: the server has no route to the client's network. NO_ROUTE at the server, and the
  fix, applied as printed, lets a real TCP connection through.

Every namespace is named after the lab and removed also on failure; nothing leaves them."""
import json
import socket
import subprocess
import threading

import pytest

from runtime.kernel.ns import netns as inside
from tests.integration.test_trace import apply_fix, dead_hop, trace

pytestmark = pytest.mark.integration


def sh(*argv: str, input: str | None = None) -> str:
    p = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=30)
    assert p.returncode == 0, f"{' '.join(argv)}: {p.stderr}"
    return p.stdout


def listen(netns_name: str, port: int) -> socket.socket:
    """A TCP server in the named namespace that reads what a client sends (up to a newline) and
    answers with its length. `stop()` on the socket it returns ends it."""
    with inside(f"/run/netns/{netns_name}"):
        s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)

    def serve():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                got = 0
                try:
                    while chunk := c.recv(65536):
                        got += len(chunk)
                        if chunk.endswith(b"\n"):
                            break
                    c.sendall(f"{got}\n".encode())
                except OSError:
                    pass
    threading.Thread(target=serve, daemon=True).start()
    return s


def stop(s: socket.socket) -> None:
    """End a `listen` server: shutdown wakes its thread out of accept(), then the fd is closed."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def connect(netns_name: str, dst: str, port: int, payload: int = 1, timeout: float = 3.0) -> int | None:
    """A real TCP connection from the named namespace: sends `payload` bytes, returns what the
    server counted (None when the connection or the answer fails)."""
    with inside(f"/run/netns/{netns_name}"):
        s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        s.sendall(b"x" * (payload - 1) + b"\n")
        with s.makefile() as answer:  # its own reference to the socket: closed here, not by the GC
            return int(answer.readline())
    except (OSError, ValueError):
        return None
    finally:
        s.close()


class Chain:
    """Namespaces in a row, each pair joined by a veth: names[0] - names[1] - ... with subnets
    10.NET.K.0/24 between the K-th pair; .1 on the left end, .2 on the right. The inner ones forward."""

    def __init__(self, prefix: str, roles: str, net: int):
        self.ns = {r: f"{prefix}-{r}" for r in roles}
        self.roles, self.net = roles, net
        self.listeners: list[socket.socket] = []

    def ip(self, role: str, *args: str) -> str:
        return sh("ip", "-n", self.ns[role], *args)

    def run(self, role: str, *argv: str, input: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.ns[role], *argv, input=input)

    def addr(self, k: int, side: int) -> str:
        return f"10.{self.net}.{k + 1}.{side}"

    def create(self, mtu: dict | None = None) -> "Chain":
        for role in self.roles:
            sh("ip", "netns", "add", self.ns[role])
            self.ip(role, "link", "set", "lo", "up")
        for k, (left, right) in enumerate(zip(self.roles, self.roles[1:])):
            lname, rname = f"{left}-{right}", f"{right}-{left}"
            self.ip(left, "link", "add", lname, "type", "veth", "peer", "name", rname, "netns", self.ns[right])
            for role, dev, side in ((left, lname, 1), (right, rname, 2)):
                self.ip(role, "addr", "add", f"{self.addr(k, side)}/24", "dev", dev)
                if (mtu or {}).get(k):
                    self.ip(role, "link", "set", dev, "mtu", str(mtu[k]))
                self.ip(role, "link", "set", dev, "up")
        for role in self.roles[1:-1]:  # set, not inherited: forwarding is what a router relies on
            self.run(role, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for role in self.roles:
            self.run(role, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        return self

    def route_all(self, skip: tuple = ()) -> None:
        """Every namespace reaches every subnet: towards the left via the left neighbour, else right."""
        n = len(self.roles)
        for i, role in enumerate(self.roles):
            for k in range(n - 1):
                if k in (i - 1, i) or (role, k) in skip:
                    continue
                via = self.addr(i - 1, 1) if k < i - 1 else self.addr(i, 2)
                self.ip(role, "route", "add", f"10.{self.net}.{k + 1}.0/24", "via", via)

    def listen(self, role: str, port: int) -> None:
        self.listeners.append(listen(self.ns[role], port))

    def connect(self, role: str, dst: str, port: int, payload: int = 1, timeout: float = 3.0) -> int | None:
        return connect(self.ns[role], dst, port, payload, timeout)

    def destroy(self) -> None:
        for s in self.listeners:
            stop(s)
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def chain(lab):
    made: list[Chain] = []

    def make(roles: str, net: int, **kw) -> Chain:
        c = Chain(lab.name, roles, net)
        made.append(c)
        return c.create(**kw)
    try:
        yield make
    finally:
        for c in made:
            c.destroy()


ICMP_EATER = """table inet fw {
  chain out {
    type filter hook output priority 0; policy accept;
    icmp type destination-unreachable icmp code frag-needed drop
  }
}
"""


def handle_in(world: Chain, role: str, family: str, table: str, chain_name: str) -> int:
    items = json.loads(world.run(role, "nft", "-a", "-j", "list", "chain", family, table, chain_name))["nftables"]
    handles = [i["rule"]["handle"] for i in items if "rule" in i]
    assert len(handles) == 1, items
    return handles[0]


@pytest.fixture
def black_hole(lab, chain):
    """client c - a - (1400 on both ends) - b - server s; a and b drop ICMP frag-needed they send."""
    w = chain("cabs", 77, mtu={1: 1400})
    w.route_all()
    for r in "ab":
        w.run(r, "nft", "-f", "-", input=ICMP_EATER)
    w.listen("s", 8080)
    return w


def test_an_eaten_icmp_frag_needed_is_evidence_for_the_black_hole_not_a_drop_of_the_probe(lab, black_hole):
    w = black_hole
    server = w.addr(2, 2)
    assert w.connect("c", server, 8080, payload=100) == 100  # small packets pass
    assert w.connect("c", server, 8080, payload=20000, timeout=2) is None  # large ones vanish: the black hole
    handle = handle_in(w, "a", "inet", "fw", "out")
    r = trace(lab, f"ns:{w.ns['c']}", server, "--port", "8080", "--size", "1460")
    assert (r["verdict"], r["cause"]) == ("blocked", "MTU_BLACKHOLE"), (r["summary"], r.get("reconciled"))
    hop = dead_hop(r)
    assert (hop["label"], hop["interface"], hop["direction"]) == (f"ns:{w.ns['a']}", "a-b", "egress")
    assert r["live"]["outcome"] == "timeout" and not r["reconciled"].startswith("the kernel's packet trace decides")
    # the kernel's trace saw the ICMP error die, and that rule is named: in evidence, summary and fix
    eaten = [e for e in r["evidence"] if e["kind"] == "nft_rule" and e.get("handle") == handle]
    assert eaten and eaten[0]["table"] == "inet fw" and eaten[0]["chain"] == "out", r["evidence"]
    assert f"inet fw out (handle {handle})" in r["summary"]
    assert f"ip netns exec {w.ns['a']} nft delete rule inet fw out handle {handle}" in r["fix"]
    # the fix, applied as printed, makes the large transfer work for real (both ends of the veth)
    apply_fix(lab, r)
    assert w.connect("c", server, 8080, payload=20000) == 20000
    assert trace(lab, f"ns:{w.ns['c']}", server, "--port", "8080", "--size", "1460")["verdict"] == "delivered"


def test_health_sees_the_black_hole_on_the_way_back_and_names_the_rule(lab, black_hole, tmp_path):
    w = black_hole
    www = tmp_path / "www"
    www.mkdir()
    (www / "big.txt").write_text("x" * 65536)
    httpd = subprocess.Popen(["ip", "netns", "exec", w.ns["s"], "busybox", "httpd", "-f", "-p", "80", "-h", str(www)])
    try:
        p = lab.run("health", f"http://{w.addr(2, 2)}/big.txt", "--from", f"ns:{w.ns['c']}", "--json", timeout=90)
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["cause"] == "MTU_BLACKHOLE", (r["cause"], r["summary"])  # not SLOW_RESPONSE
        assert (r["hop"]["label"], r["hop"]["interface"]) == (f"ns:{w.ns['b']}", "b-a")
        handle = handle_in(w, "b", "inet", "fw", "out")
        assert any(e["kind"] == "nft_rule" and e.get("handle") == handle and e.get("namespace") for e in r["evidence"]), r["evidence"]
        assert f"nft delete rule inet fw out handle {handle}" in r["fix"]
    finally:
        httpd.kill()
        httpd.wait()


def test_a_server_without_a_route_back_is_no_route_at_the_server_and_the_printed_route_fixes_it(lab, chain):
    """client c - r - server s; s has no route to c's subnet: the SYN arrives, the SYN-ACK cannot leave."""
    w = chain("crs", 78)
    w.route_all(skip=(("s", 0),))
    w.listen("s", 8080)
    w.listen("c", 9090)  # the control flow: r reaches c (a connected route both ways)
    server = w.addr(1, 2)
    assert w.connect("c", server, 8080, timeout=2) is None  # broken for real before netdiag looks
    r = trace(lab, f"ns:{w.ns['c']}", server, "--port", "8080")
    assert (r["verdict"], r["cause"]) == ("blocked", "NO_ROUTE"), (r["summary"], r.get("reconciled"))
    hop = dead_hop(r)
    assert (hop["label"], hop["kind"], hop.get("leg")) == (f"ns:{w.ns['s']}", "route", "reply"), hop
    assert r["reconciled"] == "static and live agree", r["reconciled"]
    cmd = r["fix_command"]
    assert cmd == f"ip netns exec {w.ns['s']} ip route add {w.addr(0, 1).rsplit('.', 1)[0]}.0/24 via {w.addr(1, 1)} dev s-r", cmd
    assert r["fix_check"]["checked"] and r["fix_check"]["delivers"]
    apply_fix(lab, r)
    assert w.connect("c", server, 8080) == 1  # a real TCP connection, request and answer
    assert w.connect("r", w.addr(0, 1), 9090) == 1  # the control flow still works
    assert trace(lab, f"ns:{w.ns['c']}", server, "--port", "8080")["verdict"] == "delivered"


def test_a_firewall_that_lets_the_request_through_but_drops_the_answer_is_fixed_without_opening_a_port(lab, chain):
    """r forwards c's SYN to s:8080 (one accept, policy drop) but nothing accepts the SYN-ACK: a
    FIREWALL_DROP of the reply at r, whose fix accepts established connections, names no port
    (the client's is ephemeral), and, applied, opens nothing new: s:9090 stays closed to c."""
    w = chain("crs", 79)
    w.route_all()
    server = w.addr(1, 2)
    w.run("r", "nft", "-f", "-", input=f"""table inet fw {{
  chain through {{
    type filter hook forward priority 0; policy drop;
    ip daddr {server} tcp dport 8080 accept
  }}
}}
""")
    w.listen("s", 8080)
    w.listen("s", 9090)
    assert w.connect("c", server, 8080, timeout=2) is None
    r = trace(lab, f"ns:{w.ns['c']}", server, "--port", "8080")
    assert (r["verdict"], r["cause"]) == ("blocked", "FIREWALL_DROP"), (r["summary"], r.get("reconciled"))
    hop = dead_hop(r)
    assert (hop["label"], hop["kind"], hop.get("leg")) == (f"ns:{w.ns['r']}", "firewall", "reply"), hop
    assert r["fix_command"] == f"ip netns exec {w.ns['r']} nft insert rule inet fw through ct state established,related accept"
    assert any(e["kind"] == "nft_trace" and e.get("packet_role") == "related" for e in r["evidence"])  # the kernel saw it
    apply_fix(lab, r)
    assert w.connect("c", server, 8080) == 1
    assert w.connect("c", server, 9090, timeout=2) is None  # the fix opened no other flow
