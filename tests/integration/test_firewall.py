"""The firewall against the real kernel, always inside throwaway network namespaces (never the
host's): apply/remove, in sync with render(), foreign tables untouched, atomic idempotent re-apply."""
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import traceback
import uuid

import pytest

from runtime.kernel import nft
from runtime.kernel.ns import join
from runtime.errors import KernelError
from runtime.networks import firewall
from runtime.networks.firewall import NetSpec, PortSpec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]


def in_netns(name: str, fn, *args, **kwargs):
    """Run fn(*args, **kwargs) in a forked child that setns()es into /run/netns/NAME; return its
    result or re-raise its exception here. The test process itself never leaves its netns."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            join(f"/run/netns/{name}")
            try:
                payload = ("ok", fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - shipped to the parent
                payload = ("err", (e, traceback.format_exc()))
            try:
                data = pickle.dumps(payload)
            except Exception:  # noqa: BLE001
                data = pickle.dumps(("err", (RuntimeError(repr(payload)), "")))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"child in netns {name} died without a report")
    kind, value = pickle.loads(data)
    if kind == "err":
        exc, tb = value
        raise exc from RuntimeError(tb)
    return value


# -- whether the kernel holds exactly what render() makes (test helpers: the runtime itself keeps a
# cheaper stamp of what it applied, see runtime/networks/enforce.py)

def _normalize(items: list) -> list:
    """nft JSON of our tables without what differs between two identical loads: handles, the
    metainfo header, and the order of set elements (hash sets list them in bucket order)."""

    def norm(x):
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items() if k != "handle"}
        if isinstance(x, list):
            return [norm(v) for v in x]
        return x

    def sort_sets(x, key=None):
        if isinstance(x, dict):
            return {k: sort_sets(v, k) for k, v in x.items()}
        if isinstance(x, list):
            vals = [sort_sets(v) for v in x]
            if key in ("elem", "set"):
                vals.sort(key=lambda v: json.dumps(v, sort_keys=True))
            return vals
        return x

    out = []
    for item in items:
        if "metainfo" in item:
            continue
        body = next(iter(item.values()))
        if isinstance(body, dict) and (body.get("family"), body.get("table", body.get("name"))) not in {
            (f, firewall.TABLE) for f in firewall.FAMILIES
        }:
            continue
        out.append(sort_sets(norm(item)))
    return out


def kernel_state() -> list | None:
    """Normalized nft JSON of netdiag's tables in the current netns; None if one is missing."""
    listing = json.loads(nft.run("list tables", json_out=True) or '{"nftables": []}')
    present = {(i["table"]["family"], i["table"]["name"]) for i in listing["nftables"] if "table" in i}
    if any((f, firewall.TABLE) not in present for f in firewall.FAMILIES):
        return None
    items: list = []
    for f in firewall.FAMILIES:
        items += nft.ruleset_json(f, firewall.TABLE)["nftables"]
    return _normalize(items)


_expected_cache: dict[str, list] = {}


def expected_state(script: str) -> list:
    """What the kernel lists after loading `script`: loaded into a scratch network namespace
    (a forked child that unshares one; it vanishes with the child), listed and normalized.
    This compares like with like, whatever nft's listing normalizes. Cached per script."""
    key = hashlib.sha256(script.encode()).hexdigest()
    if key in _expected_cache:
        return _expected_cache[key]
    from runtime.kernel import syscalls

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 1
        try:
            os.close(r)
            syscalls.unshare(syscalls.CLONE_NEWNET)
            nft.run(script)
            data = json.dumps({"ok": kernel_state()})
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            data = json.dumps({"error": f"{type(e).__name__}: {e}"})
        try:
            with os.fdopen(w, "w") as f:
                f.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    try:
        result = json.loads(data)
    except ValueError:
        raise KernelError("Cannot compute the expected firewall state", "the scratch namespace child died") from None
    if "error" in result:
        raise KernelError("Cannot compute the expected firewall state", result["error"])
    if len(_expected_cache) > 32:
        _expected_cache.clear()
    _expected_cache[key] = result["ok"]
    return result["ok"]


def in_sync(nets: list[NetSpec], ports: list[PortSpec]) -> bool:
    """True if the kernel's netdiag tables are exactly what render(nets, ports) makes; False when
    they are missing, flushed, edited by hand or out of date."""
    script = firewall.render(nets, ports)
    actual = kernel_state()
    if actual is None:
        return False
    return actual == expected_state(script)


