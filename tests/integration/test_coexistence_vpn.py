"""netdiag on a host with a VPN: what wg-quick installs for a full tunnel, and a split tunnel's route
that covers a container network's subnet.

This kernel has no WireGuard module (`ip link add wg0 type wireguard`: "Unknown device type"), so the
VPN device is a stand-in: a tun device named wg0, as OpenVPN's is, with a reader process attached
(the VPN client's end: it records every packet the kernel hands to the tunnel, so a test sees what
really went in). The routing is wg-quick's own (wg-quick(8), `add_default`): 10.66.0.2/32 on wg0,
`ip route add default dev wg0 table 51820`, `ip rule add not fwmark 51820 table 51820`,
`ip rule add table main suppress_prefixlength 0`.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.coexistkit import get, network, run_fix, trace
from tests.dockerkit import root_netns_state
from tests.labkit import World, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")]

PAGE = "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"
BEYOND = "192.0.2.80"  # an address the outside namespace holds too: reached via eth0 without the VPN
# the VPN client's end of the tun device: prints "SRC DST PROTO" of every IPv4 packet it is handed
TUN_READER = r"""
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", sys.argv[1].encode(), 0x0001 | 0x1000))  # TUNSETIFF: IFF_TUN|IFF_NO_PI
print("ready", flush=True)
while True:
    p = os.read(fd, 65535)
    if len(p) >= 20 and p[0] >> 4 == 4:
        print(".".join(map(str, p[12:16])), ".".join(map(str, p[16:20])), p[9], flush=True)
"""


class Tunnel:
    """wg0 (a tun device) in the lab host and its reader; `seen` holds what entered the tunnel."""

    def __init__(self, lab: World):
        self.lab, self.seen = lab, []
        assert lab.in_lab("ip", "tuntap", "add", "dev", "wg0", "mode", "tun").returncode == 0
        self.reader = subprocess.Popen([sys.executable, "-c", TUN_READER, "wg0"], stdout=subprocess.PIPE, text=True,
                                       preexec_fn=lab.enter())
        assert self.reader.stdout.readline().strip() == "ready"
        threading.Thread(target=self._read, daemon=True).start()
        for argv in (["ip", "addr", "add", "10.66.0.2/32", "dev", "wg0"], ["ip", "link", "set", "wg0", "up"]):
            assert lab.in_lab(*argv).returncode == 0, argv

    def _read(self):
        for line in self.reader.stdout:
            self.seen.append(tuple(line.split()))

    def saw(self, dst: str, proto: int = 6) -> bool:
        return wait_for(lambda: any(d == dst and p == str(proto) for _, d, p in self.seen), 5)

    def close(self):
        self.reader.kill()
        self.reader.wait()


@contextlib.contextmanager
def vpn_lab(tmp: Path):
    """A lab host with network n (web publishing 8080 -> 80, cli), a wg0 tunnel, and BEYOND on the
    outside's loopback; everything removed after, and the root namespace checked unchanged."""
    root_before = root_netns_state()
    lab = World(state_dir=tmp / "ndroot")
    tun = None
    try:
        lab.create()
        lab.outside_server(tmp)
        assert lab.outside_run("ip", "addr", "add", f"{BEYOND}/32", "dev", "lo").returncode == 0
        tun = Tunnel(lab)
        lab.ok("network", "create", "n")
        lab.ok("run", "-d", "--name", "web", "--network", "n", "-p", "8080:80", "busybox", "sh", "-c", PAGE.format(body="web"))
        lab.ok("run", "-d", "--name", "cli", "--network", "n", "busybox", "sleep", "600")
        yield lab, tun
    finally:
        if tun is not None:
            tun.close()
        lab.destroy()
        left = lab.leaks()
        if root_netns_state() != root_before:
            left.append("the root network namespace's links or nftables ruleset CHANGED")
        assert not left, left


def full_tunnel(lab):
    """wg-quick's full-tunnel routing."""
    for argv in (["ip", "route", "add", "default", "dev", "wg0", "table", "51820"],
                 ["ip", "rule", "add", "not", "fwmark", "51820", "table", "51820"],
                 ["ip", "rule", "add", "table", "main", "suppress_prefixlength", "0"]):
        assert lab.in_lab(*argv).returncode == 0, argv


def test_a_full_tunnel_takes_the_hosts_default_and_leaves_container_networks_working(tmp_path):
    with vpn_lab(tmp_path) as (lab, tun):
        full_tunnel(lab)
        # the tunnel took the default route: what is not on a local subnet goes into wg0, the containers' too
        r = trace(lab, "cli", BEYOND, "--port", "80")
        assert r["verdict"] == "unknown" and "enters the tunnel wg0" in r["summary"], r["summary"]
        assert "not fwmark 51820 lookup 51820" in r["summary"]
        assert r["hops"][-1]["interface"] == "wg0" and "table 51820" in r["hops"][-1]["detail"]
        assert get(lab, "cli", f"http://{BEYOND}/").returncode != 0  # the stand-in VPN delivers nothing
        assert tun.saw(BEYOND), tun.seen  # ...but the kernel put the container's packet into the tunnel, as traced
        # suppress_prefixlength 0 keeps main's specific routes: the network, its way out to eth0's subnet, its port
        assert get(lab, "cli", "http://203.0.113.1/").stdout == "outside\n"
        assert get(lab, "cli", "http://web/").stdout == "web\n"
        assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web\n"
        assert trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")["verdict"] == "delivered"
        assert trace(lab, "cli", "203.0.113.1", "--port", "80")["verdict"] == "delivered"


