"""The check file format: the schema is the truth (examples and the README validate against it),
errors name FILE:LINE and the field, variables and includes compose one file for several
environments. Pure: files in tmp_path, no probes."""
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from netdiag.check import spec
from netdiag.reason.causes import CAUSES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "checks"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def problems(paths, **kw):
    with pytest.raises(spec.CheckFileError) as e:
        spec.load(paths, environ=kw.pop("environ", {}), **kw)
    assert e.value.exit_code == 2
    return e.value.problems


def readme_examples() -> list[str]:
    """The YAML blocks of the README's "Checks in CI" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Checks in CI", 1)[1].split("\n## ", 1)[0]
    return [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if re.search(r"^checks:", b, re.M)]


def help_example() -> str:
    """The example in `netdiag check --help` (read from the source: no typer import here)."""
    import ast
    import textwrap

    tree = ast.parse((ROOT / "netdiag" / "cli" / "check.py").read_text())
    doc = ast.get_docstring(next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"))
    return textwrap.dedent(next(b for b in doc.split("\n\n") if b.lstrip().startswith("vars:"))) + "\n"


def test_the_schema_is_valid_and_its_causes_are_the_catalogue():
    sch = spec.schema()
    jsonschema.Draft202012Validator.check_schema(sch)
    assert set(sch["$defs"]["cause"]["enum"]) == set(CAUSES)
    assert set(spec.KINDS) == {k for k in sch["$defs"]["check"]["properties"] if k not in ("name", "skip")}


def test_fixture_files_and_the_readme_examples_validate_against_the_schema(tmp_path):
    """spec.load validates each file (after ${VARS}) against the schema; files without variables
    are also checked against the schema directly, so the schema alone is the documented format."""
    validator = jsonschema.Draft202012Validator(spec.schema())
    examples = readme_examples() + [help_example()]
    assert len(examples) >= 2 and examples[-1].startswith("vars:")
    files = []
    for i, text in enumerate(examples):
        files.append(write(tmp_path, f"readme{i}.yaml", text))
        for inc in re.findall(r"^\s+- (\S+\.yaml)", text, re.M):  # included files: empty stand-ins
            write(tmp_path, inc, "checks: []\n")
    for path in files + [str(f) for f in sorted(FIXTURES.glob("*.yaml"))]:
        suite = spec.load([path], environ={"APP_PORT": "8080", "ENV": "staging", "OUTSIDE": "ns:outside"})
        assert suite.checks, path
        text = Path(path).read_text()
        if "${" not in text and "include:" not in text:
            assert not list(validator.iter_errors(yaml.safe_load(text))), path


def test_every_problem_is_reported_with_its_line_and_field(tmp_path):
    path = write(tmp_path, "bad.yaml", """checks:
  - reach: {from: web, to: app, port: 70000}
  - reahc: {from: web}
  - reach:
      from: web
      to: app
      port: 80
      expect:
        blocked: NETWORK_ISOLATIN
  - reach: {from: web, to: app, port: 80, timeout: 2 sec}
  - http: {from: web, url: "ftp://x/"}
  - dns: {from: web, name: "bad name"}
  - reach: {from: web, to: app}
    http: {from: web, url: "http://x/"}
  - listening: {target: app, port: 80, protto: tcp}
  - reach: {from: web, to: app, expect: "blocked: NOPE"}
""")
    got = problems([path])
    want = [
        (2, "checks[0].reach.port", "70000 is greater than the maximum of 65535"),
        (3, "checks[1].reahc", "unknown key (did you mean 'reach'?)"),
        (8, "checks[2].reach.expect", "unknown cause 'NETWORK_ISOLATIN' (did you mean NETWORK_ISOLATION?)"),
        (10, "checks[3].reach.timeout", "expected a duration"),
        (11, "checks[4].http.url", "does not match '^http://'"),
        (12, "checks[5].dns.name", "it is neither an IPv4 address nor a DNS name"),
        (13, "checks[6]", "a check has exactly one of reach, http"),
        (15, "checks[7].listening.protto", "unknown key (did you mean 'proto'?)"),
        (16, "checks[8].reach.port", "a tcp check needs a port"),
    ]
    for line, field, text in want:
        assert any(p.startswith(f"{path}:{line}: {field}: ") and text in p for p in got), (line, field, got)
    assert "(it has reach, http)" in next(p for p in got if ":13: " in p)


def test_yaml_syntax_errors_and_empty_files_are_invalid_files(tmp_path):
    got = problems([write(tmp_path, "broken.yaml", "checks:\n  - reach: {from: web, to: app, port: 80\n")])
    assert re.match(r".*broken\.yaml:\d+: not valid YAML", got[0])
    assert "the file is empty" in problems([write(tmp_path, "empty.yaml", "")])[0]
    assert problems([str(tmp_path / "missing.yaml")])[0].endswith("missing.yaml: No such file or directory")
    typo = write(tmp_path, "typo.yaml", "chekcs:\n  - internal: {network: n}\n")
    assert problems([typo]) == [f"{typo}:1: not a check file (it has none of version, vars, include, checks): "
                                "'chekcs' (did you mean 'checks'?)"]


def test_variables_precedence_defaults_escapes_and_types(tmp_path):
    write(tmp_path, "common.yaml", """vars: {port: 80, name: base}
checks:
  - name: "${name} $$HOME ${missing:-dflt}"
    reach: {from: web, to: app, port: "${port}"}