@pytest.fixture
def netns():
    name = f"ndfw-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def tables() -> list[tuple[str, str]]:
    out = json.loads(nft.run("list tables", json_out=True) or '{"nftables": []}')
    return sorted((i["table"]["family"], i["table"]["name"]) for i in out["nftables"] if "table" in i)


def listing() -> str:
    return nft.run("list ruleset")


NETS = [
    NetSpec("a" * 64, "docker0", "172.17.0.0/16", "172.17.0.1", internal=False, icc=True, masquerade=True),
    NetSpec("0123456789abcdef", "br-0123456789ab", "172.18.0.0/16", "172.18.0.1",
            internal=False, icc=False, masquerade=True, ports=("veth1a", "veth2b")),
    NetSpec("fe", "br-int", "10.9.0.0/24", "10.9.0.1", internal=True, icc=True, masquerade=False),
]
PORTS = [
    PortSpec("tcp", None, 8080, 8080, "172.18.0.2", 80, 80, "br-0123456789ab", "c1"),
    PortSpec("tcp", "127.0.0.1", 8081, 8081, "172.17.0.2", 80, 80, "docker0", "c2"),
    PortSpec("udp", None, 5000, 5099, "172.17.0.3", 6000, 6099, "docker0", "c3"),
    PortSpec("tcp", None, 9000, 9999, "172.17.0.4", 9000, 9999, "docker0", "c4"),
]


def test_apply_creates_exactly_our_tables(netns):
    def body():
        firewall.apply(NETS, PORTS)
        return tables(), listing()

    tbls, text = in_netns(netns, body)
    assert tbls == [("bridge", "netdiag"), ("ip", "netdiag")]
    assert "dnat ip to udp dport map { 5000 : 172.17.0.3 . 6000" in text
    assert "tcp dport 9000-9999 dnat to 172.17.0.4 " in text
    assert "iifname @ports_0123456789ab oifname @ports_0123456789ab drop" in text


def test_empty_apply_and_remove(netns):
    def body():
        firewall.apply([], [])
        after_apply = tables()
        ok = in_sync([], [])
        firewall.remove()
        firewall.remove()  # idempotent
        return after_apply, ok, tables()

    after_apply, ok, after_remove = in_netns(netns, body)
    assert after_apply == [("bridge", "netdiag"), ("ip", "netdiag")]
    assert ok is True
    assert after_remove == []


def test_foreign_table_survives(netns):
    foreign = (
        "table inet other {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1 }\n\t}\n"
        "\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n"
        '\t\tip saddr @s counter drop comment "not ours"\n\t}\n}\n'
    )

    def body():
        nft.run(foreign)
        before = nft.run("list table inet other")
        firewall.apply(NETS, PORTS)
        mid = nft.run("list table inet other")
        firewall.apply(NETS[:1], [])
        firewall.remove()
        firewall.remove()
        return before, mid, nft.run("list table inet other"), tables()

    before, mid, after, tbls = in_netns(netns, body)
    assert before == mid == after
    assert 'comment "not ours"' in after
    assert tbls == [("inet", "other")]


def test_reapply_is_idempotent_and_in_sync(netns):
    def body():
        firewall.apply(NETS, PORTS)
        first = listing()
        sync1 = in_sync(NETS, PORTS)
        firewall.apply(NETS, PORTS)
        second = listing()
        sync2 = in_sync(NETS, PORTS)
        other = in_sync(NETS, PORTS[:2])  # a different configuration is not in sync
        nft.run("flush table ip netdiag")
        flushed = in_sync(NETS, PORTS)
        firewall.apply(NETS, PORTS)
        sync3 = in_sync(NETS, PORTS)
        nft.run("delete table bridge netdiag")
        deleted = in_sync(NETS, PORTS)
        firewall.apply(NETS, PORTS)
        nft.run('add element bridge netdiag ports_0123456789ab { "veth9z" }')
        extra_elem = in_sync(NETS, PORTS)
        firewall.apply(NETS, PORTS)
        nft.run('add rule ip netdiag forward iifname "eth0" drop')
        extra_rule = in_sync(NETS, PORTS)
        return first, second, sync1, sync2, other, flushed, sync3, deleted, extra_elem, extra_rule

    first, second, sync1, sync2, other, flushed, sync3, deleted, extra_elem, extra_rule = in_netns(netns, body)
    # same rules both times (set elements are listed in hash order, so compare sorted lines)
    assert sorted(first.split()) == sorted(second.split())
    assert first.count("\n") == second.count("\n")
    assert (sync1, sync2, other, flushed, sync3, deleted, extra_elem, extra_rule) == (
        True, True, False, False, True, False, False, False
    )


