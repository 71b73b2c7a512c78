"""The scenario library as data: every scenario validates, names a known cause and grades with
checks `netdiag check` accepts; a broken file is reported with its line and field; the pure parts
of a session (argument lists, variables) and of grading the diagnosis."""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from netdiag import yamlfile
from netdiag.reason.causes import CAUSES
from netdiag.scenario import library, verdict
from netdiag.scenario import solution
from netdiag.scenario.cluster import is_cluster
from netdiag.scenario.placement import host_names, world_names
from netdiag.scenario.session import _VAR, container_argv
from runtime.errors import InvalidArgument, NotFound

ALL = library.names()


def test_the_library_has_at_least_twelve_scenarios_easy_to_hard():
    assert len(ALL) >= 12
    levels = {library.load(n).spec["difficulty"] for n in ALL}
    assert levels == {"easy", "medium", "hard"}
    assert [int(n[:2]) for n in ALL] == list(range(1, len(ALL) + 1))  # numbered in order, no gaps


ONE_HOST_VARS = ("lab", "outside", "outside_ns", "host_ip", "outside_ip", "ip", "file", "haproxy_cfg", "haproxy_pid", "stats", "pid", "pod", "pod_id", "pod_ns",
                 "registry", "registry_ip", "certs_d")
# a pull's own causes (a scenario whose diagnosis is `netdiag pull`): runtime.registry.errors
PULL_CAUSES = {"CONNECT_FAILED", "TLS_UNKNOWN_AUTHORITY", "TLS_NAME_MISMATCH", "TLS_FAILED", "UNAUTHORIZED", "DENIED",
               "NOT_FOUND", "RATE_LIMITED", "BAD_CONTENT"}
CLUSTER_VARS = ("lab", "host_ip", "store", "store_ip", "ip", "mac", "pid", "vxlan", "cni_conf", "file")


@pytest.mark.parametrize("name", ALL)
def test_every_scenario_is_valid_and_complete(name):
    s = library.load(name)
    pull = s.spec["diagnosis"]["run"][:2] == ["netdiag", "pull"]
    assert s.spec["diagnosis"]["cause"] in CAUSES or (pull and s.spec["diagnosis"]["cause"] in PULL_CAUSES)
    assert s.readme().startswith("# ") and "## What you learn" in s.readme()
    names = world_names(s.spec)
    hosts = set(host_names(s.spec))
    assert not names & hosts
    places = (hosts | names) if is_cluster(s) else ({"lab", "outside"} | names)
    for step in s.spec.get("faults", []) + s.spec["solution"]["steps"]:
        assert step.get("in", "lab" if not hosts else next(iter(hosts))) in places, step
        assert step.get("host") is None or step["host"] in hosts, step
    for hint in s.spec["hints"]:  # a hint helps by itself: no "see the solution", no ADDRESS to fill in
        assert "scenario solution" not in hint and not re.search(r"\b[A-Z0-9]+_(ADDRESS|IP)\b", hint), hint
    networks = {n["name"] for n in s.spec["world"].get("networks", [])}
    text = yamlfile.load(s.path / "scenario.yaml").path.read_text()
    for m in _VAR.finditer(text):  # every ${...} is one the session (of this kind of world) knows
        assert m.group(1) in (CLUSTER_VARS if is_cluster(s) else ONE_HOST_VARS), m.group(0)
        if m.group(1) in ("ip", "mac", "pid"):
            assert m.group(2) in names and (m.group(3) is None or m.group(3) in networks), m.group(0)
        if m.group(1) == "file":
            assert m.group(2) in (s.spec.get("files") or {}), m.group(0)
        if m.group(1) == "host_ip" and is_cluster(s):
            assert m.group(2) is None or m.group(2) in hosts, m.group(0)
        if m.group(1) == "vxlan":
            assert m.group(2) in networks, m.group(0)


@pytest.mark.parametrize("name", ALL)
def test_every_scenarios_checks_are_a_valid_check_file(name):
    import jsonschema

    checks = library.load(name).spec["checks"]
    schema = yamlfile.schema("checkfile")
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors({"version": 1, "checks": checks}))
    assert not errors, [e.message for e in errors]


def test_scenarios_are_found_by_number_slug_or_folder():
    first = ALL[0]
    assert library.load(first).name == first
    assert library.load(first[3:]).name == first
    assert library.load(str(int(first[:2]))).name == first
    with pytest.raises(NotFound, match="No scenario 'nope'"):
        library.load("nope")


