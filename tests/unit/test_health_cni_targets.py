"""A CNI pod as a health target: `cni:ID:PORT` parses (no resolver knows it), and is checked at
the address the model has for the pod, the name kept for what is shown."""
from __future__ import annotations

import pytest

from netdiag.health import spec as hspec
from netdiag.health.pipeline import model_named
from runtime.errors import InvalidArgument

POD = {"runtime": "cni", "id": "4f2a9c1b7d3e" + "0" * 52, "name": "cni:4f2a9c1b7d3e",
       "networks": {"k8s": {"ip": "10.88.0.7", "prefix": 24}}}


class Model:
    def container(self, ref: str):
        return POD if ref in (POD["name"], "cni:" + POD["id"]) else None


def test_cni_targets_parse_and_bad_ones_are_refused():
    s = hspec.parse("cni:4f2a9c1b7d3e:8080")
    assert (s.host, s.port, s.mode) == ("cni:4f2a9c1b7d3e", 8080, "tcp")
    for bad in ("cni::80", "cni:a/b:80", "cni:ab:80"):
        with pytest.raises(InvalidArgument):
            hspec.parse(bad)


def test_a_pod_name_is_checked_at_its_address_and_shown_by_name():
    s = model_named(Model(), hspec.parse("cni:" + POD["id"] + ":80", http="/ready"))
    assert (s.host, s.endpoint, s.header_host, s.is_ip) == ("10.88.0.7", "cni:4f2a9c1b7d3e", "10.88.0.7", True)
    assert s.show() == "http://10.88.0.7:80/ready (cni:4f2a9c1b7d3e)" and s.to_dict()["endpoint"] == "cni:4f2a9c1b7d3e"
    plain = hspec.parse("web:80")
    assert model_named(Model(), plain) is plain and "endpoint" not in plain.to_dict()


def test_an_unknown_pod_is_bad_input():
    with pytest.raises(InvalidArgument, match="No CNI pod"):
        model_named(Model(), hspec.parse("cni:0123456789ab:80"))