def test_failed_apply_changes_nothing(netns):
    """One transaction: when the kernel rejects part of the script, the old tables stay intact."""

    def body():
        firewall.apply(NETS, PORTS)
        before = listing()
        script = firewall.render(NETS[:1], []) + "add rule ip netdiag forward meta nosuchkey 1 accept\n"
        try:
            nft.run(script)
        except KernelError as e:
            err = str(e)
        else:
            err = None
        return before, listing(), err

    before, after, err = in_netns(netns, body)
    assert err and "nosuchkey" in err
    assert sorted(before.split()) == sorted(after.split())


def test_thousand_port_ranges_apply(netns):
    net = NETS[0]
    ports = [
        PortSpec("tcp", None, 10000, 10999, "172.17.0.9", 10000, 10999, "docker0", "same"),
        PortSpec("tcp", None, 20000, 20999, "172.17.0.9", 30000, 30999, "docker0", "offset"),
    ]

    def body():
        firewall.apply([net], ports)
        return nft.ruleset_json("ip", "netdiag"), in_sync([net], ports)

    js, ok = in_netns(netns, body)
    rules = [i["rule"] for i in js["nftables"] if "rule" in i and i["rule"]["chain"] == "published"]
    assert len(rules) == 2
    assert ok


def test_nft_errors_are_kernel_errors(netns):
    with pytest.raises(KernelError) as ei:
        in_netns(netns, nft.run, "list table ip does_not_exist")
    assert "does_not_exist" in str(ei.value) or "No such file" in str(ei.value)


# ---------------------------------------------------------------------------------------------
# real packets: client --(198.51.100.0/24)-- host --[br-nd0 172.30.0.0/24]-- ctr (172.30.0.2)
#                                             \---[br-nd1 172.31.0.0/24]-- other (172.31.0.2)
# all four are throwaway namespaces; the firewall is applied in "host" only.

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode() + b"\\n"); c.close()
"""

CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(c.recv(100).decode().strip())
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print(type(e).__name__)
"""