def broken(tmp_path: Path, edit) -> Path:
    src = library.root() / ALL[0]
    dst = tmp_path / "scenarios" / "99_broken"
    shutil.copytree(src, dst)
    text = (dst / "scenario.yaml").read_text()
    (dst / "scenario.yaml").write_text(edit(text))
    return dst


def test_a_broken_scenario_names_its_file_line_and_field(tmp_path):
    dst = broken(tmp_path, lambda t: t.replace("difficulty: easy", "difficulty: impossible"))
    line = next(i for i, ln in enumerate((dst / "scenario.yaml").read_text().splitlines(), 1) if "impossible" in ln)
    with pytest.raises(InvalidArgument) as e:
        library.read(dst)
    assert f"scenario.yaml:{line}: difficulty:" in str(e.value) and "impossible" in str(e.value)


def test_an_unknown_key_and_bad_yaml_are_errors_with_lines(tmp_path):
    dst = broken(tmp_path, lambda t: t.replace("hints:", "hintz: [x]\nhints:"))
    with pytest.raises(InvalidArgument, match=r"scenario.yaml:\d+: \(the document\): Additional properties .*hintz"):
        library.read(dst)
    dst2 = broken(tmp_path / "b", lambda t: t + "\n  bad: [\n")
    with pytest.raises(InvalidArgument, match=r"scenario.yaml:\d+: not valid YAML"):
        library.read(dst2)


def test_a_step_is_an_argument_list_never_a_shell_string(tmp_path):
    dst = broken(tmp_path, lambda t: t.replace("  - run: [netdiag, rm, -f, web]", "  - run: netdiag rm -f web"))
    with pytest.raises(InvalidArgument, match=r"solution\.steps\.0\.run: 'netdiag rm -f web' is not of type 'array'"):
        library.read(dst)


def test_a_container_on_the_host_network_is_refused(tmp_path):
    dst = broken(tmp_path, lambda t: t.replace("world:\n", "world:\n  containers:\n    - {name: hostnet, network: host}\n", 1))
    with pytest.raises(InvalidArgument, match=r"world\.containers\.0\.network: a scenario's containers may not use the host network"):
        library.read(dst)


CLUSTER = next(n for n in ALL if is_cluster(library.load(n)))


def cluster_broken(tmp_path: Path, edit) -> Path:
    src = library.root() / CLUSTER
    dst = tmp_path / "scenarios" / "98_cluster"
    shutil.copytree(src, dst)
    (dst / "scenario.yaml").write_text(edit((dst / "scenario.yaml").read_text()))
    return dst


def test_a_cluster_world_places_everything_on_its_hosts(tmp_path):
    dst = cluster_broken(tmp_path, lambda t: t.replace("      host: h2\n", "      host: h9\n", 1))
    line = next(i for i, ln in enumerate((dst / "scenario.yaml").read_text().splitlines(), 1) if "host: h9" in ln)
    with pytest.raises(InvalidArgument, match=rf"scenario.yaml:{line}: world\.containers\.\d\.host: no host 'h9'.*hosts: h1, h2"):
        library.read(dst)
    dst = cluster_broken(tmp_path / "b", lambda t: t.replace("    in: h1\n", "    in: nowhere\n", 1).replace("    in: h2\n", "    in: nowhere\n", 1))
    with pytest.raises(InvalidArgument, match=r"faults\.0\.in: no host or container 'nowhere'"):
        library.read(dst)
    dst = cluster_broken(tmp_path / "c", lambda t: t.replace("cluster: {hosts: [h1, h2]}", "cluster: {hosts: [h1, h2, h1]}"))
    with pytest.raises(InvalidArgument, match=r"world\.cluster\.hosts: .*non-unique"):
        library.read(dst)


def test_cluster_keys_need_a_cluster_world(tmp_path):
    dst = broken(tmp_path, lambda t: t.replace("  networks: []\n", "  networks:\n    - {name: ov, driver: overlay}\n", 1))
    with pytest.raises(InvalidArgument, match=r"world\.networks\.0\.driver: driver: overlay needs a world of several hosts"):
        library.read(dst)
    dst = broken(tmp_path / "b", lambda t: t + "grade_host: h1\n")
    with pytest.raises(InvalidArgument, match=r"grade_host: grade_host needs a world of several hosts"):
        library.read(dst)


class FakeWorld:
    """A running world's answers, for the printed solution: every variable has a value here."""

    def expand(self, text):
        return _VAR.sub(lambda m: {"pid": "4242", "outside_ns": "ndlab-x-out"}.get(m.group(1), f"<{m.group(1)} value>"), text)

    def host_of(self, container):
        return "h2"


