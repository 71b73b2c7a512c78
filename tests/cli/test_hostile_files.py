"""Every file netdiag parses, handed over the way a hostile user (or a pull request's check file in
CI) would: an alias bomb, /dev/zero, a FIFO, a huge file, deep nesting, a secret file included,
snapshots of the wrong shape. Each must end in exit 2 with FILE: and what is wrong, without a
traceback and without quoting the file. The real CLI runs in a child capped at 1 GiB of address
space, 64 MiB per written file and a timeout, so a regression fails the test instead of the
machine. No root needed."""
import copy
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_bounded import BOMB, MEMORY_CAP

FIXTURE = Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json"
SNAP = json.loads(FIXTURE.read_text())
SECRET = "SECRETMARKER-5f1c"


def netdiag(*args: str, timeout: float = 60, root: str = "/nonexistent-netdiag-root", stdin=None) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))  # a runaway copy dies of SIGXFSZ, the disk stays

    return subprocess.run([sys.executable, "-m", "netdiag", *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, env={**os.environ, "NETDIAG_ROOT": root}, stdin=stdin)


def bad_input(p: subprocess.CompletedProcess, *says: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr and all(s in p.stderr for s in says), p.stderr[-3000:]
    assert len(p.stderr) < 3000  # nothing echoed whole
    return p.stderr


def check(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    f = tmp_path / "checks.yaml"
    f.write_text(text)
    return netdiag("check", str(f), "--snapshot", str(FIXTURE), *extra)


# ------------------------------------------------------------------------------ check files

def test_check_an_alias_bomb(tmp_path):
    bad_input(check(tmp_path, BOMB), "checks.yaml:", "aliases (*name) expand to more than")


def test_check_include_dev_zero_and_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    err = bad_input(check(tmp_path, "include: [/dev/zero, fifo]\nchecks: []\n"))
    assert "checks.yaml:1: include: /dev/zero: is a device, not a regular file" in err
    assert f"checks.yaml:1: include: {tmp_path / 'fifo'}: is a FIFO, not a regular file" in err


def test_check_a_huge_file(tmp_path):
    f = tmp_path / "huge.yaml"
    with open(f, "w") as out:
        out.write("checks:\n")
        line = "  - internal: {network: n}\n"
        out.write(line * (50_000_000 // len(line)))
    bad_input(netdiag("check", str(f), "--snapshot", str(FIXTURE), timeout=30), "huge.yaml: larger than")


def test_check_deep_nesting(tmp_path):
    bad_input(check(tmp_path, "checks: " + "[" * 100_000 + "]" * 100_000 + "\n"), "checks.yaml:1:")
    bad_input(check(tmp_path, "checks:\n  - internal: " + "{a: " * 200 + "1" + "}" * 200 + "\n"),
              "checks.yaml:2: nested more than 64 levels deep")


def test_an_included_secret_file_is_not_quoted(tmp_path):
    shadow = tmp_path / "shadow"  # /etc/shadow's format: each line parses as a YAML key
    shadow.write_text(f"root:$y$j9T${SECRET}:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n"
                      f"messagebus: !:{SECRET}::::::\nnobody:*:19700:0:99999:7:::\n")
    for text in (f"include: [{shadow}]\nchecks: []\n", f"include: [{shadow}]\nchecks:\n  - internal: {{network: n}}\n"):
        p = check(tmp_path, text)
        bad_input(p, f"{shadow}:")
        assert SECRET not in p.stderr + p.stdout
    bad_input(netdiag("check", str(shadow), "--snapshot", str(FIXTURE)), f"{shadow}:")


def test_a_huge_value_is_quoted_as_an_excerpt(tmp_path):
    name = "n" * 1_500_000
    err = bad_input(check(tmp_path, f"checks:\n  - name: {name}\n    internal: {{network: n}}\n"),
                    "checks.yaml:2: checks[0].name: ", "(1500000 characters) is too long")
    assert "n" * 200 not in err


def test_a_variable_naming_a_variable_is_expanded_and_a_cycle_refused(tmp_path):
    p = check(tmp_path, 'vars: {A: "${B}", B: "br-${C}", C: nowhere}\nchecks:\n  - internal: {network: "${A}"}\n',
              "--format", "json")
    assert p.returncode == 1, p.stderr  # the check ran, on network br-nowhere, and failed
    assert json.loads(p.stdout)["checks"][0]["name"] == "network br-nowhere is internal"
    bad_input(check(tmp_path, 'vars: {A: "${B}", B: "${A}"}\nchecks:\n  - internal: {network: "${A}"}\n'),
              "checks.yaml:1: vars: A: variable cycle A -> B -> A")


# ------------------------------------------------------------------------------ snapshots and recordings

def _mutated(edit) -> dict:
    s = copy.deepcopy(SNAP)
    edit(s)
    return s


HOST = SNAP["host"]
BAD_SNAPSHOTS = {
    "a list": ([], "(the document): [] is not of type 'object'"),
    "null": (None, "(the document): None is not of type 'object'"),
    "no namespaces": (_mutated(lambda s: s.pop("namespaces")), "'namespaces' is a required property"),
    "namespaces a list": (_mutated(lambda s: s.update(namespaces=[])), "namespaces: [] is not of type 'object'"),
    "a route's table a word": (_mutated(lambda s: s["namespaces"][HOST]["routes"][0].update(table="main")),
                               f"namespaces.{HOST}.routes[0].table: 'main' is not of type 'integer'"),
    "an address no address": (_mutated(lambda s: s["namespaces"][HOST]["addresses"][0].update(address="x")),
                              f"namespaces.{HOST}.addresses[0].address: 'x' is not a 'ip-address'"),
    "an nftables rule a string": (_mutated(lambda s: s["namespaces"][HOST]["nftables"]["nftables"].append({"rule": "drop"})),
                                  "'drop' is not of type 'object'"),
    "a host that is no namespace": (_mutated(lambda s: s.update(host="ns-1")), "host: ns-1 is not one of its namespaces"),
    "a recorded probe with unknown keys": (
        _mutated(lambda s: s.update(probes=[{"src_ns": HOST, "dst_ip": "10.50.0.3", "proto": "tcp", "port": 5432, "size": 0,
                                              "live": {"outcome": "connected", "detail": "", "sport": 1, "seen": [], "drops": [],
                                                       "elapsed": 0.1, "evil": 1}}])),
        "probes[0].live: Additional properties are not allowed ('evil' was unexpected)"),
    "a recorded probe's seen not a list": (
        _mutated(lambda s: s.update(probes=[{"src_ns": HOST, "dst_ip": "10.50.0.3", "proto": "tcp", "port": 5432, "size": 0,
                                              "live": {"outcome": "connected", "detail": "", "sport": 1, "seen": 7, "drops": [],
                                                       "elapsed": 0.1}}])),
        "probes[0].live.seen: 7 is not of type 'array'"),
    "another format": ({"schema": "netdiag.snapshot/0"}, "unsupported snapshot format 'netdiag.snapshot/0'"),
}


@pytest.mark.parametrize("name", list(BAD_SNAPSHOTS))
def test_trace_on_a_snapshot_of_the_wrong_shape(tmp_path, name):
    data, says = BAD_SNAPSHOTS[name]
    f = tmp_path / "snap.json"
    f.write_text(json.dumps(data))
    bad_input(netdiag("trace", "--snapshot", str(f), "api", "db", "--port", "5432"), f"{f}: ", says)


def test_trace_on_a_deep_or_endless_snapshot(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"namespaces": ' + "[" * 200_000 + "]" * 200_000 + "}")
    bad_input(netdiag("trace", "--snapshot", str(deep), "api", "db", "-p", "80"), f"{deep}:1: nested more than 64 levels deep")
    bad_input(netdiag("trace", "--snapshot", "/dev/zero", "api", "db", "-p", "80"), "/dev/zero: is a device, not a regular file")


def test_other_readers_of_snapshots_and_traces_validate_too(tmp_path):
    f = tmp_path / "list.json"
    f.write_text("[]")
    bad_input(netdiag("check", "--generate", "--snapshot", str(f), "-o", str(tmp_path / "out.yaml")), f"{f}: ")
    bad_input(netdiag("scenario", "replay", str(f)), f"{f}: ")
    bad_input(netdiag("topo", "--snapshot", str(FIXTURE), "--trace", str(f)), f"{f}: (the document): [] is not of type 'object'")


def test_import_and_load_refuse_a_device_instead_of_copying_it_forever(tmp_path):
    root = str(tmp_path / "nd")
    for args in (["import", "/dev/zero", "x"], ["load", "-i", "/dev/zero"]):
        bad_input(netdiag(*args, root=root, timeout=30), "Cannot read /dev/zero. It is a device, not a tar archive")
    with open("/dev/zero", "rb") as zero:
        bad_input(netdiag("import", "-", "x", root=root, stdin=zero, timeout=30), "Cannot read standard input. It is a device")
    assert not list(Path(root).rglob("layer.tar"))
