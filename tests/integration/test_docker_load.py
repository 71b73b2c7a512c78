"""A Docker user's first move: `docker save` an image on a real engine (tests/dockerkit.py's private
dockerd, Debian's docker.io 20.10, which writes the pre-25 layout: manifest.json, <digest>.json,
<id>/layer.tar), then `netdiag load` it and run it."""
from __future__ import annotations

import json
import tarfile

import pytest

from tests.dockerkit import HAVE_DOCKER, IMAGE, docker_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not HAVE_DOCKER, reason="no Docker engine installed")]

BUILT = "lab/built:2"


@pytest.fixture(scope="module")
def dlab(tmp_path_factory):
    """IMAGE (busybox, one layer) and BUILT: IMAGE plus a file and two RUNs that make the same change,
    so two of its layers are the same and `docker save` writes the second as a symlink to the first."""
    ctx = tmp_path_factory.mktemp("build-ctx")
    same = "RUN touch -t 200001010000 /same\n"
    (ctx / "Dockerfile").write_text(f"FROM {IMAGE}\nRUN echo built > /built\n{same}{same}")

    def setup(d):
        d.docker("build", "-q", "-t", BUILT, str(ctx), timeout=120)

    with docker_lab(tmp_path_factory.mktemp("docker-load"), setup) as d:
        yield d


def _save(dlab, ref: str, out) -> dict[str, tarfile.TarInfo]:
    dlab.docker("save", ref, "-o", str(out))
    with tarfile.open(out) as tf:
        return {m.name.removeprefix("./"): m for m in tf.getmembers()}


def test_a_docker_20_save_loads_runs_and_lists_with_its_tag(dlab, tmp_path):
    lab, tar = dlab.lab, tmp_path / "bbox.tar"
    members = _save(dlab, IMAGE, tar)
    docker_id = dlab.docker("image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip()
    # the legacy layout, not an OCI one: this is the format the test is about
    assert "index.json" not in members and "manifest.json" in members and "repositories" in members
    assert f"{docker_id[7:]}.json" in members and any(n.endswith("/layer.tar") for n in members)

    assert lab.ok("load", "-i", str(tar)) == f"Loaded image: {IMAGE}:latest\n"
    assert lab.ok("run", "--rm", "--network", "none", IMAGE, "echo", "ok") == "ok\n"
    rows = [json.loads(line) for line in lab.ok("images", "--format", "json").splitlines()]
    mine = [r for r in rows if r["Repository"] == IMAGE]
    assert [r["Tag"] for r in mine] == ["latest"]
    assert docker_id.startswith("sha256:" + mine[0]["ID"].removeprefix("sha256:"))  # Docker's image id
    assert IMAGE in lab.ok("images")
    assert lab.ok("load", "-i", str(tar)) == f"Loaded image: {IMAGE}:latest\n"  # again: the same image
    assert json.loads(lab.ok("image", "inspect", IMAGE))[0]["Id"] == docker_id


def test_a_built_image_with_a_repeated_layer_loads_from_standard_input(dlab, tmp_path):
    lab, tar = dlab.lab, tmp_path / "built.tar"
    members = _save(dlab, BUILT, tar)
    layer_tars = [m for n, m in members.items() if n.endswith("/layer.tar")]
    assert len(layer_tars) == 4 and sum(m.issym() for m in layer_tars) == 1  # Docker's dedup of the same layer
    with open(tar, "rb") as f:
        p = lab.netdiag("load", stdin=f, timeout=60)
    assert p.returncode == 0 and p.stdout == f"Loaded image: {BUILT}\n", p.stderr
    assert lab.ok("run", "--rm", "--network", "none", BUILT, "cat", "/built") == "built\n"
    assert len(json.loads(lab.ok("image", "inspect", BUILT))[0]["RootFS"]["Layers"]) == 4