@pytest.mark.parametrize("name", ALL)
def test_a_printed_solution_is_shell_text_with_each_step_where_it_runs(name):
    """Each block names the shell to open; each line, split as a shell splits it, is the step's
    argument list (variables expanded), entered into its namespace from that shell."""
    s = library.load(name)
    printed = solution.text(s, FakeWorld())
    assert "${" not in printed and "scenario solution" not in printed
    blocks = re.findall(r"^Run in `(netdiag scenario shell [^`]+)`:\n((?:    .*\n?)+)", printed, re.M)
    lines = [(shell, line[4:]) for shell, body in blocks for line in body.splitlines()]
    steps = s.spec["solution"]["steps"]
    assert len(lines) == len(steps)
    for (shell, line), step in zip(lines, steps):
        argv, where = shlex.split(line), step.get("in")
        expected = [FakeWorld().expand(a) for a in step["run"]]
        if where in (None, "lab") or where in host_names(s.spec):
            assert argv == expected
        elif where == "outside":
            assert argv == ["ip", "netns", "exec", "ndlab-x-out", *expected]
        else:
            assert argv == ["nsenter", "-t", "4242", "-n", *expected]
        host = step.get("host") or (where if where in host_names(s.spec) else None)
        if is_cluster(s):
            assert shell == f"netdiag scenario shell {s.slug} {host or ('h2' if where else 'h1')}"
        else:
            assert shell == f"netdiag scenario shell {s.slug}"


def test_a_solution_printed_without_its_world_says_why_variables_remain():
    printed = solution.text(library.load("14"))
    assert "'${haproxy_cfg:intlb}'" in printed and "start the scenario and ask again" in printed
    assert "start the scenario" not in solution.text(library.load("01"))
    assert "'mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www'" in solution.text(library.load("02"))


def test_a_hint_names_this_runs_values_and_keeps_what_the_world_cannot_answer():
    class Partial(FakeWorld):
        def expand(self, text):
            if "gone" in text:
                raise NotFound("No container gone", "", "")
            return super().expand(text)

    assert solution.expanded("`nsenter -t ${pid:web} -n ss -tln`, ${ip:gone}", Partial()) == "`nsenter -t 4242 -n ss -tln`, ${ip:gone}"
    assert solution.expanded("${ip:web}", None) == "${ip:web}"


def test_container_argv_is_netdiag_run_with_each_option_its_own_argument():
    argv = container_argv({"name": "web", "network": "front", "publish": ["8080:80"], "ip": "10.1.0.5", "aliases": ["w"],
                           "cap_add": ["NET_ADMIN"], "health": {"cmd": "wget -q http://127.0.0.1/"},
                           "command": ["httpd", "-f"]})
    assert argv == ["netdiag", "run", "-d", "--name", "web", "--network", "front", "-p", "8080:80", "--ip", "10.1.0.5",
                    "--network-alias", "w", "--cap-add", "NET_ADMIN", "--health-cmd", "wget -q http://127.0.0.1/",
                    "--health-interval", "1s", "--health-timeout", "1s", "--health-retries", "1", "busybox", "httpd", "-f"]
    assert container_argv({"name": "bare"})[-3:] == ["busybox", "sleep", "2147483647"]


TRACE = {"verdict": "blocked", "cause": "LISTENER_LOOPBACK_ONLY", "blocked_at": 3,
         "hops": [{"n": 1, "label": "ns:out", "interface": "eth0", "kind": "veth"},
                  {"n": 3, "label": "web (netdiag container)", "interface": "tcp/80", "kind": "socket"}]}
LB = {"servers": [{"server": "web1", "health": {"healthy": False, "cause": "FIREWALL_DROP", "hop": {"label": "web1 (netdiag container)", "interface": "eth0",
                                                                                   "kind": "firewall"}}},
                  {"server": "web2", "health": None}]}


def test_the_diagnosis_is_graded_by_cause_and_hop():
    assert verdict.matches(TRACE, {"cause": "LISTENER_LOOPBACK_ONLY"})[0]
    assert verdict.matches(TRACE, {"cause": "LISTENER_LOOPBACK_ONLY", "at": {"label": "web", "kind": "socket"}})[0]
    assert not verdict.matches(TRACE, {"cause": "LISTENER_LOOPBACK_ONLY", "at": {"label": "api"}})[0]
    assert not verdict.matches(TRACE, {"cause": "NO_LISTENER"})[0]
    ok, named = verdict.matches(LB, {"cause": "FIREWALL_DROP", "at": {"label": "web1", "interface": "eth0"}})
    assert ok and named == [{"cause": "FIREWALL_DROP", "label": "web1 (netdiag container)", "interface": "eth0", "kind": "firewall"}]
    assert verdict.causes({"verdict": "delivered", "cause": None, "hops": []}) == []


