"""HAProxy as it runs: its stats (captured from HAProxy 2.6's stats socket) and its configuration,
read into the check it is told to do; and container health checks read into network checks."""
from netdiag.health import docker_healthcheck
from netdiag.observe import haproxy

HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,"
          "bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,"
          "check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,"
          "req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,"
          "rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,"
          "agent_rise,agent_fall,agent_health,addr,cookie,mode,algo\n")
STAT = HEADER + (
    "www,FRONTEND,,,0,0,9983,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,\n"
    "web,web1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,3,0,,1,3,1,,0,,2,0,,0,L7OK,200,1,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,"
    "Layer7 check passed,,1,2,2,,,,10.61.0.2:80,,http,\n"
    "web,web3,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,2,2,,1,3,3,,0,,2,0,,0,* L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,"
    "Connection refused,,0,0,0,0,,,,Layer4 connection problem,,1,2,0,,,,10.61.0.2:81,,http,\n"
    "web,BACKEND,0,0,0,0,999,0,0,0,0,0,,0,0,0,0,UP,1,1,0,,0,3,0,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin\n")
STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web 1 web1 10.61.0.2 2 0 1 1 4 15 3 2 6 0 0 0 - 80 - 0 0 - - 0
3 web 3 web3 10.61.0.2 0 0 1 1 3 8 2 0 6 0 0 0 - 81 - 0 8081 - - 8081
"""
CONFIG = r"""
global
    stats socket /run/haproxy/admin.sock mode 660 level admin
    stats socket ipv4@127.0.0.1:9999 level admin
defaults
    mode http
    timeout connect 1s
    timeout check 2s
    default-server inter 500ms fall 2 rise 1
frontend www
    bind :80
    default_backend web
backend web
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host web.example   # the new syntax
    http-check expect status 200
    server web1 10.61.0.11:80 check
    server web2 10.61.0.12:80 check port 8081 inter 3s
backend old
    option httpchk HEAD /ping HTTP/1.1\r\nHost:\ legacy.example
    http-check expect rstatus ^2
    server a 10.0.0.1:8080 check
listen plain
    bind :90
    server b 10.0.0.2:90
    server c 10.0.0.3:90 check
