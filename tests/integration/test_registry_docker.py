"""Interoperability with a real Docker engine through a real registry, both ways: Docker pushes
(gzip layers, Docker's schema 2 manifest) and netdiag pulls and runs; netdiag pushes (its OCI
manifest, plain tar layers) and Docker pulls and runs. The registry serves plain HTTP on the lab
host's 127.0.0.1, which both treat as insecure without configuration, as Docker documents."""
import json

import pytest

from netdiag.worlds.registry import LabRegistry
from tests.dockerkit import HAVE_DOCKER, docker_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="needs Debian's docker.io")]


def test_docker_and_netdiag_exchange_images_through_a_registry(tmp_path):
    with docker_lab(tmp_path) as d:
        reg = LabRegistry(d.lab, tmp_path / "registry", where=None, address="127.0.0.1", tls=False).start()
        try:
            dom = reg.domain
            d.docker("tag", d.lab.image, f"{dom}/dock/bb:1")
            d.docker("push", f"{dom}/dock/bb:1", timeout=120)
            out = d.lab.ok("pull", f"{dom}/dock/bb:1")
            assert "Pull complete" in out, out
            assert d.lab.ok("run", "--rm", "--network", "none", f"{dom}/dock/bb:1", "echo", "from docker").strip() == "from docker"
            docker_id = d.inspect(f"{dom}/dock/bb:1")["Id"]
            assert json.loads(d.lab.ok("image", "inspect", f"{dom}/dock/bb:1"))[0]["Id"] == docker_id

            d.lab.ok("tag", "busybox", f"{dom}/nd/bb:1")
            d.lab.ok("push", f"{dom}/nd/bb:1")
            d.docker("pull", f"{dom}/nd/bb:1", timeout=120)
            p = d.docker("run", "--rm", "--network", "none", f"{dom}/nd/bb:1", "echo", "from netdiag", timeout=60)
            assert p.stdout.strip() == "from netdiag"
            ours = json.loads(d.lab.ok("image", "inspect", f"{dom}/nd/bb:1"))[0]
            assert d.inspect(f"{dom}/nd/bb:1")["RepoDigests"] == ours["RepoDigests"]

            def digests(lines: str) -> list[str]:  # `images --digests` rows of this registry's repositories
                return sorted(" ".join(line.split()[:3]) for line in lines.splitlines() if line.startswith(dom))

            theirs = d.docker("images", "--digests").stdout
            mine = d.lab.ok("images", "--digests")
            assert mine.splitlines()[0].split() == theirs.splitlines()[0].split(), (mine, theirs)
            assert digests(mine) == digests(theirs) and len(digests(mine)) == 2, (mine, theirs)
        finally:
            reg.stop()
