"""The documented schemas (netdiag/schemas/) describe what netdiag really writes: the snapshot
fixture (taken by `netdiag snapshot` in a lab) and a diagnosis made over it. Live output is
checked against the same schemas in the integration tests (test_observe, test_trace)."""
import copy
import json
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