# A cause quoted inside a diagnosis (a fix check's "after", an evidence entry, a health check's
# embedded trace) is not what the diagnosis names: only the top-level cause is graded.
FIREWALL = {"verdict": "blocked", "cause": "FIREWALL_DROP", "blocked_at": 2, "summary": "lab drops it",
            "hops": [{"n": 1, "label": "app (netdiag container)", "interface": "eth0", "kind": "veth"},
                     {"n": 2, "label": "lab", "interface": "eth0", "kind": "firewall"}],
            "evidence": [{"kind": "route", "detail": "NO_NAT would follow: no masquerade for 10.46.0.0/24", "cause": "NO_NAT"}],
            "fix_check": {"checked": True, "delivers": False, "detail": "with this fix the path is still blocked (NO_NAT: ...)",
                          "after": {"verdict": "blocked", "cause": "NO_NAT", "summary": "no route back", "blocked_at": 2}}}
DELIVERED = {"verdict": "delivered", "cause": None, "blocked_at": None, "summary": "it gets through",
             "hops": [{"n": 1, "label": "files (netdiag container)", "interface": "eth0", "kind": "veth"}],
             "evidence": [{"kind": "mtu", "detail": "1500 > 1400", "cause": "MTU_BLACKHOLE", "hop": {"label": "lab", "interface": "wg0"}}],
             "fix_check": {"checked": True, "delivers": True, "detail": "",
                           "after": {"verdict": "blocked", "cause": "MTU_BLACKHOLE", "summary": "", "blocked_at": 1}}}


def test_a_firewall_drop_does_not_pass_as_the_no_nat_its_fix_check_mentions():
    ok, named = verdict.matches(FIREWALL, {"cause": "NO_NAT"})
    assert not ok and named == [{"cause": "FIREWALL_DROP", "label": "lab", "interface": "eth0", "kind": "firewall"}]
    assert verdict.matches(FIREWALL, {"cause": "FIREWALL_DROP", "at": {"label": "lab", "kind": "firewall"}})[0]


def test_a_delivered_result_names_no_cause_whatever_it_quotes():
    assert verdict.matches(DELIVERED, {"cause": "MTU_BLACKHOLE"}) == (False, [])
    # a delivered verdict with a cause field is a contradiction, not a diagnosis
    assert verdict.causes({**DELIVERED, "cause": "MTU_BLACKHOLE"}) == []
    assert verdict.causes({"healthy": True, "cause": "SLOW_RESPONSE", "hop": None}) == []


def test_health_and_explain_are_graded_by_each_diagnosis_top_level_cause():
    health = {"healthy": False, "cause": "FIREWALL_DROP", "hop": {"label": "web", "interface": "eth0", "kind": "firewall"},
              "diagnosis": {"verdict": "blocked", "cause": "NO_ROUTE", "blocked_at": None, "hops": []},
              "fix_check": {"after": {"verdict": "blocked", "cause": "NO_NAT"}}}
    assert [c["cause"] for c in verdict.causes(health)] == ["FIREWALL_DROP"]
    assert verdict.causes({"kind": "container", "health": health, "summary": "NO_ROUTE"}) == verdict.causes(health)
    lb = {"kind": "lb", "servers": [{"server": "a", "health": {**health, "healthy": True, "cause": None}, "traffic": None},
                                    {"server": "b", "health": None, "traffic": {**health, "cause": "NO_LISTENER"}}]}
    assert [c["cause"] for c in verdict.causes(lb)] == ["NO_LISTENER"]
    assert not verdict.matches(lb, {"cause": "FIREWALL_DROP"})[0] and not verdict.matches(lb, {"cause": "NO_ROUTE"})[0]


def test_a_failed_pull_is_graded_by_its_top_level_cause_only():
    pull = {"pulled": False, "cause": "MTU_BLACKHOLE", "summary": "stalls", "evidence": [],
            "trace": {"verdict": "blocked", "cause": "FIREWALL_DROP", "blocked_at": None, "hops": []}}
    assert [c["cause"] for c in verdict.causes(pull)] == ["MTU_BLACKHOLE"]  # the embedded trace is evidence
    assert verdict.matches(pull, {"cause": "MTU_BLACKHOLE"})[0] and not verdict.matches(pull, {"cause": "FIREWALL_DROP"})[0]
    assert verdict.causes({"pulled": True, "cause": "TLS_UNKNOWN_AUTHORITY"}) == []


def test_the_readme_lists_every_scenario():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for n in ALL:
        assert re.search(rf"\b{n[:2]}\b.*{n[3:]}", readme), f"README does not list {n}"
