"""A cluster's second host runs the image its first host built: h1 builds and pushes to a registry
on the underlay (TLS, its CA in each host's certs.d), h2's `run` on an overlay network pulls it
(the name says the registry) and runs it."""
import pytest

from netdiag.worlds import STORE_IP
from netdiag.worlds.registry import LabRegistry
from tests.labkit import Cluster

pytestmark = pytest.mark.integration


def test_a_built_image_runs_on_another_host_through_the_registry(tmp_path):
    cl = Cluster(hosts=2, state_dir=tmp_path / "lab")
    reg = None
    try:
        cl.create()
        cl.join_all(ttl=3)
        reg = LabRegistry(cl, tmp_path / "registry", where="store", address=STORE_IP).start()
        reg.trust(tmp_path / "certs.d")
        for h in cl.hosts:
            h.env["NETDIAG_CERTS_D"] = str(tmp_path / "certs.d")
            h.env["DOCKER_CONFIG"] = str(tmp_path / f"docker-{h.name}")
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "built.txt").write_text("built on h1\n")
        (ctx / "Dockerfile").write_text('FROM busybox\nCOPY built.txt /built.txt\nCMD ["cat", "/built.txt"]\n')
        name = f"{reg.domain}/cluster/app:1"
        cl.ok(0, "build", "-t", name, str(ctx), timeout=120)
        assert "Pushed" in cl.ok(0, "push", name)
        cl.ok(0, "network", "create", "-d", "overlay", "ov")
        p = cl.run(1, "run", "--rm", "--network", "ov", name, timeout=120)
        assert p.returncode == 0 and p.stdout.strip() == "built on h1", p.stderr
        assert f"Unable to find image '{name}' locally" in p.stderr
    finally:
        if reg is not None:
            reg.stop()
        cl.destroy()
    assert not cl.leaks(), cl.leaks()
