"""netdiag on a host where firewalld runs: a real firewalld (Debian's 1.3, nftables backend) in the
lab host, on a private D-Bus bus with a private config (tests/firewalldkit.py).

firewalld's default zone (public) rejects forwarded traffic that enters on an interface in no zone,
so a netdiag bridge firewalld was never told about cannot reach out, nor reach its own gateway's
DNS; a published port still works (firewalld accepts DNATed connections). The diagnosis must name
firewalld's rule as another manager's (FOREIGN_FIREWALL, not a FIREWALL_DROP whose fix is an nft
rule firewalld wipes at its next reload) and fix it at firewalld's level, the way Docker does with
its `docker` zone: the bridge goes into the trusted zone. The fix, applied, makes the container
reach out and answers come back; another network, not named in the fix, stays rejected."""
from __future__ import annotations

import subprocess

import pytest

from tests.coexistkit import get, network, run_fix, trace
from tests.firewalldkit import HAVE_FIREWALLD, firewalld_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_FIREWALLD, reason="firewalld is not installed")]

PAGE = "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture(scope="module")
def fl(tmp_path_factory):
    """Network n (web publishing 8080 -> 80, cli) and network other (ctl), firewalld running."""
    with firewalld_lab(tmp_path_factory.mktemp("fwd")) as (lab, fw):
        p = lab.run("network", "create", "--subnet", "10.124.0.0/24", "n")
        assert p.returncode == 0, p.stderr
        lab.create_note = p.stderr
        lab.ok("network", "create", "--subnet", "10.125.0.0/24", "other")
        lab.ok("run", "-d", "--name", "web", "--network", "n", "-p", "8080:80", "busybox", "sh", "-c", PAGE.format(body="web"))
        lab.ok("run", "-d", "--name", "cli", "--network", "n", "busybox", "sleep", "600")
        lab.ok("run", "-d", "--name", "ctl", "--network", "other", "busybox", "sleep", "600")
        yield lab, fw


def test_firewalld_is_really_there_and_its_table_only_in_the_lab(fl):
    lab, fw = fl
    assert fw.cmd("--get-default-zone").stdout.strip() == "public"
    assert "table inet firewalld" in lab.in_lab("nft", "list", "tables").stdout
    assert "firewalld" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def test_a_published_port_works_through_firewalld(fl):
    lab, _ = fl
    assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web\n"  # firewalld accepts DNATed connections
    # the outside by name: every lab's outside holds 203.0.113.1, another engineer's lab's too
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
    assert r["verdict"] == "delivered", r["summary"]


def test_firewalds_zone_reject_is_a_foreign_firewall_fixed_with_firewall_cmd(fl):
    lab, fw = fl
    br, other_br = network(lab, "n")["Bridge"], network(lab, "other")["Bridge"]
    # said at create time, at firewalld's level: an nft rule in its table would be gone at its next reload
    assert f"firewall-cmd --zone=trusted --change-interface={br}" in lab.create_note
    foreign = {(f["table"], f["chain"], f["rule"]) for f in network(lab, "n")["ForeignRules"]}
    assert ("inet firewalld", "filter_FORWARD", "reject") in foreign  # inspect shows who decides the bridge's traffic
    assert get(lab, "cli", "http://203.0.113.1/").returncode != 0
    r = trace(lab, "cli", "203.0.113.1", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "FOREIGN_FIREWALL"), r["summary"]
    assert f"bridge {br}) is in no firewalld zone" in r["summary"]
    assert r["reconciled"].startswith("static and live agree")  # the kernel's packet trace names firewalld's rule too
    rule = next(e for e in r["evidence"] if e["kind"] == "nft_rule")
    assert rule["table"] == "inet firewalld" and rule["chain"].startswith("filter_FWD_") and "reject" in rule["rule"]
    assert r["fix_command"] == f"firewall-cmd --zone=trusted --change-interface={br}"
    assert r["fix_check"]["delivers"], r["fix_check"]
    try:
        run_fix(lab, r)
        assert fw.cmd("--get-zone-of-interface=" + br).stdout.strip() == "trusted"
        assert get(lab, "cli", "http://203.0.113.1/").stdout == "outside\n"  # out, and the answer back
        assert get(lab, "cli", "http://web/").stdout == "web\n"  # the network's DNS and bridged traffic too
        assert lab.outside_get("http://203.0.113.2:8080/").stdout == "web\n"  # the way in still works
        assert trace(lab, "cli", "203.0.113.1", "--port", "80")["verdict"] == "delivered"
        # control: the fix opened only that bridge; the other network is still rejected by firewalld
        assert get(lab, "ctl", "http://203.0.113.1/").returncode != 0
        r2 = trace(lab, "ctl", "203.0.113.1", "--port", "80")
        assert (r2["cause"], r2["fix_command"]) == ("FOREIGN_FIREWALL", f"firewall-cmd --zone=trusted --change-interface={other_br}")
        # bound to public by name now (firewalld's rules name the bridge): still firewalld's reject, same fix
        assert fw.cmd("--zone=public", f"--add-interface={other_br}").returncode == 0
        r3 = trace(lab, "ctl", "203.0.113.1", "--port", "80")
        assert (r3["cause"], r3["fix_command"]) == ("FOREIGN_FIREWALL", r2["fix_command"]), r3["summary"]
        assert "is bound to a firewalld zone that does not allow it" in r3["summary"]
        run_fix(lab, r3)
        assert get(lab, "ctl", "http://203.0.113.1/").stdout == "outside\n"
    finally:
        fw.cmd("--zone=trusted", "--remove-interface=" + br)
        fw.cmd("--zone=trusted", "--remove-interface=" + other_br)
