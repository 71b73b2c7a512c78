"""Diagnosis finds a Compose project's containers by service name (`web`) and Docker Compose's
short name (`web-1`), from the labels Docker Compose (and netdiag's compose) set; a service name two
projects share is refused as ambiguous (exit 2), never guessed."""
import copy
import json
from pathlib import Path

import pytest

from netdiag.check.generate import generate
from netdiag.snapshot_model import Model
from runtime.errors import InvalidArgument, NotFound
from runtime.records import compose_identity

FIXTURE = Path(__file__).parent.parent / "fixtures" / "lab_snapshot.json"


def _stack(projects=("shop",)) -> dict:
    """The lab snapshot with its containers renamed as Compose names them, in each project."""
    snap = json.loads(FIXTURE.read_text())
    base = snap["containers"]
    snap["containers"] = []
    for project in projects:
        for c in copy.deepcopy(base):
            labels = {"com.docker.compose.project": project, "com.docker.compose.service": c["name"],
                      "com.docker.compose.container-number": "1"}
            snap["containers"].append({**c, "name": f"{project}-{c['name']}-1", **compose_identity(labels)})
    return snap


def test_a_service_resolves_by_its_name_and_its_short_name():
    model = Model(_stack())
    web = model.resolve("shop-web-1")
    assert model.resolve("web") is web and model.resolve("web-1") is web
    with pytest.raises(NotFound):
        model.resolve("web-2")
    with pytest.raises(InvalidArgument, match="(?i)did you mean 'web'"):  # a service name is suggested too
        model.resolve("wbe")


def test_a_service_of_two_projects_is_ambiguous():
    model = Model(_stack(("shop", "blog")))
    with pytest.raises(InvalidArgument, match="'web' is a service of 2 compose projects \\(blog, shop\\)"):
        model.resolve("web")
    assert model.resolve("blog-web-1")["kind"] == "container"


def test_only_compose_labels_make_an_identity():
    assert compose_identity({"com.docker.compose.project": "p"}) == {}
    assert compose_identity(None) == {}
    assert compose_identity({"com.docker.compose.project": "p", "com.docker.compose.service": "s"}) == \
        {"compose": {"project": "p", "service": "s", "number": 1}}


def test_generated_checks_resolve_a_stack_by_service_name():
    snap = _stack()
    snap["namespaces"][snap["host"]]["conntrack"].append(  # api talked to db on 5432, answered (assured)
        {"proto": 6, "src": "10.50.0.2", "dst": "10.50.0.3", "sport": 40000, "dport": 5432, "status": 0x4})
    checks = generate(Model(snap))["checks"]
    assert {"reach": {"from": "shop-api-1", "to": "shop-db-1", "port": 5432, "proto": "tcp"}} in checks
    assert {"dns": {"from": "shop-api-1", "name": "db", "address": "10.50.0.3"}} in checks  # the name the app uses
