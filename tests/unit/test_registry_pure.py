"""The registry client's pure parts: challenges, insecure registries, Docker's config file, manifest
documents and platforms, gzip layers in pieces."""
import base64
import gzip
import json
import os
import stat

import pytest

from runtime.errors import InvalidArgument
from runtime.registry import dockerconfig, manifests, transport
from runtime.registry.blobs import _Gunzip
from runtime.registry.errors import BAD_CONTENT, NOT_FOUND, RegistryError

D = "sha256:" + "ab" * 32


def test_challenges():
    kind, p = transport.parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                        'scope="repository:library/busybox:pull"')
    assert kind == "bearer" and p == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                                      "scope": "repository:library/busybox:pull"}
    assert transport.parse_challenge('Basic realm="netdiag \\"lab\\""') == ("basic", {"realm": 'netdiag "lab"'})
    assert transport.parse_challenge("Basic realm=plain, charset=UTF-8") == ("basic", {"realm": "plain", "charset": "UTF-8"})


@pytest.mark.parametrize("domain,configured,want", [
    ("127.0.0.1:5000", [], True), ("127.8.9.1", [], True), ("[::1]:5000", [], True),  # Docker: loopback always
    ("203.0.113.1:5000", [], False), ("registry.example", [], False), ("localhost:5000", [], False),
    ("203.0.113.1:5000", ["203.0.113.1:5000"], True), ("203.0.113.1:5000", ["203.0.113.0/24"], True),
    ("203.0.113.1:5000", ["198.51.100.0/24"], False), ("registry.example:443", ["registry.example"], True),
])
def test_insecure_registries(domain, configured, want):
    assert transport.is_insecure(domain, configured) is want


def test_insecure_registries_from_the_environment_and_daemon_json(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path))
    monkeypatch.setenv("NETDIAG_INSECURE_REGISTRIES", "a.example:5000, b.example")
    (tmp_path / "daemon.json").write_text(json.dumps({"insecure-registries": ["10.0.0.0/8"]}))
    assert transport.configured_insecure(["c.example"]) == ["a.example:5000", "b.example", "10.0.0.0/8", "c.example"]


def test_split_host():
    assert transport.split_host("203.0.113.1:5000") == ("203.0.113.1", 5000)
    assert transport.split_host("[fc00::1]:5000") == ("fc00::1", 5000)
    assert transport.split_host("registry.example") == ("registry.example", None)


def test_docker_config_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "d"))
    assert dockerconfig.credentials("203.0.113.1:5000") is None
    dockerconfig.store("203.0.113.1:5000", "alice", "pw:with:colons")
    dockerconfig.store("docker.io", "bob", "hub")
    path = tmp_path / "d" / "config.json"
    data = json.loads(path.read_text())
    assert base64.b64decode(data["auths"]["203.0.113.1:5000"]["auth"]).decode() == "alice:pw:with:colons"
    assert "https://index.docker.io/v1/" in data["auths"]  # where Docker keeps Docker Hub's
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert dockerconfig.credentials("203.0.113.1:5000") == ("alice", "pw:with:colons")
    assert dockerconfig.credentials("index.docker.io") == ("bob", "hub")
    assert dockerconfig.erase("203.0.113.1:5000") is True
    assert dockerconfig.erase("203.0.113.1:5000") is False
    assert dockerconfig.credentials("203.0.113.1:5000") is None


