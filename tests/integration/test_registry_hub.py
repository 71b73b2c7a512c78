"""Docker Hub's flow, in a lab: Docker's reference rules send `busybox` to registry-1.docker.io and
the registry's challenge to the token realm https://auth.docker.io/token for service
registry.docker.io, scope repository:library/busybox:pull. The lab's resolver (netdiag.worlds.lab_dns,
at the address /etc/resolv.conf names) answers both names with lab servers: the real registry
with token auth, and the token service on HTTPS, each with a certificate for its name from a CA
that only the lab host's CA store (SSL_CERT_FILE) holds. Nothing is sent to the internet."""
import base64
import json

import pytest

from netdiag.worlds.lab_dns import LabResolver
from netdiag.worlds.registry import LabRegistry
from tests.labkit import World

pytestmark = pytest.mark.integration

HUB_IP, AUTH_IP = "203.0.113.1", "203.0.113.3"
USER, PASSWORD = "alice", "hub-pw"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    w = World(state_dir=tmp / "ndroot").create()
    dns = registry = None
    try:
        assert w.run_in("outside", ["ip", "addr", "add", f"{AUTH_IP}/32", "dev", "lo"], timeout=10).returncode == 0
        dns = LabResolver(w, tmp / "dns", {"registry-1.docker.io": HUB_IP, "auth.docker.io": AUTH_IP}).start()
        token = {"address": AUTH_IP, "port": 443, "name": "auth.docker.io", "service": "registry.docker.io",
                 "public": ("library/",), "refresh": {"idtok-alice": USER}}
        registry = LabRegistry(w, tmp / "registry", port=443, cert_name="registry-1.docker.io", users={USER: PASSWORD},
                               auth="token", token=token).start()
        bundle = tmp / "ca-bundle.crt"  # the lab host's system CA store
        bundle.write_bytes(registry.ca_cert.read_bytes() + registry.token_ca.read_bytes())
        w.env.update(SSL_CERT_FILE=str(bundle), DOCKER_CONFIG=str(tmp / "docker"), NETDIAG_CERTS_D=str(tmp / "certs.d"))
        w.registry, w.tmp = registry, tmp
        w.ok("images")  # the built-in busybox: docker.io/library/busybox:latest
        yield w
    finally:
        if registry:
            registry.stop()
        if dns:
            dns.stop()
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"


def test_a_short_name_goes_to_docker_hub_and_library_is_public(hub, tmp_path):
    p = hub.netdiag("login", "-u", USER, "--password-stdin", input=PASSWORD + "\n", timeout=30)
    assert p.returncode == 0 and "Login Succeeded" in p.stdout, p.stderr
    assert "https://index.docker.io/v1/" in json.loads((hub.tmp / "docker/config.json").read_text())["auths"]
    out = hub.ok("push", "busybox")
    assert "Pushed" in out, out
    anonymous = {**hub.env, "DOCKER_CONFIG": str(tmp_path / "nobody"), "NETDIAG_ROOT": str(tmp_path / "host2")}
    p = hub.netdiag("pull", "busybox", env=anonymous, timeout=60)
    assert p.returncode == 0 and "Pull complete" in p.stdout, p.stdout + p.stderr
    assert "latest: Pulling from library/busybox" in p.stdout, p.stdout
    assert p.stdout.strip().splitlines()[-1] == "docker.io/library/busybox:latest", p.stdout
    pulled = json.loads(hub.netdiag("image", "inspect", "busybox", env=anonymous, timeout=30).stdout)[0]
    assert pulled["Id"] == json.loads(hub.ok("image", "inspect", "busybox"))[0]["Id"]
    assert pulled["RepoDigests"][0].startswith("busybox@sha256:"), pulled["RepoDigests"]  # Docker's familiar form


def test_an_identity_token_for_docker_hub_and_a_private_repository(hub, tmp_path):
    """Docker keeps Hub's login under https://index.docker.io/v1/; its identity token is exchanged
    at auth.docker.io. A private repository without it is refused, naming Hub's realm and scope."""
    cfg = tmp_path / "docker"
    cfg.mkdir()
    entry = {"auth": base64.b64encode(f"{USER}:".encode()).decode(), "identitytoken": "idtok-alice"}
    (cfg / "config.json").write_text(json.dumps({"auths": {"https://index.docker.io/v1/": entry}}))
    env = {**hub.env, "DOCKER_CONFIG": str(cfg)}
    hub.ok("tag", "busybox", f"{USER}/private:1")
    p = hub.netdiag("push", f"{USER}/private:1", env=env, timeout=60)
    assert p.returncode == 0 and "1: digest: sha256:" in p.stdout, p.stdout + p.stderr  # its layer mounted from library/
    assert f"refresh_token grant for {USER}" in hub.registry.token_log()
    p = hub.netdiag("pull", "--json", f"{USER}/private:1", env={**env, "NETDIAG_ROOT": str(tmp_path / "h3")}, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    anonymous = {**hub.env, "DOCKER_CONFIG": str(tmp_path / "nobody"), "NETDIAG_ROOT": str(tmp_path / "h4")}
    r = json.loads(hub.netdiag("pull", "--json", f"{USER}/private:1", env=anonymous, timeout=60).stdout)
    assert r["cause"] == "UNAUTHORIZED" and r["registry"] == "registry-1.docker.io", r
    challenge = next(e["detail"] for e in r["evidence"] if e["kind"] == "challenge")
    assert "realm='https://auth.docker.io/token'" in challenge and f"repository:{USER}/private:pull" in challenge, r
