"""The bounded reader (runtime/bounded.py) against what a hostile user hands it: devices, FIFOs,
directories, files past the limit, nesting past the depth limit, YAML alias bombs, secrets in a
file that is not what it claims to be. Anything that could hang or eat the machine if the guard
regressed runs in a child process with a memory cap and a timeout, so a regression fails the
test instead of the machine."""
import os
import resource
import subprocess
import sys

import pytest

from runtime import bounded

MEMORY_CAP = 1 << 30  # far above what any bounded read needs, far below what a bomb takes


def capped(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run Python `code` in a child limited to MEMORY_CAP bytes of address space and `timeout` s."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, preexec_fn=limit,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def refused(fn, *args) -> bounded.Refused:
    with pytest.raises(bounded.Refused) as e:
        fn(*args)
    assert e.value.exit_code == 2
    return e.value


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))  # 9**9 values


# ------------------------------------------------------------------------------ files

def test_devices_fifos_and_directories_are_refused_before_a_byte_is_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # in a child with a timeout: a FIFO opened without O_NONBLOCK would wait for a writer forever
    p = capped(f"""
from runtime import bounded
for path in ("/dev/zero", {str(fifo)!r}, {str(tmp_path)!r}):
    try:
        bounded.read_bytes(path, 1 << 20)
    except bounded.Refused as e:
        print(e.what)
""", timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["/dev/zero: is a device, not a regular file", f"{fifo}: is a FIFO, not a regular file",
                                     f"{tmp_path}: is a directory, not a regular file"]


def test_a_file_is_read_up_to_its_limit_and_refused_past_it(tmp_path):
    f = tmp_path / "doc"
    f.write_bytes(b"x" * 1000)
    assert bounded.read_bytes(f, 1000) == b"x" * 1000
    e = refused(bounded.read_bytes, f, 999)
    assert e.what.startswith(f"{f}: larger than") and e.line is None
    assert refused(bounded.read_bytes, tmp_path / "missing", 10).what == f"{tmp_path / 'missing'}: No such file or directory"


def test_a_file_whose_size_lies_is_read_only_to_the_limit():
    # /proc files say size 0 and are regular: the read itself must stop at limit + 1
    assert len(bounded.read_bytes("/proc/self/status", 1 << 20)) > 0
    e = refused(bounded.read_bytes, "/proc/self/status", 10)
    assert "larger than" in e.what


def test_bad_utf8_is_named_by_line_not_quoted(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_bytes(b"ok: 1\nsecret: \xff\xfeSECRET\n")
    e = refused(bounded.read_text, f, 1000)
    assert e.what == f"{f}:2: not UTF-8 text" and "SECRET" not in str(e)


# ------------------------------------------------------------------------------ JSON

def test_json_nesting_is_limited_without_recursion():
    assert bounded.depth(bounded.loads_json("[" * 64 + "]" * 64, "d.json"), 100) == 64
    assert "nested more than 64" in refused(bounded.loads_json, "[" * 65 + "]" * 65, "d.json").what
    # past the C decoder's own recursion limit: a clean refusal, not a RecursionError
    assert "nested more than 64" in refused(bounded.loads_json, b"[" * 200_000 + b"]" * 200_000, "d.json").what
    e = refused(bounded.loads_json, b'{"a": 1,\n "b": SECRET}', "d.json")
    assert e.what.startswith("d.json:2: not valid JSON") and "SECRET" not in str(e)


def test_depth_is_the_deepest_branch_of_a_wide_document_and_stops_past_the_limit():
    def reference(v):  # the definition, recursively
        kids = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if kids is None else 1 + max((reference(k) for k in kids), default=0)

    wide = {"ns": {str(i): {"links": [{"name": f"eth{i}", "addrs": [[]] * (i % 4)}]} for i in range(300)}, "n": 1}
    shapes = [1, "s", None, [], {}, [1, [2, [3]]], {"a": [], "b": {"c": {"d": [{}]}}}, wide]
    assert [bounded.depth(v, 100) for v in shapes] == [reference(v) for v in shapes]
    assert bounded.depth(wide, 3) > 3 and bounded.depth(wide, reference(wide)) == reference(wide)


# ------------------------------------------------------------------------------ YAML

def test_an_alias_bomb_is_refused_quickly_in_little_memory():
    p = capped(f"""
from runtime import bounded
try:
    bounded.compose_yaml({BOMB!r}, "bomb.yaml")
except bounded.Refused as e:
    print(e.what)
""", timeout=30)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("bomb.yaml:") and "aliases (*name) expand to more than" in p.stdout


def test_aliases_past_the_count_are_refused_and_a_few_defaults_are_fine():
    many = "d: &d 1\nl: [" + ", ".join(["*d"] * (bounded.MAX_ALIASES + 1)) + "]\n"
    assert f"more than {bounded.MAX_ALIASES} aliases" in refused(bounded.compose_yaml, many, "m.yaml").what
    merge = "base: &base {proto: tcp, timeout: 1}\na: {<<: *base, port: 1}\nb: {<<: *base, port: 2}\n"
    data = bounded.yaml_data(bounded.compose_yaml(merge, "ok.yaml"), "ok.yaml")
    assert data["b"] == {"proto": "tcp", "timeout": 1, "port": 2}


@pytest.mark.parametrize("text", ["a: " + "[" * 65 + "]" * 65, "a:\n" + "".join("  " * i + "- \n" for i in range(1, 70)),
                                  "[" * 100_000])
def test_yaml_nesting_is_refused_at_its_line(text):
    e = refused(bounded.compose_yaml, text, "deep.yaml")
    assert e.what.startswith("deep.yaml:") and ("nested more than 64" in e.what or "not valid YAML" in e.what)


def test_yaml_errors_and_unknown_tags_quote_nothing_of_the_file():
    e = refused(bounded.compose_yaml, "ok: 1\nroot: [SECRET-hash, \n", "s.yaml")
    assert e.what.startswith("s.yaml:") and "not valid YAML" in e.what and "SECRET" not in str(e)
    node = bounded.compose_yaml("messagebus: !:SECRET:19700::::::\n", "t.yaml")
    e = refused(bounded.yaml_data, node, "t.yaml")
    assert e.what.startswith("t.yaml:1:") and "SECRET" not in str(e)


def test_excerpts_are_short():
    assert bounded.excerpt("abc") == "'abc'"
    long = bounded.excerpt("x" * 50_000_000)
    assert len(long) < 120 and long.endswith("(50000000 characters)")
    assert bounded.excerpt(list(range(10_000))).endswith("(10000 items)")