"""


def test_stats_rows_and_server_state_merge():
    rows = haproxy.parse_stat(STAT)
    assert [r["svname"] for r in rows] == ["FRONTEND", "web1", "web3", "BACKEND"]
    state = haproxy.parse_servers_state(STATE)
    assert state[1]["srv_check_port"] == "8081" and state[0]["srv_name"] == "web1"


def test_servers_from_a_socket(monkeypatch):
    monkeypatch.setattr(haproxy, "query", lambda path, cmd, timeout=3.0: STAT if cmd == "show stat" else STATE)
    srv = haproxy.servers("/x")
    assert [(s["server"], s["status"], s["check_status"], s["port"], s["check_port"]) for s in srv] == [
        ("web1", "UP", "L7OK", 80, None), ("web3", "DOWN", "L4CON", 81, 8081)]  # '* ' (a check under way) dropped
    assert srv[1]["last_chk"] == "Connection refused" and srv[1]["ip"] == "10.61.0.2"


def test_the_configured_check():
    conf = haproxy.parse_config(CONFIG)
    assert conf.stats_sockets == ["/run/haproxy/admin.sock"]  # TCP stats sockets are not files to open
    check, servers = conf.backends["web"]
    assert (check.kind, check.method, check.uri, check.host, check.expect) == ("http", "GET", "/health", "web.example", "200")
    assert servers["web1"].check and servers["web1"].inter == 0.5 and servers["web1"].check_port is None
    assert servers["web2"].check_port == 8081 and servers["web2"].inter == 3
    assert haproxy.check_timeout(check, servers["web1"]) == (0.5, 2.0)  # min(timeout connect, inter), timeout check
    old, _ = conf.backends["old"]
    assert (old.method, old.uri, old.host, old.expect) == ("HEAD", "/ping", "legacy.example", "2xx")
    plain, servers = conf.backends["plain"]
    assert plain.kind == "tcp" and not servers["b"].check and servers["c"].check
    assert haproxy.duration("1500") == 1.5 and haproxy.duration("2m") == 120 and haproxy.duration("x") is None


def test_only_read_only_commands_reach_the_socket():
    import pytest
    from runtime.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        haproxy.query("/nonexistent", "disable server web/web1")


def test_network_health_checks_are_recognised():
    p = docker_healthcheck.parse(["CMD-SHELL", "wget -qO- http://localhost:8080/health || exit 1"])
    assert (p.tool, p.mode, p.host, p.port, p.path) == ("wget", "http", "localhost", 8080, "/health")
    p = docker_healthcheck.parse(["CMD-SHELL", "timeout 3 busybox wget -q -O /dev/null localhost:81"])
    assert (p.tool, p.host, p.port, p.path) == ("wget", "localhost", 81, "/")
    p = docker_healthcheck.parse(["CMD", "curl", "-fsS", "-m", "2", "-H", "Host: api.example", "http://127.0.0.1/ready"])
    assert (p.tool, p.host, p.port, p.path, p.host_header) == ("curl", "127.0.0.1", 80, "/ready", "api.example")
    p = docker_healthcheck.parse(["CMD", "sh", "-c", "nc -z -w 2 db 5432"])
    assert (p.tool, p.mode, p.host, p.port) == ("nc", "tcp", "db", 5432)
    assert docker_healthcheck.parse(["CMD-SHELL", "pg_isready -U postgres"]) is None
    assert docker_healthcheck.parse(["CMD-SHELL", "curl -f https://localhost/"]) is None  # TLS: not re-run
    assert docker_healthcheck.parse(["NONE"]) is None
    assert docker_healthcheck.command_text(["CMD", "curl", "-f", "http://x/a b"]) == "curl -f 'http://x/a b'"


def test_the_check_haproxy_does_becomes_the_check_netdiag_runs():
    from netdiag.health import explain

    conf = haproxy.parse_config(CONFIG)
    row = {"backend": "web", "server": "web2", "ip": "10.61.0.12", "port": 80, "check_port": None, "check_addr": None,
           "check_status": "L4TOUT"}
    spec, info = explain._spec_for(row, conf, None)
    assert (spec.mode, spec.host, spec.port, spec.method, spec.path, spec.header_host) == \
        ("http", "10.61.0.12", 8081, "GET", "/health", "web.example")  # the server's `check port`, the backend's send
    assert (spec.connect_timeout, spec.timeout, spec.expect) == (1.0, 3.0, ((200, 200),))  # min(connect, inter 3s) + check
    assert info["from_config"] and info["expect"] == "200"
    spec, info = explain._spec_for({**row, "backend": "gone", "server": "x", "check_status": "L4CON"}, conf, 0.7)
    assert (spec.mode, spec.port, spec.timeout) == ("tcp", 80, 0.7) and not info["from_config"]  # stats alone: a TCP check


def test_explain_picks_the_haproxy_of_this_host_when_others_run_in_foreign_namespaces(monkeypatch):
    """Two labs on one machine each run a HAProxy in a container: from one lab's host, `explain
    --lb haproxy` means its own (found ambiguous before: the demo failed while a test ran)."""
    from netdiag.health import explain

    class FakeModel:
        def metas(self):
            return [{"id": "ns-1", "kind": "host"}, {"id": "ns-2", "kind": "container"},
                    {"id": "ns-3", "kind": "pid"}, {"id": "ns-4", "kind": "netns"}]

    mine = haproxy.Process(10, ["/etc/haproxy.cfg"], "", [], 2)
    other = haproxy.Process(20, ["/etc/haproxy.cfg"], "", [], 3)
    assert explain._this_hosts(FakeModel(), [mine, other]) == [mine]
    # none of this host's: all stay candidates (the error then lists them)
    assert explain._this_hosts(FakeModel(), [other, haproxy.Process(30, [], "", [], 4)]) == [other, haproxy.Process(30, [], "", [], 4)]
    # two of this host's: still ambiguous
    both = [mine, haproxy.Process(40, [], "", [], 1)]
    assert explain._this_hosts(FakeModel(), both) == both
