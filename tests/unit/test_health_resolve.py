"""Resolving like the source: its resolv.conf (nameservers, search, ndots, timeout, attempts) and
hosts file, read as the stub resolver reads them."""
from netdiag.health import resolve


def test_resolv_conf_as_glibc_reads_it():
    conf = resolve.parse_resolv_conf("""# generated
nameserver 10.61.0.1
nameserver fe80::1%eth0
nameserver 8.8.8.8
nameserver 9.9.9.9   # a fourth is ignored, like glibc
search corp.example svc.local.
options ndots:2 timeout:1 attempts:3 rotate
""")
    assert conf.nameservers == ["10.61.0.1", "8.8.8.8"] and conf.skipped == ["fe80::1"]
    assert (conf.search, conf.ndots, conf.timeout, conf.attempts) == (["corp.example", "svc.local"], 2, 1.0, 3)
    assert resolve.parse_resolv_conf("").nameservers == []


def test_search_order_follows_ndots():
    conf = resolve.parse_resolv_conf("search a.example\noptions ndots:1")
    assert resolve.candidates("web", conf) == ["web.a.example", "web"]
    assert resolve.candidates("web.b", conf) == ["web.b", "web.b.a.example"]
    assert resolve.candidates("web.", conf) == ["web"]
    assert resolve.candidates("web", resolve.parse_resolv_conf("options ndots:0")) == ["web"]  # netdiag's networks


def test_hosts_file():
    hosts = resolve.parse_hosts("127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n10.0.0.2 web1 Web1.Example.\n# 10.0.0.3 old\n")
    assert hosts["localhost"] == ["127.0.0.1"] and hosts["web1"] == ["10.0.0.2"] and hosts["web1.example"] == ["10.0.0.2"]
    assert "old" not in hosts and "ip6-localhost" not in hosts


def test_the_source_files_are_its_own(tmp_path):
    f = resolve.files_for({"kind": "container", "pids": [1]}, {"name": "api", "pid": 4242})
    assert (f.resolv_conf, f.hosts) == ("/proc/4242/root/etc/resolv.conf", "/proc/4242/root/etc/hosts") and "api" in f.where
    f = resolve.files_for({"kind": "netns", "netns_names": ["no-such-netns-here"], "pids": []}, None)
    assert f.resolv_conf == "/etc/resolv.conf"  # no /etc/netns/NAME/resolv.conf: what ip netns exec leaves
    assert resolve.files_for({"kind": "host"}, None).resolv_conf == "/etc/resolv.conf"
    assert resolve.files_for({"kind": "pid", "pids": [77]}, None).hosts == "/proc/77/root/etc/hosts"


def test_a_name_in_the_hosts_file_needs_no_nameserver(tmp_path):
    (tmp_path / "hosts").write_text("10.9.9.9 db\n")
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    files = resolve.Files(str(tmp_path / "resolv.conf"), str(tmp_path / "hosts"), "test's")
    r = resolve.resolve("/nonexistent-netns", "DB", files, deadline=0)  # never enters a namespace
    assert (r["address"], r["source"], r["error"]) == ("10.9.9.9", "hosts", None)
