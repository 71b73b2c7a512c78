"""The documented schemas (netdiag/schemas/) describe what netdiag really writes: the snapshot
fixture (taken by `netdiag snapshot` in a lab) and a diagnosis made over it. Live output is
checked against the same schemas in the integration tests (test_observe, test_trace)."""
import copy
import json
import sys
from pathlib import Path

import jsonschema
import pytest

from netdiag.diagnose import diagnose
from netdiag.snapshot_model import Model

SCHEMAS = Path(__file__).parents[2] / "netdiag" / "schemas"
FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json").read_text())


def schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def test_the_snapshot_fixture_follows_the_snapshot_schema():
    jsonschema.validate(FIXTURE, schema("snapshot"))
    broken = copy.deepcopy(FIXTURE)
    del next(iter(broken["namespaces"].values()))["links"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema("snapshot"))


@pytest.mark.parametrize("src,dst,port", [("api", "db", 5432), ("db", "api", 9000), ("web", "10.50.0.3", 5432)])
def test_diagnoses_follow_the_trace_schema(src, dst, port):
    r = diagnose(Model(copy.deepcopy(FIXTURE)), src, dst, port=port, live=False)
    r = r.to_json()
    jsonschema.validate(r, schema("trace"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**r, "verdict": "maybe"}, schema("trace"))


def _host(s):
    return s["namespaces"][s["host"]]


def _first_match(s):
    rule = next(i["rule"] for i in _host(s)["nftables"]["nftables"] if "rule" in i and
                any("match" in e for e in i["rule"]["expr"]))
    return next(e["match"] for e in rule["expr"] if "match" in e)


MUTATIONS = {
    "valid": lambda s: None,
    "a link without a name": lambda s: _host(s)["links"][0].pop("name"),
    "an address that is no address": lambda s: _host(s)["addresses"][0].update(address="x"),
    "a route table a word": lambda s: _host(s)["routes"][0].update(table="main"),
    "an expression of two keys": lambda s: _first_match(s).update(left={"meta": {"key": "iif"}, "ct": {"key": "state"}}),
    "an expression with no key": lambda s: _first_match(s).update(left={}),
    "a list of expressions holding a bad one": lambda s: _first_match(s).update(right=["tcp", {"prefix": {"addr": 1}}]),
    "a prefix as a plain value": lambda s: _first_match(s).update(right={"prefix": {"addr": "10.0.0.0", "len": 8}}),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_compiled_validator_agrees_with_jsonschema(name):
    """netdiag.schemas checks documents with compiled code first (fastjsonschema, as draft 7) and
    asks jsonschema only to word an error: both must call the same documents valid."""
    from netdiag.schemas import _fast, _formats

    doc = copy.deepcopy(FIXTURE)
    MUTATIONS[name](doc)
    reference = jsonschema.Draft202012Validator(schema("snapshot"), format_checker=_formats()).is_valid(doc)
    assert reference == (name == "valid" or name == "a prefix as a plain value")
    assert _fast("snapshot")(doc) == reference


def test_a_big_snapshot_is_checked_whole_by_the_compiled_validator_that_names_nothing():
    """The compiled validator skips the error messages' names (building them per value was half of
    validating a 500-container snapshot) and still finds a bad value deep in the 400th namespace."""
    from netdiag.schemas import _compile, _fast

    doc = copy.deepcopy(FIXTURE)
    ns = next(k for k in doc["namespaces"] if k != doc["host"])
    for i in range(500):
        doc["namespaces"][f"9{i:06d}"] = copy.deepcopy(doc["namespaces"][ns])
    valid = _fast("snapshot")
    assert valid(doc)
    code = _compile({**schema("snapshot"), "$schema": "http://json-schema.org/draft-07/schema#"}, {}).func.__globals__
    checkers = [f for k, f in code.items() if k.startswith("validate")]
    assert len(checkers) > 10 and not any("locals" in f.__code__.co_names for f in checkers)
    doc["namespaces"]["9000400"]["links"][-1]["master"] = 7
    assert not valid(doc)


def test_the_compiled_schema_is_kept_like_bytecode_and_read_back(tmp_path, monkeypatch):
    """Generating and compiling the validator cost ~0.2 s of every `trace --snapshot`: it is kept
    beside the package's bytecode, read back by the next process, and not written when bytecode
    may not be."""
    import fastjsonschema

    from netdiag import schemas

    snap = {**schema("snapshot"), "$schema": "http://json-schema.org/draft-07/schema#"}
    monkeypatch.setattr(schemas, "DIR", tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert schemas._compile(snap, {})(FIXTURE) == FIXTURE and not (tmp_path / "__pycache__").exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    schemas._compile(snap, {})
    assert [p.suffix for p in (tmp_path / "__pycache__").iterdir()] == [".marshal"]
    generated = []
    monkeypatch.setattr(fastjsonschema, "_factory", lambda *a: generated.append(a))
    valid = schemas._compile(snap, {})
    assert not generated
    assert valid(FIXTURE) == FIXTURE
    bad = copy.deepcopy(FIXTURE)
    bad["namespaces"][bad["host"]]["links"] = "eth0"
    with pytest.raises(fastjsonschema.JsonSchemaException):
        valid(bad)
