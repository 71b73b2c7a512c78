"""Bridge networking in a lab host: Docker's default bridge, user-defined bridges, publishing,
isolation, DNS, IPAM under parallel load, idempotent teardown, reconciliation after a flush."""
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.integration


def _net(lab, name):
    return json.loads(lab.ok("network", "inspect", name))[0]


def _ip_of(lab, ctr, net="bridge"):
    return json.loads(lab.ok("inspect", ctr))[0]["NetworkSettings"]["Networks"][net]["IPAddress"]


def _web(lab, name, *extra, body=None, port=80):
    body = body or name
    lab.ok("run", "-d", "--name", name, *extra, "busybox", "sh", "-c",
           f"mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www")


def _get(lab, ctr, url, timeout=3):
    return lab.run("exec", ctr, "timeout", str(timeout), "wget", "-q", "-O", "-", url)


def test_default_bridge_is_docker0_with_sequential_addresses_and_docker_macs(lab):
    lab.ok("run", "-d", "--name", "ca", "busybox", "sleep", "60")
    lab.ok("run", "-d", "--name", "cb", "busybox", "sleep", "60")
    net = _net(lab, "bridge")
    assert net["Bridge"] == "docker0" and net["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    eps = {e["Name"]: e for e in net["Containers"].values()}
    assert eps["ca"]["IPv4Address"] == "172.17.0.2/16" and eps["cb"]["IPv4Address"] == "172.17.0.3/16"
    assert eps["ca"]["MacAddress"] == "02:42:ac:11:00:02"
    # the veth's host end is on docker0, its peer is the container's eth0 (born there, same MAC)
    link = lab.in_lab("ip", "-o", "link", "show", eps["ca"]["HostVeth"]).stdout
    assert "master docker0" in link and "state UP" in link
    inside = lab.ok("exec", "ca", "ip", "-o", "link", "show", "eth0")
    assert "02:42:ac:11:00:02" in inside
    assert "default via 172.17.0.1" in lab.ok("exec", "ca", "ip", "route")
    # by IP yes, by name no: the default bridge has no name resolution, exactly like Docker
    assert lab.run("exec", "ca", "ping", "-c", "1", "-W", "2", "172.17.0.3").returncode == 0
    assert lab.run("exec", "ca", "ping", "-c", "1", "-W", "2", "cb").returncode != 0
    assert "172.17.0.2" in lab.ok("ps") or "ca" in lab.ok("ps")


def test_default_bridge_falls_back_when_docker0_is_taken(lab):
    lab.in_lab("ip", "link", "add", "docker0", "type", "bridge")  # e.g. a real Docker engine's
    lab.in_lab("ip", "addr", "add", "172.17.0.1/16", "dev", "docker0")
    lab.in_lab("ip", "link", "set", "docker0", "up")
    p = lab.run("run", "--rm", "busybox", "ip", "-o", "addr", "show", "eth0")
    assert p.returncode == 0, p.stderr
    assert "netdiag0" in p.stderr and "172.18.0.2" in p.stdout
    assert _net(lab, "bridge")["Bridge"] == "netdiag0"


def test_container_reaches_outside_through_masquerade(lab, tmp_path):
    server = lab.outside_server(tmp_path)
    lab.ok("run", "-d", "--name", "cm", "busybox", "sleep", "60")
    p = _get(lab, "cm", "http://203.0.113.1/")
    assert p.stdout == "outside\n", p.stderr
    server.kill()
    log = server.communicate()[1]
    assert "203.0.113.2" in log and "172.17." not in log  # the outside saw the lab host, not the container


def test_published_port_from_outside_host_and_hairpin_but_not_unpublished(lab):
    _web(lab, "web", "-p", "8080:80", body="hello")
    assert lab.outside_get("http://203.0.113.2:8080/").stdout == "hello\n"          # from another host
    assert lab.lab_get("http://203.0.113.2:8080/").stdout == "hello\n"              # from the host itself
    assert lab.lab_get("http://127.0.0.1:8080/").stdout == "hello\n"                # host loopback
    assert _get(lab, "web", "http://203.0.113.2:8080/").stdout == "hello\n"         # hairpin to itself
    assert "0.0.0.0:8080->80/tcp" in lab.ok("ps")
    # an unpublished port and the container's address are not reachable from outside the host
    lab.outside_run("ip", "route", "add", "172.17.0.0/16", "via", "203.0.113.2")
    assert lab.outside_get("http://172.17.0.2:80/", timeout=2).returncode != 0
    assert lab.outside_get("http://203.0.113.2:80/", timeout=2).returncode != 0


def test_port_published_on_loopback_is_not_reachable_from_other_hosts(lab):
    _web(lab, "local", "-p", "127.0.0.1:9090:80", body="local")
    assert lab.lab_get("http://127.0.0.1:9090/").stdout == "local\n"
    assert lab.outside_get("http://203.0.113.2:9090/", timeout=2).returncode != 0


SPOOF = """
import os, socket, sys, time
from runtime.kernel.ns import join
lab, outside, mac, port = sys.argv[1:5]
join(lab)  # the capture on docker0, where a DNATed SYN would go to the container
# ETH_P_ALL: packet sockets bound to one protocol never see frames a device sends
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); cap.bind(("docker0", 3))  # bind() converts to network order itself
cap.settimeout(0.2)
join(outside)  # a neighbour on the lab's eth0 link sends to the host's MAC, destination 127.0.0.1
from scapy.all import Ether, IP, TCP, sendp
sendp(Ether(dst=mac) / IP(src="203.0.113.1", dst="127.0.0.1") / TCP(sport=41234, dport=int(port), flags="S"),
      iface="eth0", count=3, verbose=False)
deadline, seen = time.monotonic() + 1.0, 0
while time.monotonic() < deadline:
    try:
        frame = cap.recv(2048)
    except socket.timeout:
        continue
    if frame[12:14] == b"\\x08\\x00" and frame[23] == 6 and int.from_bytes(frame[34:36], "big") == 41234:
        seen += 1
print(seen)
"""


def test_spoofed_syn_to_loopback_never_reaches_a_port_published_on_127(lab):
    _web(lab, "local2", "-p", "127.0.0.1:9191:80", body="local")
    assert lab.lab_get("http://127.0.0.1:9191/").stdout == "local\n"
    mac = json.loads(lab.in_lab("ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
    p = subprocess.run([sys.executable, "-c", SPOOF, f"/run/netns/{lab.name}", f"/run/netns/{lab.outside}", mac, "9191"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "0", "a spoofed SYN to 127.0.0.1 from the outside was DNATed to the container"
    assert lab.lab_get("http://127.0.0.1:9191/").stdout == "local\n"


def test_port_range_is_one_rule_and_works(lab):
    lab.ok("run", "-d", "--name", "ranged", "-p", "20000-20999:20000-20999", "busybox", "sh", "-c",
           "mkdir /www && echo range > /www/index.html && httpd -p 20500 -h /www && exec sleep 60")
    rules = lab.in_lab("nft", "list", "chain", "ip", "netdiag", "published").stdout
    assert rules.count("dnat") == 1 and "20000-20999" in rules
    assert lab.outside_get("http://203.0.113.2:20500/").stdout == "range\n"


def test_user_networks_are_isolated_and_resolve_names_and_aliases(lab):
    lab.ok("network", "create", "front")
    lab.ok("network", "create", "back", "--subnet", "10.50.0.0/24", "--gateway", "10.50.0.254")
    _web(lab, "api", "--network", "back", "--network-alias", "db", body="api")
    lab.ok("run", "-d", "--name", "cli", "--network", "back", "busybox", "sleep", "60")
    lab.ok("run", "-d", "--name", "other", "--network", "front", "busybox", "sleep", "60")
    assert _ip_of(lab, "api", "back") == "10.50.0.1"
    assert _get(lab, "cli", "http://api/").stdout == "api\n"
    assert _get(lab, "cli", "http://db/").stdout == "api\n"
    assert "nameserver 10.50.0.254" in lab.ok("exec", "cli", "cat", "/etc/resolv.conf")
    # a different bridge network cannot reach it, by address or by name
    assert _get(lab, "other", "http://10.50.0.1/", timeout=2).returncode != 0
    assert _get(lab, "other", "http://api/", timeout=2).returncode != 0
    # network connect adds eth1 and makes it reachable; disconnect takes it away
    lab.ok("network", "connect", "back", "other")
    assert "eth1" in lab.ok("exec", "other", "ip", "-o", "link")
    assert _get(lab, "other", "http://api/").stdout == "api\n"
    lab.ok("network", "disconnect", "back", "other")
    assert "eth1" not in lab.ok("exec", "other", "ip", "-o", "link")


def test_a_default_bridge_container_connected_to_a_user_network_gets_its_dns_like_docker(lab):
    # Docker 20.10 rewrites resolv.conf to its embedded DNS when such a container joins a
    # user-defined network (checked against dockerd in a lab); until then the host's copy stays
    lab.ok("network", "create", "--subnet", "10.52.0.0/24", "apps")
    _web(lab, "db", body="db")
    lab.ok("run", "-d", "--name", "app", "busybox", "sleep", "60")
    host_copy = lab.ok("exec", "app", "cat", "/etc/resolv.conf")
    assert "10.52.0.1" not in host_copy and _get(lab, "app", "http://db/", timeout=2).returncode != 0
    lab.ok("network", "connect", "apps", "db")
    lab.ok("network", "connect", "apps", "app")
    assert "nameserver 10.52.0.1" in lab.ok("exec", "app", "cat", "/etc/resolv.conf")
    assert _get(lab, "app", "http://db/").stdout == "db\n"


def test_disconnecting_the_network_with_the_default_route_hands_it_to_the_next_like_docker(lab, tmp_path):
    lab.outside_server(tmp_path)
    lab.ok("network", "create", "--subnet", "10.53.0.0/24", "old")
    lab.ok("network", "create", "--subnet", "10.54.0.0/24", "new")
    lab.ok("run", "-d", "--name", "app", "--network", "old", "busybox", "sleep", "60")
    lab.ok("network", "connect", "new", "app")
    assert "default via 10.53.0.1 dev eth0" in lab.ok("exec", "app", "ip", "route")
    lab.ok("network", "disconnect", "old", "app")
    assert "default via 10.54.0.1 dev eth1" in lab.ok("exec", "app", "ip", "route")
    assert "nameserver 10.54.0.1" in lab.ok("exec", "app", "cat", "/etc/resolv.conf")
    assert _get(lab, "app", "http://203.0.113.1/").stdout == "outside\n"


def test_icc_disabled_blocks_container_to_container_only(lab, tmp_path):
    lab.outside_server(tmp_path)
    lab.ok("network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "noicc")
    _web(lab, "s1", "--network", "noicc")
    lab.ok("run", "-d", "--name", "s2", "--network", "noicc", "busybox", "sleep", "60")
    assert _get(lab, "s2", f"http://{_ip_of(lab, 's1', 'noicc')}/", timeout=2).returncode != 0
    assert _get(lab, "s2", "http://203.0.113.1/").stdout == "outside\n"


def test_internal_network_has_no_way_out(lab, tmp_path):
    lab.outside_server(tmp_path)
    lab.ok("network", "create", "--internal", "vault")
    _web(lab, "secret", "--network", "vault")
    lab.ok("run", "-d", "--name", "peer", "--network", "vault", "busybox", "sleep", "60")
    assert _get(lab, "peer", "http://secret/").stdout == "secret\n"
    assert lab.ok("exec", "peer", "ip", "route").count("default") == 0
    assert _get(lab, "peer", "http://203.0.113.1/", timeout=2).returncode != 0


def test_fifty_parallel_runs_get_fifty_distinct_addresses(lab):
    lab.ok("network", "create", "par", "--subnet", "10.60.0.0/24", "--ip-range", "10.60.0.128/25")
    lab.ok("images")

    def one(i):
        return lab.run("run", "-d", "--network", "par", "--name", f"p{i}", "busybox", "sleep", "120", timeout=120)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(one, range(50)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    addrs = [e["IPv4Address"] for e in _net(lab, "par")["Containers"].values()]
    assert len(set(addrs)) == 50
    assert all(a.startswith("10.60.0.") and 128 <= int(a.split(".")[3].split("/")[0]) < 255 for a in addrs)


def test_static_ip_and_its_conflicts(lab):
    lab.ok("network", "create", "st", "--subnet", "10.70.0.0/24")
    lab.ok("run", "-d", "--name", "fixed", "--network", "st", "--ip", "10.70.0.50", "busybox", "sleep", "60")
    assert _ip_of(lab, "fixed", "st") == "10.70.0.50"
    p = lab.run("run", "-d", "--name", "clash", "--network", "st", "--ip", "10.70.0.50", "busybox", "sleep", "60")
    assert p.returncode != 0 and "already in use" in p.stderr
    p = lab.run("run", "-d", "--network", "st", "--ip", "10.70.0.1", "busybox", "true")
    assert p.returncode != 0 and "gateway" in p.stderr
    # the failed attaches left nothing: no record, no veth, no endpoint
    assert [c["Name"] for c in _net(lab, "st")["Containers"].values()] == ["fixed"]
    assert lab.in_lab("ip", "-o", "link").stdout.count("veth") == 1


def test_restart_brings_networking_back(lab):
    lab.ok("network", "create", "rs")
    _web(lab, "rsweb", "--network", "rs", "-p", "8181:80")
    lab.ok("restart", "-t", "0", "rsweb")
    assert lab.outside_get("http://203.0.113.2:8181/").stdout == "rsweb\n"
    lab.ok("stop", "-t", "0", "rsweb")
    assert _net(lab, "rs")["Containers"] == {}
    assert lab.outside_get("http://203.0.113.2:8181/", timeout=2).returncode != 0


def test_network_rm_refuses_with_endpoints_and_teardown_is_idempotent(lab):
    lab.ok("network", "create", "gone")
    lab.ok("run", "-d", "--name", "gc", "--network", "gone", "busybox", "sleep", "60")
    p = lab.run("network", "rm", "gone")
    assert p.returncode != 0 and "(gc)" in p.stderr
    bridge = _net(lab, "gone")["Bridge"]
    lab.in_lab("ip", "link", "del", bridge)  # the kernel object vanished behind netdiag's back
    lab.ok("network", "rm", "-f", "gone")
    assert "gone" not in lab.ok("network", "ls")
    lab.ok("rm", "-f", "gc")
    assert "netdiag" not in lab.in_lab("nft", "list", "tables").stdout or lab.ok("network", "ls")


def test_rules_are_restored_after_a_flush(lab):
    _web(lab, "flushed", "-p", "8282:80")
    assert lab.outside_get("http://203.0.113.2:8282/").stdout == "flushed\n"
    lab.in_lab("nft", "flush", "table", "ip", "netdiag")
    assert lab.outside_get("http://203.0.113.2:8282/", timeout=2).returncode != 0
    lab.ok("network", "ls")  # reading never touches the firewall: the evidence stays
    lab.ok("network", "inspect", "bridge")
    assert lab.outside_get("http://203.0.113.2:8282/", timeout=2).returncode != 0
    assert "repair" in lab.ok("system", "--help")
    lab.ok("system", "repair")  # on purpose, as dockerd does when it starts
    assert lab.outside_get("http://203.0.113.2:8282/").stdout == "flushed\n"
    lab.in_lab("nft", "flush", "table", "ip", "netdiag")
    lab.ok("network", "create", "another")  # and a command that changes networks rewrites them whole
    assert lab.outside_get("http://203.0.113.2:8282/").stdout == "flushed\n"


def test_other_tables_are_never_touched(lab):
    lab.in_lab("nft", "add", "table", "inet", "theirs")
    lab.in_lab("nft", "add", "chain", "inet", "theirs", "c", "{ type filter hook input priority 0; }")
    _web(lab, "tw", "-p", "8383:80")
    lab.ok("rm", "-f", "tw")
    assert "table inet theirs" in lab.in_lab("nft", "list", "tables").stdout


def test_dns_forwards_upstream_except_from_internal_networks(lab, tmp_path):
    records = tmp_path / "upstream.json"
    records.write_text(json.dumps({"network": "x", "internal": True, "upstream": [], "records": {"example.test": ["203.0.113.99"]}}))
    upstream = subprocess.Popen([sys.executable, "-m", "runtime.networks.dns", "--listen", "203.0.113.1", "--port", "53",
                                 "--records", str(records)], preexec_fn=lab.enter(lab.outside))
    lab._procs.append(upstream)
    lab.ok("network", "create", "open")
    lab.ok("network", "create", "--internal", "closed")
    lab.ok("run", "-d", "--name", "opn", "--network", "open", "busybox", "sleep", "60")
    lab.ok("run", "-d", "--name", "inl", "--network", "closed", "busybox", "sleep", "60")
    assert "203.0.113.99" in lab.ok("exec", "opn", "nslookup", "example.test")
    assert "203.0.113.99" not in lab.run("exec", "inl", "nslookup", "example.test").stdout


@pytest.mark.parametrize("args,words", [
    (["network", "create", "--subnet", "10.0.0.0/33", "x"], "Invalid subnet"),
    (["network", "create", "--subnet", "10.1.0.0/24", "--gateway", "10.2.0.1", "x"], "outside subnet"),
    (["network", "create", "-o", "com.docker.network.bridge.name=averyveryverylongname", "x"], "Invalid bridge name"),
    (["network", "create", "--subnet", "203.0.113.0/25", "x"], "overlaps"),
    (["run", "--rm", "-p", "70000:80", "busybox", "true"], "Invalid host port"),
    (["run", "--rm", "--network", "nosuchnet", "busybox", "true"], "Unknown network"),
    (["network", "create", "bridge"], "reserved"),
    (["network", "create", "--subnet", "127.0.0.0/24", "x"], "is loopback"),
    (["network", "create", "--subnet", "224.0.0.0/24", "x"], "is multicast"),
    (["network", "create", "--subnet", "169.254.0.0/24", "x"], "is link-local"),
    (["network", "create", "--subnet", "0.0.0.0/24", "x"], "this network"),
    (["network", "create", "--subnet", "240.0.0.0/24", "x"], "class E"),
    (["network", "create", "--subnet", "10.9.0.0/24", "--ip-range", "224.0.0.0/28", "x"], "is multicast"),
])
def test_bad_network_input_is_a_clear_error_and_creates_nothing(lab, args, words):
    p = lab.run(*args)
    assert p.returncode != 0 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "x" not in [n["Name"] for n in map(json.loads, lab.ok("network", "ls", "--format", "json").splitlines())]
    assert "br-" not in lab.in_lab("ip", "-o", "link").stdout


def test_bad_run_input_is_refused_before_anything_starts(lab):
    lab.ok("network", "create", "v", "--subnet", "10.71.0.0/24")
    for args, words in ((["--network", "v", "--ip", "10.72.0.5"], "not a host address of subnet 10.71.0.0/24"),
                        (["--network", "v", "--ip", "10.71.0.255"], "not a host address"),
                        (["--ip", "172.17.0.9"], "user-defined network"),
                        (["--cpus", "1000"], "CPUs available")):
        p = lab.run("run", "--rm", *args, "busybox", "true")
        assert p.returncode == 125 and words in p.stderr and "Traceback" not in p.stderr, (args, p.returncode, p.stderr)
    assert lab.ok("ps", "-aq").strip() == ""


def test_a_failed_create_never_deletes_a_bridge_it_did_not_make(lab):
    lab.ok("run", "-d", "--name", "keep", "busybox", "sleep", "60")  # the default bridge: docker0 in this lab
    gw = _net(lab, "bridge")["IPAM"]["Config"][0]["Gateway"]
    p = lab.run("network", "create", "-o", "com.docker.network.bridge.name=docker0", "steal")
    assert p.returncode != 0 and "already used by network bridge" in p.stderr, p.stderr
    assert "docker0" in lab.in_lab("ip", "-o", "link", "show", "docker0").stdout
    assert lab.run("exec", "keep", "ping", "-c", "1", "-W", "2", gw).returncode == 0
    assert "steal" not in lab.ok("network", "ls")


def test_overlapping_user_subnets_are_refused(lab):
    lab.ok("network", "create", "--subnet", "10.80.0.0/16", "one")
    p = lab.run("network", "create", "--subnet", "10.80.5.0/24", "two")
    assert p.returncode != 0 and "SUBNET_OVERLAP" in p.stderr


def test_a_foreign_forward_drop_policy_is_named_with_the_command_that_fixes_it(lab):
    """No DOCKER-USER here: netdiag edits no other table, but says what would let its traffic through."""
    import os
    import re

    lab.in_lab("nft", "add", "table", "inet", "strict")
    lab.in_lab("nft", "add", "chain", "inet", "strict", "forward", "{ type filter hook forward priority 0 ; policy drop ; }")
    p = lab.run("network", "create", "--subnet", "10.91.0.0/24", "walled")
    assert p.returncode == 0 and "inet strict forward (policy drop)" in p.stderr, p.stderr
    br = _net(lab, "walled")["Bridge"]
    fix = re.search(r"to let it through: (.*)$", p.stderr.strip()).group(1)
    assert fix == f'nft insert rule inet strict forward iifname "{br}" accept; nft insert rule inet strict forward oifname "{br}" accept'
    _web(lab, "inner", "--network", "walled")
    p = lab.run("run", "-d", "--name", "outer", "--network", "walled", "busybox", "sleep", "60")
    assert p.returncode == 0 and "policy drop" in p.stderr  # run warns too
    assert _get(lab, "outer", "http://inner/", timeout=2).returncode != 0
    subprocess.run(["sh", "-c", fix], check=True, preexec_fn=lab.enter(), env={**os.environ})
    assert _get(lab, "outer", "http://inner/").stdout == "inner\n"
