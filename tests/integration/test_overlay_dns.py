"""Names on overlay networks resolve as on Docker's: a container on one host finds one on another
host by its name, its aliases and its short id (the cluster store's endpoints, served inside the
container on 127.0.0.11), connects by name, and the name goes when that container goes. Two lab
hosts on one underlay with a real etcd; the module's fixture checks nothing is left."""
import json
import os
import signal
import time

import pytest

from tests.labkit import joined_cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    yield from joined_cluster(tmp_path_factory.mktemp("ovdns") / "lab")


def _ip(cl, i, net, ctr):
    ep = next(e for e in json.loads(cl.ok(i, "network", "inspect", net))[0]["Containers"].values() if e["Name"] == ctr)
    return ep["IPv4Address"].split("/")[0]


def _lookup(cl, i, ctr, name):
    """The addresses busybox's nslookup prints for `name`, asked from the container (None: it failed)."""
    p = cl.run(i, "exec", ctr, "nslookup", name)
    if p.returncode != 0:
        return None
    answer = p.stdout.split("Name:", 1)[-1] if "Name:" in p.stdout else ""
    return {line.split()[-1] for line in answer.splitlines() if line.startswith("Address")}


def test_a_container_resolves_and_reaches_one_on_another_host_by_name_until_it_goes(cl):
    cl.ok(0, "network", "create", "-d", "overlay", "ovdns")
    web_id = cl.ok(1, "run", "-d", "--name", "web", "--network", "ovdns", "--network-alias", "www", "busybox", "sh", "-c",
                   "mkdir -p /w && echo hello-from-h2 > /w/index.html && exec httpd -f -p 80 -h /w").strip()
    cl.ok(0, "run", "-d", "--name", "cli", "--network", "ovdns", "busybox", "sleep", "600")
    web_ip, cli_ip = _ip(cl, 1, "ovdns", "web"), _ip(cl, 0, "ovdns", "cli")

    # Docker's resolv.conf on an overlay; the resolver is in the container itself, nothing on the host
    assert "nameserver 127.0.0.11" in cl.ok(0, "exec", "cli", "cat", "/etc/resolv.conf")
    assert ":53 " not in cl.in_host(0, "ss", "-lnu").stdout
    # web was in the store before cli attached: resolvable from cli's first instruction on
    assert _lookup(cl, 0, "cli", "web") == {web_ip}
    assert _lookup(cl, 0, "cli", "www") == {web_ip}  # its network-scoped alias
    assert _lookup(cl, 0, "cli", web_id[:12]) == {web_ip}
    assert cl.ok(0, "exec", "cli", "timeout", "5", "wget", "-q", "-O", "-", "http://web/").strip() == "hello-from-h2"
    health = json.loads(cl.ok(0, "health", "http://web/", "--from", "cli", "--json"))  # resolved as cli resolves it
    assert health["healthy"] and health["status"] == 200, health
    # port 53 stays the container's own (Docker's resolver too is 127.0.0.11:53 redirected to a free port)
    out = cl.ok(0, "exec", "cli", "sh", "-c", "nc -l -p 53 </dev/null & sleep 0.5; netstat -tln; "
                "nslookup web >/dev/null && echo resolved; kill %1")
    assert any(line.split()[3] in (":::53", "0.0.0.0:53") for line in out.splitlines() if line.startswith("tcp")), out
    assert "resolved" in out, out
    # cli came after web: host 2 learns its name from the store's watch
    assert wait_for(lambda: _lookup(cl, 1, "web", "cli") == {cli_ip}, 10), _lookup(cl, 1, "web", "cli")

    # a resolver that dies is started again by the agent's resync (NETDIAG_CLUSTER_RESYNC, 5 s)
    os.kill(json.loads((cl.hosts[0].state_dir / "networks" / "overlays.dns.json").read_text())["resolver"]["pid"], signal.SIGKILL)
    assert wait_for(lambda: _lookup(cl, 0, "cli", "web") == {web_ip}, 15), "the overlays' resolver was not started again"

    cl.ok(1, "rm", "-f", "web")
    assert wait_for(lambda: _lookup(cl, 0, "cli", "web") is None, 10), "web still resolves after it was removed"
    assert _lookup(cl, 0, "cli", "www") is None


def test_the_resolver_goes_with_the_last_overlay_endpoint_of_its_host(cl):
    records = cl.hosts[0].state_dir / "networks" / "overlays.dns.json"
    pid = json.loads(records.read_text())["resolver"]["pid"]
    cl.ok(0, "rm", "-f", "cli")
    assert not records.exists()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the overlays' resolver outlived the host's last overlay endpoint"
    cl.ok(0, "network", "rm", "ovdns")


def test_a_container_on_an_overlay_and_a_bridge_resolves_the_names_of_both(cl):
    cl.ok(0, "network", "create", "-d", "overlay", "ovboth")
    cl.ok(0, "network", "create", "front")
    cl.ok(1, "run", "-d", "--name", "far", "--network", "ovboth", "busybox", "sleep", "600")
    cl.ok(0, "run", "-d", "--name", "near", "--network", "front", "busybox", "sleep", "600")
    cl.ok(0, "run", "-d", "--name", "both", "--network", "ovboth", "busybox", "sleep", "600")
    cl.ok(0, "network", "connect", "front", "both")
    assert "nameserver 127.0.0.11" in cl.ok(0, "exec", "both", "cat", "/etc/resolv.conf")
    assert _lookup(cl, 0, "both", "far") == {_ip(cl, 1, "ovboth", "far")}
    assert _lookup(cl, 0, "both", "near") == {_ip(cl, 0, "front", "near")}
    assert _lookup(cl, 0, "near", "far") is None  # near is on no overlay: its bridge's resolver knows front only
    assert "netdiag_dns" in cl.in_ctr(0, "both", "nft", "list", "tables").stdout  # 127.0.0.11:53 redirected in both
    cl.ok(0, "network", "disconnect", "ovboth", "both")  # back to its bridge's resolver, the redirect gone
    assert "nameserver 127.0.0.11" not in cl.ok(0, "exec", "both", "cat", "/etc/resolv.conf")
    assert _lookup(cl, 0, "both", "near") == {_ip(cl, 0, "front", "near")}
    assert wait_for(lambda: "netdiag_dns" not in cl.in_ctr(0, "both", "nft", "list", "tables").stdout, 5)
    for i, name in ((0, "both"), (0, "near"), (1, "far")):
        cl.ok(i, "rm", "-f", name)
    cl.ok(0, "network", "rm", "ovboth")
    cl.ok(0, "network", "rm", "front")