@pytest.fixture(params=["bridge-nf-call-iptables=1", "bridge-nf-call-iptables=0"])
def world(request):
    tag = uuid.uuid4().hex[:6]
    ns = {k: f"ndfw-{tag}-{k}" for k in ("host", "client", "ctr", "other")}
    procs: list[subprocess.Popen] = []

    def ip(*args, netns=None):
        cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def sysctl(netns, key, value):
        subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"], check=True)

    created = []
    try:
        for name in ns.values():
            ip("netns", "add", name)
            created.append(name)
            ip("link", "set", "lo", "up", netns=name)
        h = ns["host"]
        # veth pairs are created inside "host" and one end moved: nothing touches the root netns
        ip("link", "add", "eth-cl", "type", "veth", "peer", "name", "eth0", netns=h)
        ip("link", "set", "eth0", "netns", ns["client"], netns=h)
        ip("addr", "add", "198.51.100.1/24", "dev", "eth-cl", netns=h)
        ip("link", "set", "eth-cl", "up", netns=h)
        ip("addr", "add", "198.51.100.2/24", "dev", "eth0", netns=ns["client"])
        ip("link", "set", "eth0", "up", netns=ns["client"])
        ip("route", "add", "172.30.0.0/16", "via", "198.51.100.1", netns=ns["client"])
        ip("route", "add", "172.31.0.0/16", "via", "198.51.100.1", netns=ns["client"])
        for br, veth, ctr, net in (("br-nd0", "vctr", ns["ctr"], "172.30.0"), ("br-nd1", "voth", ns["other"], "172.31.0")):
            ip("link", "add", br, "type", "bridge", netns=h)
            ip("addr", "add", f"{net}.1/24", "dev", br, netns=h)
            ip("link", "set", br, "up", netns=h)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", netns=h)
            ip("link", "set", "eth0", "netns", ctr, netns=h)
            ip("link", "set", veth, "master", br, "up", netns=h)
            # hairpin on, as Docker does without its userland proxy: with br_netfilter loaded the
            # DNATed hairpin packet is bridged back out of the port it came in on
            ip("link", "set", veth, "type", "bridge_slave", "hairpin", "on", netns=h)
            ip("addr", "add", f"{net}.2/24", "dev", "eth0", netns=ctr)
            ip("link", "set", "eth0", "up", netns=ctr)
            ip("route", "add", "default", "via", f"{net}.1", netns=ctr)
            sysctl(h, f"net.ipv4.conf.{br}.route_localnet", 1)  # 127.0.0.1 -> bridge DNAT
        sysctl(h, "net.ipv4.ip_forward", 1)  # the throwaway host namespace's own sysctl
        # hosts differ in whether br_netfilter sends bridged frames through the ip hooks: try both
        brnf = subprocess.run(["ip", "netns", "exec", h, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"],
                              capture_output=True, text=True)
        want = request.param.rsplit("=", 1)[1]
        if tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2]) < (5, 3):
            pytest.skip("bridge-nf-call-* is per network namespace only from Linux 5.3 on")
        if brnf.returncode != 0:
            if want == "1":
                pytest.skip("br_netfilter is not loaded")
        else:
            sysctl(h, "net.bridge.bridge-nf-call-iptables", want)

        def server(where, port):
            p = subprocess.Popen(["ip", "netns", "exec", where, sys.executable, "-c", SERVER, str(port)],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready"

        def connect(where, addr, port):
            out = subprocess.run(["ip", "netns", "exec", where, sys.executable, "-c", CLIENT, addr, str(port)],
                                 capture_output=True, text=True, timeout=20)
            return out.stdout.strip()

        yield dict(ns=ns, server=server, connect=connect)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_real_packets(world):
    ns, server, connect = world["ns"], world["server"], world["connect"]
    nets = [
        NetSpec("0a" * 32, "br-nd0", "172.30.0.0/24", "172.30.0.1", internal=False, icc=True, masquerade=True,
                ports=("vctr",)),
        NetSpec("0b" * 32, "br-nd1", "172.31.0.0/24", "172.31.0.1", internal=False, icc=True, masquerade=True,
                ports=("voth",)),
    ]
    ports = [
        PortSpec("tcp", None, 8080, 8080, "172.30.0.2", 80, 80, "br-nd0", "ctr"),
        PortSpec("tcp", "127.0.0.1", 8081, 8081, "172.30.0.2", 80, 80, "br-nd0", "ctr"),
        PortSpec("tcp", None, 9000, 9009, "172.30.0.2", 80, 89, "br-nd0", "ctr"),  # offset range via map
    ]
    server(ns["ctr"], 80)
    server(ns["ctr"], 85)
    server(ns["other"], 80)
    server(ns["client"], 7000)
    # before the firewall: plain routing reaches the container directly
    assert connect(ns["client"], "172.30.0.2", 80) == "198.51.100.2"

    in_netns(ns["host"], firewall.apply, nets, ports)
    assert in_netns(ns["host"], in_sync, nets, ports)

    # published port from outside: DNAT, client address preserved
    assert connect(ns["client"], "198.51.100.1", 8080) == "198.51.100.2"
    # offset range: 9005 -> 85
    assert connect(ns["client"], "198.51.100.1", 9005) == "198.51.100.2"
    # container IPs and unpublished ports are not reachable from outside
    assert connect(ns["client"], "172.30.0.2", 80) == "TIMEOUT"
    # a port published on 127.0.0.1 does not answer on the external address ...
    assert connect(ns["client"], "198.51.100.1", 8081) == "ConnectionRefusedError"
    # ... but does from the host itself (output chain), masqueraded to the gateway
    assert connect(ns["host"], "127.0.0.1", 8081) == "172.30.0.1"
    # the host reaches its published port on its own external address too
    assert connect(ns["host"], "198.51.100.1", 8080) == "198.51.100.1"
    # containers go out masqueraded behind the host
    assert connect(ns["ctr"], "198.51.100.2", 7000) == "198.51.100.1"
    # hairpin: the container reaches its own published port, masqueraded to the gateway
    assert connect(ns["ctr"], "198.51.100.1", 8080) == "172.30.0.1"
    # isolation between netdiag bridges, also through a published port
    assert connect(ns["other"], "172.30.0.2", 80) == "TIMEOUT"
    assert connect(ns["ctr"], "172.31.0.2", 80) == "TIMEOUT"
    assert connect(ns["other"], "198.51.100.1", 8080) == "TIMEOUT"
    # the host talks to containers directly
    assert connect(ns["host"], "172.31.0.2", 80) == "172.31.0.1"

    # internal: no way out, no way in (not even published)
    internal = [nets[0]._replace(internal=True), nets[1]]
    in_netns(ns["host"], firewall.apply, internal, ports)
    assert connect(ns["ctr"], "198.51.100.2", 7000) == "TIMEOUT"
    assert connect(ns["client"], "198.51.100.1", 8080) == "TIMEOUT"

    # after remove(): plain routing again
    in_netns(ns["host"], firewall.remove)
    assert connect(ns["client"], "172.30.0.2", 80) == "198.51.100.2"