""")
    top = write(tmp_path, "env.yaml", """include: [common.yaml]
vars: {port: 8080}
checks:
  - reach:
      from: web
      to: app
      port: ${port}
      expect: ${want}
""")
    suite = spec.load([top], environ={"want": "blocked"})
    first, second = suite.checks
    assert first.params["port"] == 8080 and second.params["port"] == 8080  # the including file's vars win
    assert first.name == "base $HOME dflt" and first.file.endswith("common.yaml") and first.line == 3
    assert second.params["expect"] == {"state": "blocked", "causes": []}
    suite = spec.load([top], environ={"port": "9090", "want": "reachable"}, cli_vars={"port": "7070"})
    assert [c.params["port"] for c in suite.checks] == [7070, 7070]  # --var beats the environment beats vars:
    suite = spec.load([top], environ={"port": "9090", "want": "reachable"})
    assert [c.params["port"] for c in suite.checks] == [9090, 9090]
    got = problems([top])
    assert got == [f"{top}:8: ${{want}} is not defined (set it under vars:, in the environment, or with --var want=VALUE)"]


def test_variables_may_use_variables_and_cycles_and_blow_ups_are_refused(tmp_path):
    write(tmp_path, "inc.yaml", 'vars: {net: "${prefix}-${side}", side: back}\nchecks: []\n')
    top = write(tmp_path, "top.yaml", """include: [inc.yaml]
vars: {prefix: "br", port: "${p}", n: "${net}"}
checks:
  - internal: {network: "${n}"}
  - reach: {from: web, to: app, port: "${port}"}
""")
    suite = spec.load([top], environ={"p": "8080"})
    assert suite.checks[0].params["network"] == "br-back" and suite.checks[1].params["port"] == 8080  # the type it spells
    assert spec.load([top], environ={"p": "1"}, cli_vars={"side": "front"}).checks[0].params["network"] == "br-front"
    cyc = write(tmp_path, "cyc.yaml", 'vars:\n  a: "${b}"\n  b: "x${c}"\n  c: "${a}"\nchecks:\n  - internal: {network: "${a}"}\n')
    assert problems([cyc]) == [f"{cyc}:2: vars: a: variable cycle a -> b -> c -> a"]
    doubling = "".join(f'  v{i}: "${{v{i + 1}}}${{v{i + 1}}}"\n' for i in range(30)) + '  v30: "xxxxxxxx"\n'
    bomb = write(tmp_path, "double.yaml", f'vars:\n{doubling}checks:\n  - internal: {{network: "${{v0}}"}}\n')
    assert any(f"grows past {spec.MAX_VALUE} characters" in p for p in problems([bomb]))


def test_includes_are_relative_read_once_and_cycles_are_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/a.yaml", "include: [../shared.yaml]\nchecks:\n  - internal: {network: a}\n")
    write(tmp_path, "shared.yaml", "checks:\n  - internal: {network: shared}\n")
    top = write(tmp_path, "top.yaml", "include: [sub/a.yaml, shared.yaml]\nchecks:\n  - internal: {network: top}\n")
    suite = spec.load([top], environ={})
    assert [c.params["network"] for c in suite.checks] == ["shared", "a", "top"]
    assert [Path(f).name for f in suite.files] == ["shared.yaml", "a.yaml", "top.yaml"]
    write(tmp_path, "c1.yaml", "include: [c2.yaml]\nchecks: []\n")
    write(tmp_path, "c2.yaml", "checks: []\ninclude:\n  - c1.yaml\n")
    got = problems([str(tmp_path / "c1.yaml")])
    assert len(got) == 1 and re.search(r"c2\.yaml:3: include: include cycle c1\.yaml -> c2\.yaml -> c1\.yaml", got[0])


def test_normalised_parameters_and_default_names(tmp_path):
    path = write(tmp_path, "k.yaml", """checks:
  - http: {from: lb, url: "http://web/health", status: 2xx, body_contains: ok, within: 500ms}
  - dns: {from: web, name: app, address: 10.0.0.5}
  - mtu: {from: web, to: app, size: 1400}
  - latency: {from: web, to: app, port: 8080, below: 5ms, count: 3}
  - reach: {from: web, to: db, port: 5432, expect: {blocked: [NETWORK_ISOLATION, FIREWALL_DROP]}}
  - skip: true
    no_listener: {port: 5432}
""")
    http, dns, mtu, lat, reach, nol = spec.load([path], environ={}).checks
    assert http.params["status"] == "200-299" and http.params["within"] == 0.5
    assert dns.params["address"] == ["10.0.0.5"] and dns.name == "app resolves from web to 10.0.0.5"
    assert mtu.name == "web -> app carries 1400-byte packets"
    assert lat.params["below"] == 0.005 and lat.params["count"] == 3
    assert reach.params["expect"]["causes"] == ["NETWORK_ISOLATION", "FIREWALL_DROP"]
    assert nol.skip and nol.params["address"] == "0.0.0.0"
    assert json.dumps([c.params for c in (http, dns, mtu, lat, reach, nol)])  # plain data for the JSON report


def test_var_option_parsing():
    assert spec.parse_var("port=8080") == ("port", "8080")
    assert spec.parse_var("url=http://a/?b=c") == ("url", "http://a/?b=c")
    for bad in ("port", "=1", "1x=2", "a b=c"):
        with pytest.raises(spec.InvalidArgument):
            spec.parse_var(bad)