def test_docker_config_keeps_what_docker_wrote(tmp_path, monkeypatch):
    """Docker's own keys (and an https:// spelling of a registry) survive netdiag's login."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({
        "auths": {"https://r.example": {"auth": base64.b64encode(b"u:p").decode()}}, "psFormat": "table {{.ID}}"}))
    assert dockerconfig.credentials("r.example") == ("u", "p")
    dockerconfig.store("s.example", "x", "y")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["psFormat"] == "table {{.ID}}" and set(data["auths"]) == {"https://r.example", "s.example"}


def _credential_helper(tmp_path, monkeypatch, name: str, get_json: str) -> None:
    """docker-credential-NAME on PATH, answering `get` with get_json (%s: the registry it was asked for)."""
    helper = tmp_path / "bin" / f"docker-credential-{name}"
    helper.parent.mkdir()
    helper.write_text(f'#!/bin/sh\nread reg\n[ "$1" = get ] && printf \'{get_json}\' "$reg"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))


def test_credential_helper_is_used(tmp_path, monkeypatch):
    """credHelpers names docker-credential-NAME; netdiag speaks its protocol (a registry on stdin, JSON out)."""
    _credential_helper(tmp_path, monkeypatch, "labtest", '{"ServerURL":"%s","Username":"h","Secret":"s"}')
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"r.example": "labtest"}}))
    assert dockerconfig.credentials("r.example") == ("h", "s")
    assert dockerconfig.credentials("other.example") is None


def test_identity_tokens_stand_for_the_password(tmp_path, monkeypatch):
    """Docker's `identitytoken` beside `auth` ("user:" with no password), and a helper's "<token>" user."""
    _credential_helper(tmp_path, monkeypatch, "tok", '{"Username":"<token>","Secret":"rt-%s"}')
    (tmp_path / "config.json").write_text(json.dumps({
        "auths": {"r.example": {"auth": base64.b64encode(b"alice:").decode(), "identitytoken": "rt-1"}},
        "credHelpers": {"h.example": "tok"}}))
    assert dockerconfig.login("r.example") == ("alice", "", "rt-1")
    assert dockerconfig.login("h.example") == ("", "", "rt-h.example")
    assert dockerconfig.credentials("h.example") is None and dockerconfig.login("other.example") is None
    dockerconfig.store("s.example", "alice", "the-password", "rt-9")  # a login the token service gave one to
    assert dockerconfig.login("s.example") == ("alice", "", "rt-9")
    assert "the-password" not in (tmp_path / "config.json").read_text()


def _desc(platform=None, media=manifests.OCI_MANIFEST):
    return {"mediaType": media, "digest": D, "size": 10, **({"platform": platform} if platform else {})}


def test_pick_platform():
    doc = {"manifests": [_desc({"os": "linux", "architecture": "arm", "variant": "v7"}),
                         {**_desc({"os": "linux", "architecture": "amd64"}), "digest": "sha256:" + "cd" * 32},
                         {**_desc({"os": "linux", "architecture": "arm64", "variant": "v8"}), "digest": "sha256:" + "ef" * 32}]}
    assert manifests.pick_platform(doc, "m", ("linux", "amd64", "")).digest == "sha256:" + "cd" * 32
    assert manifests.pick_platform(doc, "m", ("linux", "arm64", "v8")).digest == "sha256:" + "ef" * 32
    with pytest.raises(RegistryError) as e:
        manifests.pick_platform(doc, "m", ("linux", "s390x", ""))
    assert e.value.cause == NOT_FOUND and "linux/arm/v7" in str(e.value)


def test_media_types_and_manifests():
    kind, doc = manifests.media_type(json.dumps({"schemaVersion": 2, "manifests": []}).encode(), "", "m")
    assert kind == manifests.OCI_INDEX  # an index without mediaType is known by its shape
    kind, _ = manifests.media_type(b'{"schemaVersion": 2, "layers": []}', manifests.DOCKER_MANIFEST + "; charset=x", "m")
    assert kind == manifests.DOCKER_MANIFEST
    with pytest.raises(RegistryError, match="schema 1"):
        manifests.media_type(b'{"schemaVersion": 1, "fsLayers": []}', "", "m")
    good = {"schemaVersion": 2, "config": _desc(), "layers": [_desc(media="application/vnd.docker.image.rootfs.diff.tar.gzip")]}
    assert manifests.image_manifest(good, "m").layers[0].digest == D
    for bad in ({**good, "layers": [{**_desc(), "digest": "sha256:short"}]},
                {**good, "layers": [{**_desc(), "size": -1}]},
                {**good, "layers": [_desc(media="application/vnd.oci.image.layer.v1.tar+zstd")]}):
        with pytest.raises(RegistryError) as e:
            manifests.image_manifest(bad, "m")
        assert e.value.cause == BAD_CONTENT


def test_gunzip_in_pieces_and_several_members():
    data = gzip.compress(b"first member ") + gzip.compress(b"second member")
    g = _Gunzip()
    out = b"".join(g.feed(data[i:i + 7]) for i in range(0, len(data), 7)) + g.finish("x")
    assert out == b"first member second member"
    g = _Gunzip()
    g.feed(data[:-5])
    with pytest.raises(RegistryError, match="middle of its gzip stream"):
        g.finish("layer x")


def test_login_takes_docker_spellings_of_a_registry():
    from runtime.api.registry import registry_domain

    assert registry_domain(None) == registry_domain("https://index.docker.io/v1/") == "docker.io"
    assert registry_domain("https://203.0.113.1:5000") == "203.0.113.1:5000"
    assert registry_domain("localhost:5000") == "localhost:5000"
    with pytest.raises(InvalidArgument):
        registry_domain("not a host")


def _response(status: int, headers: dict | None = None, body: dict | None = None):
    import httpx

    return httpx.Response(status, headers=headers or {}, json=body,
                          request=httpx.Request("GET", "https://r.example:5000/v2/lab/web/manifests/1"))


def test_statuses_become_causes_that_say_what_to_do():
    from runtime.registry.errors import DENIED, RATE_LIMITED, UNAUTHORIZED

    cases = [
        (_response(401, {"www-authenticate": 'Bearer realm="https://auth.example/token",service="r"'},
                   {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
         UNAUTHORIZED, ["Bearer realm 'https://auth.example/token' for repository:lab/web:pull", "netdiag login r.example:5000"]),
        (_response(403), DENIED, ["refuses repository:lab/web:pull to an anonymous client", "netdiag login r.example:5000"]),
        (_response(404, body={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}),
         NOT_FOUND, ["MANIFEST_UNKNOWN: manifest unknown"]),
        (_response(429, {"retry-after": "60"}), RATE_LIMITED, ["Retry after 60 s", "log in"]),
    ]
    for r, cause, phrases in cases:
        with pytest.raises(RegistryError) as e:
            transport.raise_for(r, "manifest for r.example:5000/lab/web:1", ("repository:lab/web:pull",))
        assert e.value.cause == cause
        for phrase in phrases:
            assert phrase in str(e.value), str(e.value)
    # a login's refusal names the login and the grant to ask for; a logged-in client is not told to log in
    with pytest.raises(RegistryError) as e:
        transport.raise_for(_response(403), "manifest", ("repository:lab/web:pull",), user="bob")
    assert e.value.cause == DENIED and "grant 'bob' repository:lab/web:pull" in e.value.fix, e.value.fix
    with pytest.raises(RegistryError) as e:
        transport.raise_for(_response(429, {"retry-after": "30"}), "manifest", (), user="bob")
    assert e.value.fix.startswith("wait 30 s") and "log in" not in e.value.fix, e.value.fix


def test_transport_failures_name_the_layer(tmp_path, monkeypatch):
    import socket
    import ssl

    import httpx

    from runtime.registry.errors import CONNECT_FAILED, DNS_FAILURE, TLS_NAME_MISMATCH, TLS_UNKNOWN_AUTHORITY

    monkeypatch.setenv("NETDIAG_CERTS_D", str(tmp_path))

    def failed(inner, outer=httpx.ConnectError):
        try:
            try:
                raise inner
            except Exception as e:
                raise outer(str(e)) from e
        except Exception as e:
            return transport.connection_error(e, "r.example:5000", "r.example", 5000)

    unknown = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unknown.verify_code, unknown.verify_message = 20, "unable to get local issuer certificate"
    e = failed(unknown)
    assert e.cause == TLS_UNKNOWN_AUTHORITY and f"{tmp_path}/r.example:5000/ca.crt" in str(e)
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch, certificate is not valid for 'r.example'."
    assert failed(mismatch).cause == TLS_NAME_MISMATCH
    assert failed(socket.gaierror(-2, "Name or service not known")).cause == DNS_FAILURE
    e = failed(ConnectionRefusedError(111, "Connection refused"))
    assert e.cause == CONNECT_FAILED and "Connection refused" in str(e) and "netdiag trace host r.example --port 5000" in str(e)
    e = failed(TimeoutError("timed out"), httpx.ConnectTimeout)
    assert e.cause == CONNECT_FAILED and e.detail["phase"] == "connect"


def test_docker_hub_is_reached_at_its_api_host(tmp_path, monkeypatch):
    """docker.io names Docker Hub; its requests (and a failure's host, for DNS and the trace) go to
    registry-1.docker.io."""
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path))
    with transport.Session("docker.io") as s:
        assert (s.host, s.port, s.url("/v2/")) == ("registry-1.docker.io", 443, "https://registry-1.docker.io/v2/")