def test_a_vpn_route_over_a_container_subnet_is_a_subnet_overlap_and_the_fix_gives_it_back(tmp_path):
    with vpn_lab(tmp_path) as (lab, tun):
        import ipaddress

        subnet, br = ipaddress.ip_network(network(lab, "n")["IPAM"]["Config"][0]["Subnet"]), network(lab, "n")["Bridge"]
        corporate = next(subnet.subnets(new_prefix=24))  # a split tunnel's route, more specific than the bridge's
        assert lab.in_lab("ip", "route", "add", str(corporate), "dev", "wg0").returncode == 0
        assert lab.outside_get("http://203.0.113.2:8080/").returncode != 0  # DNATed to the container, then into wg0
        assert get(lab, "cli", "http://203.0.113.1/").returncode != 0  # the answers go into wg0 too
        r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
        assert (r["verdict"], r["cause"]) == ("blocked", "SUBNET_OVERLAP"), r["summary"]
        assert f"{corporate} dev wg0" in r["summary"] and f"network n ({subnet}" in r["summary"]
        halves = list(corporate.subnets(prefixlen_diff=1))
        assert r["fix_command"] == " && ".join(f"ip route add {h} dev {br}" for h in halves)
        assert r["fix_check"]["delivers"], r["fix_check"]
        r2 = trace(lab, "cli", "203.0.113.1", "--port", "80")  # the reply's way back names the same cause
        assert (r2["cause"], r2["fix_command"]) == ("SUBNET_OVERLAP", r["fix_command"]), r2["summary"]
        run_fix(lab, r)
        assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web\n"  # in, and the answer back
        assert get(lab, "cli", "http://203.0.113.1/").stdout == "outside\n"  # out, and the answer back
        assert trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")["verdict"] == "delivered"
        # control: the VPN keeps what is not the containers' (its own address space beyond the subnet)
        assert lab.in_lab("ip", "route", "add", "10.99.0.0/16", "dev", "wg0").returncode == 0
        lab.lab_get("http://10.99.0.5/", timeout=1)
        assert tun.saw("10.99.0.5"), tun.seen


def test_a_vpn_rule_before_main_over_a_container_subnet_is_fixed_by_a_rule_that_looks_it_up_in_main(tmp_path):
    with vpn_lab(tmp_path) as (lab, _tun):
        subnet = network(lab, "n")["IPAM"]["Config"][0]["Subnet"]
        for argv in (["ip", "route", "add", subnet, "dev", "wg0", "table", "52"], ["ip", "rule", "add", "priority", "5270", "table", "52"]):
            assert lab.in_lab(*argv).returncode == 0, argv  # a VPN client's own table, consulted before main
        r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
        assert (r["verdict"], r["cause"]) == ("blocked", "SUBNET_OVERLAP"), r["summary"]
        assert r["fix_command"] == f"ip rule add priority 5269 to {subnet} lookup main"
        assert r["fix_check"]["delivers"], r["fix_check"]
        run_fix(lab, r)
        assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web\n"
        assert get(lab, "cli", "http://203.0.113.1/").stdout == "outside\n"


def test_network_create_skips_and_refuses_subnets_a_vpn_route_covers(tmp_path):
    with vpn_lab(tmp_path) as (lab, _tun):
        import ipaddress

        taken = ipaddress.ip_network(network(lab, "n")["IPAM"]["Config"][0]["Subnet"])
        # the VPN routes the next pools netdiag would pick, one in main, one only in its own table
        nxt = [ipaddress.ip_network(f"172.{taken.network_address.packed[1] + k}.0.0/16") for k in (1, 2)]
        assert lab.in_lab("ip", "route", "add", str(nxt[0]), "dev", "wg0").returncode == 0
        assert lab.in_lab("ip", "route", "add", str(nxt[1]), "dev", "wg0", "table", "51820").returncode == 0
        lab.ok("network", "create", "m")
        got = ipaddress.ip_network(network(lab, "m")["IPAM"]["Config"][0]["Subnet"])
        assert not any(got.overlaps(x) for x in [taken, *nxt]), got  # like Docker: pools a route covers are skipped
        p = lab.run("network", "create", "--subnet", str(next(nxt[0].subnets(new_prefix=24))), "clash")
        assert p.returncode != 0 and "overlaps the host's route" in p.stderr and "wg0" in p.stderr, p.stderr
