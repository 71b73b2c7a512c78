"""What a health check checks: TARGET and options are validated before anything is sent, so no
name, path or header can smuggle anything into a request line or a command (exit 2 otherwise)."""
import pytest

from netdiag import fix_runner
from netdiag.health import spec
from runtime.errors import InvalidArgument


def test_name_port_is_a_tcp_check_and_a_url_an_http_check():
    s = spec.parse("web:8080")
    assert (s.host, s.port, s.mode, s.is_ip) == ("web", 8080, "tcp", False)
    s = spec.parse("http://10.0.0.5/health?deep=1")
    assert (s.host, s.port, s.mode, s.path, s.is_ip, s.header_host) == ("10.0.0.5", 80, "http", "/health?deep=1", True, "10.0.0.5")
    s = spec.parse("web:8080", http="/ready", host="www.example.com", expect="200,3xx")
    assert (s.mode, s.path, s.header_host, s.expect) == ("http", "/ready", "www.example.com", ((200, 200), (300, 399)))
    assert spec.parse("http://web:81/").header_host == "web:81"  # a browser's Host for a non-default port
    assert spec.parse("http://web/", tcp=True).mode == "tcp"


@pytest.mark.parametrize("target,kw", [
    ("web", {}), ("web:0", {}), ("web:65536", {}), ("web:http", {}), (":80", {}),
    ("https://web/", {}), ("http://user:pw@web/", {}), ("http://[::1]/", {}), ("we b:80", {}),
    ("web:80", {"http": "/a b"}), ("web:80", {"http": "/a\r\nX-Evil: 1"}), ("web:80", {"http": "health"}),
    ("web:80", {"http": "/", "host": "a\r\nb"}), ("web:80", {"tcp": True, "http": "/"}),
    ("web:80", {"expect": "200"}), ("web:80", {"http": "/", "expect": "600"}), ("web:80", {"http": "/", "expect": "abc"}),
    ("web:80", {"timeout": 0}), ("web:80", {"count": 0}), ("-rf:80", {}), ("1.2.3.4.5:80", {}),
])
def test_bad_input_is_refused_before_anything_is_sent(target, kw):
    with pytest.raises(InvalidArgument) as e:
        spec.parse(target, **kw)
    assert e.value.exit_code == 2


def test_expect_ranges():
    assert spec.expected(204, spec.parse_expect("2xx")) and not spec.expected(301, spec.parse_expect("200-299"))
    assert spec.expected(399, spec.DEFAULT_EXPECT) and not spec.expected(404, spec.DEFAULT_EXPECT)
    assert spec.expect_text(spec.parse_expect("200,300-302")) == "200,300-302"


def test_a_fix_runs_without_a_shell_and_refuses_shell_operators():
    assert fix_runner.steps("netdiag rm -f web && netdiag run -d --name web busybox sh -c 'a; b'") == [
        ["netdiag", "rm", "-f", "web"], ["netdiag", "run", "-d", "--name", "web", "busybox", "sh", "-c", "a; b"]]
    assert fix_runner.steps("nsenter -t 12 -n nft insert rule inet sg input ip daddr 10.0.0.2 tcp dport 80 accept")[0][:4] == \
        ["nsenter", "-t", "12", "-n"]
    for bad in ("rm -rf / ; true", "a | b", "a > /etc/passwd", "a || b", "a &&"):
        with pytest.raises(InvalidArgument):
            fix_runner.steps(bad)
