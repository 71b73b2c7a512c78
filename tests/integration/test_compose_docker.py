"""Docker Compose's stacks next to netdiag: containers a real Docker engine runs with Docker
Compose's labels (what `docker compose up` sets; the compose plugin itself is not installed here)
are found by service name (`web`, `api-1`), as netdiag's own stacks are."""
from __future__ import annotations

import json

import pytest

from tests.dockerkit import HAVE_DOCKER, IMAGE, docker_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")]


def _labels(service: str) -> list[str]:
    return [x for k, v in (("project", "dshop"), ("service", service), ("container-number", "1"))
            for x in ("--label", f"com.docker.compose.{k}={v}")]


def test_a_docker_compose_stack_is_traced_by_service_name(tmp_path):
    def setup(d):
        d.docker("network", "create", "dshop_default")
        for service in ("web", "api"):
            d.docker("run", "-d", "--name", f"dshop-{service}-1", "--network", "dshop_default", "--network-alias", service,
                     *_labels(service), IMAGE, "httpd", "-f", "-p", "80")

    with docker_lab(tmp_path / "docker-lab", setup) as d:
        p = d.lab.run("trace", "web", "api-1", "--port", "80", "--json", timeout=90)
        assert p.returncode == 0, p.stdout + p.stderr
        r = json.loads(p.stdout)
        assert r["verdict"] == "delivered" and r["hops"][-1]["label"] == "dshop-api-1 (docker container)", r["summary"]
        bad = d.lab.run("trace", "web", "api-2", "--port", "80")
        assert bad.returncode == 2 and "No such target: api-2" in bad.stderr, bad.stderr
