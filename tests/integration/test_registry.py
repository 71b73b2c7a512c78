"""pull, push, tag, login and logout against a real registry (Debian's docker-registry, the CNCF
distribution registry) serving TLS with a CA made here and htpasswd auth, from a lab's outside
namespace: nothing leaves the lab. Docker's config file and certs.d are temporary directories."""
import json
import re
import subprocess
import sys

import pytest

from netdiag.worlds.registry import LabRegistry, random_rootfs
from tests.labkit import World

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "s3cret-pw"


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    """One lab, one registry (TLS + auth) for the module; each test uses its own repositories."""
    tmp = tmp_path_factory.mktemp("registry")
    w = World(state_dir=tmp / "ndroot").create()
    registry = None
    try:
        registry = LabRegistry(w, tmp / "registry", users={USER: PASSWORD}).start()
        w.certs_d, w.docker_config = tmp / "certs.d", tmp / "docker"
        registry.trust(w.certs_d)
        w.env.update(NETDIAG_CERTS_D=str(w.certs_d), DOCKER_CONFIG=str(w.docker_config))
        w.registry = registry
        w.ok("images")  # the built-in busybox
        p = w.run("login", "-u", USER, "--password-stdin", registry.domain, input=PASSWORD + "\n")
        assert p.returncode == 0, p.stderr
        yield w
    finally:
        if registry:
            registry.stop()
        w.destroy()
    assert not w.leaks(), f"left behind: {w.leaks()}"


def _fails(w, *args, env=None):
    p = w.netdiag(*args, env={**w.env, **(env or {})}, timeout=60)
    assert p.returncode != 0, p.stdout
    return p


def test_push_remove_pull_run(reg):
    d = reg.registry.domain
    name = f"{d}/lab/bb:1"
    original = json.loads(reg.ok("image", "inspect", "busybox"))[0]
    reg.ok("tag", "busybox", name)
    out = reg.ok("push", name)
    assert "Pushed" in out and f"1: digest: {original['Manifest']}" in out, out
    again = reg.ok("push", name)  # the registry has every blob: none is sent again
    assert "Pushed" not in again and "Layer already exists" in again, again

    reg.ok("rmi", name)
    reg.ok("rmi", "busybox")  # its last tag: the image and its blobs are gone
    assert original["Id"][7:19] not in reg.ok("images", "-q")
    out = reg.ok("pull", name)
    assert "Pull complete" in out and "Already exists" not in out, out
    assert f"Digest: {original['Manifest']}" in out and "Downloaded newer image" in out, out
    pulled = json.loads(reg.ok("image", "inspect", name))[0]
    assert pulled["Id"] == original["Id"]
    assert pulled["RepoDigests"] == [f"{d}/lab/bb@{original['Manifest']}"]
    assert "Image is up to date" in reg.ok("pull", name)
    assert reg.ok("run", "--rm", "--network", "none", name, "echo", "pulled and running").strip() == "pulled and running"


def test_pull_fetches_layers_into_an_empty_store_and_by_digest(reg, tmp_path):
    """A second host (its own store) gets every layer from the registry, and a digest pulls the same image."""
    d = reg.registry.domain
    reg.ok("tag", "busybox", f"{d}/lab/second:1")
    digest = reg.ok("push", f"{d}/lab/second:1").strip().splitlines()[-1].split()[2]
    other = {**reg.env, "NETDIAG_ROOT": str(tmp_path / "host2")}
    p = reg.netdiag("pull", f"{d}/lab/second@{digest}", env=other, timeout=60)
    assert p.returncode == 0 and "Pull complete" in p.stdout, p.stdout + p.stderr
    p = reg.netdiag("image", "inspect", f"{d}/lab/second@{digest}", env=other, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)[0]["RepoDigests"] == [f"{d}/lab/second@{digest}"], p.stderr
    p = reg.netdiag("run", "--rm", "--network", "none", f"{d}/lab/second@{digest}", "echo", "ok", env=other, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    p = reg.netdiag("images", "--digests", env=other, timeout=30)  # pulled by digest only: Docker's <none> tag, the digest
    assert p.stdout.split("\n")[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"], p.stdout
    assert [f"{d}/lab/second", "<none>", digest] in [line.split()[:3] for line in p.stdout.splitlines()], p.stdout


def test_cross_repository_mount(reg):
    d = reg.registry.domain
    reg.ok("tag", "busybox", f"{d}/lab/mountsrc:1")
    reg.ok("push", f"{d}/lab/mountsrc:1")
    reg.ok("tag", "busybox", f"{d}/other/mounted:1")
    out = reg.ok("push", f"{d}/other/mounted:1")
    assert "Mounted from lab/" in out and "Pushed" not in out, out


def _random_image(w, tmp_path, ref: str, size: int) -> None:
    path = tmp_path / "rootfs.tar"
    path.write_bytes(random_rootfs(size))
    w.ok("import", str(path), ref)


def test_chunked_upload_round_trip(reg, tmp_path):
    d = reg.registry.domain
    name = f"{d}/lab/chunked:1"
    _random_image(reg, tmp_path, name, 300_000)
    image_id = json.loads(reg.ok("image", "inspect", name))[0]["Id"]
    p = reg.netdiag("push", name, env={**reg.env, "NETDIAG_UPLOAD_CHUNK": "65536"}, timeout=60)
    assert p.returncode == 0 and "Pushed" in p.stdout, p.stderr
    reg.ok("rmi", name)
    reg.ok("pull", name)
    assert json.loads(reg.ok("image", "inspect", name))[0]["Id"] == image_id


def test_a_corrupt_blob_is_refused_and_nothing_is_stored(reg, tmp_path):
    d = reg.registry.domain
    name = f"{d}/lab/corrupt:1"
    _random_image(reg, tmp_path, name, 50_000)
    layer = json.loads(reg.ok("image", "inspect", name))[0]["RootFS"]["Layers"][0]
    reg.ok("push", name)
    reg.ok("rmi", name)
    data = reg.registry.workdir / "storage/docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, one byte flipped on the registry's disk
    data.write_bytes(bytes(blob))
    p = _fails(reg, "pull", name)
    assert "does not match its digest: refused, nothing was stored" in p.stderr, p.stderr
    store = reg.state_dir / "images/blobs/sha256"
    assert not (store / layer[7:]).exists()
    assert not list(reg.state_dir.glob(".scratch-*"))
    assert name not in reg.ok("images", "--format", "{{.Repository}}:{{.Tag}}")


def test_without_login_the_registry_asks_for_credentials(reg, tmp_path):
    d = reg.registry.domain
    reg.ok("tag", "busybox", f"{d}/lab/private:1")
    reg.ok("push", f"{d}/lab/private:1")
    p = _fails(reg, "pull", f"{d}/lab/private:1", env={"DOCKER_CONFIG": str(tmp_path / "nobody")})
    assert p.returncode == 1
    err = p.stderr
    assert "authentication required (401 Unauthorized)" in err and "'netdiag-lab-registry'" in err, err
    assert "repository:lab/private:pull" in err and f"netdiag login {d}" in err, err


def test_login_with_a_wrong_password_stores_nothing_and_logout_forgets(reg, tmp_path):
    cfg = tmp_path / "docker"
    p = reg.netdiag("login", "-u", USER, "--password-stdin", reg.registry.domain, input="wrong\n",
                    env={**reg.env, "DOCKER_CONFIG": str(cfg)}, timeout=30)
    assert p.returncode == 1 and "Login to" in p.stderr and "401" in p.stderr, p.stderr
    assert not (cfg / "config.json").exists()
    p = reg.netdiag("login", "-u", USER, "--password-stdin", reg.registry.domain, input=PASSWORD + "\n",
                    env={**reg.env, "DOCKER_CONFIG": str(cfg)}, timeout=30)
    assert p.returncode == 0 and "Login Succeeded" in p.stdout, p.stderr
    assert reg.registry.domain in json.loads((cfg / "config.json").read_text())["auths"]
    p = reg.netdiag("logout", reg.registry.domain, env={**reg.env, "DOCKER_CONFIG": str(cfg)}, timeout=30)
    assert p.returncode == 0 and reg.registry.domain not in json.loads((cfg / "config.json").read_text())["auths"]


def _pushed(w, name: str) -> str:
    w.ok("tag", "busybox", name)
    w.ok("push", name)
    return name


def test_an_unknown_ca_is_an_x509_error_whose_fix_is_this_registrys_certs_d(reg, tmp_path):
    """The fix names the one file that makes Docker (and netdiag) trust the CA for this registry
    alone, never the machine-wide store; put there, the pull works."""
    name = _pushed(reg, f"{reg.registry.domain}/lab/unknownca:1")
    empty = tmp_path / "certs.d"
    env = {"NETDIAG_CERTS_D": str(empty)}
    p = _fails(reg, "pull", name, env=env)
    assert "x509: certificate signed by unknown authority" in p.stderr, p.stderr
    assert "issuer=CN = netdiag lab registry CA" in p.stderr, p.stderr  # which CA it wants
    r = json.loads(_fails(reg, "pull", "--json", name, env=env).stdout)
    assert r["cause"] == "TLS_UNKNOWN_AUTHORITY" and r["fix_command"] is None, r  # no CA to copy: only the user knows it
    assert "update-ca-certificates" not in r["fix"] and "insecure" not in r["fix"], r["fix"]
    path = re.search(r"(/\S+/ca\.crt)", r["fix"]).group(1)
    assert path == f"{empty}/{reg.registry.domain}/ca.crt", r["fix"]
    (empty / reg.registry.domain).mkdir(parents=True)
    (empty / reg.registry.domain / "ca.crt").write_bytes(reg.registry.ca_cert.read_bytes())  # the fix, applied
    p = reg.netdiag("pull", name, env={**reg.env, **env}, timeout=60)
    assert p.returncode == 0, p.stderr


def test_a_ca_kept_for_the_address_without_its_port_is_copied_by_the_printed_command(reg, tmp_path):
    """Scenario 20's mistake: the CA sits in certs.d/HOST (port 443's directory). The diagnosis finds
    the CA that verifies the certificate and prints the command; run as printed, the pull works."""
    from netdiag.fix_runner import steps

    name = _pushed(reg, f"{reg.registry.domain}/lab/portless:1")
    certs = tmp_path / "certs.d"
    (certs / reg.registry.address).mkdir(parents=True)
    (certs / reg.registry.address / "ca.crt").write_bytes(reg.registry.ca_cert.read_bytes())
    env = {"NETDIAG_CERTS_D": str(certs)}
    r = json.loads(_fails(reg, "pull", "--json", name, env=env).stdout)
    assert r["cause"] == "TLS_UNKNOWN_AUTHORITY" and r["fix_command"], r
    assert f"{certs}/{reg.registry.domain}/ca.crt" in r["fix_command"] and r["fix_command"] in r["fix"], r
    for argv in steps(r["fix_command"]):
        assert reg.run_in(None, argv, timeout=10).returncode == 0, argv
    p = reg.netdiag("pull", name, env={**reg.env, **env}, timeout=60)
    assert p.returncode == 0, p.stderr


def test_an_unknown_tag_is_not_found(reg):
    p = _fails(reg, "pull", f"{reg.registry.domain}/lab/bb:no-such-tag")
    assert p.returncode == 1 and "Not found: manifest for" in p.stderr and "MANIFEST_UNKNOWN" in p.stderr, p.stderr


def test_bearer_token_auth(reg, tmp_path):
    """Docker Hub's scheme: the registry's 401 names a token realm; a token for the scope is fetched
    there (with the stored credentials) and sent as Bearer. Anonymous tokens grant nothing."""
    token_reg = LabRegistry(reg, tmp_path / "token-registry", port=5002, users={USER: PASSWORD, "reader": "r"}, auth="token",
                            read_only=("reader",)).start()
    try:
        d = token_reg.domain
        env = {**reg.env, "DOCKER_CONFIG": str(tmp_path / "docker")}
        token_reg.trust(reg.certs_d)
        p = reg.netdiag("login", "-u", USER, "--password-stdin", d, input="wrong\n", env=env, timeout=30)
        assert p.returncode == 1 and "Login to" in p.stderr, p.stderr
        p = reg.netdiag("login", "-u", USER, "--password-stdin", d, input=PASSWORD + "\n", env=env, timeout=30)
        assert p.returncode == 0, p.stderr
        reg.ok("tag", "busybox", f"{d}/tok/bb:1")
        p = reg.netdiag("push", f"{d}/tok/bb:1", env=env, timeout=60)
        assert p.returncode == 0 and "Pushed" in p.stdout, p.stderr
        p = reg.netdiag("pull", f"{d}/tok/bb:1", env={**env, "DOCKER_CONFIG": str(tmp_path / "anonymous")}, timeout=60)
        assert p.returncode == 1 and f"Bearer realm '{token_reg.token_realm}'" in p.stderr, p.stderr
        assert "repository:tok/bb:pull" in p.stderr, p.stderr
        reader = {**env, "DOCKER_CONFIG": str(tmp_path / "reader")}
        assert reg.netdiag("login", "-u", "reader", "--password-stdin", d, input="r\n", env=reader, timeout=30).returncode == 0
        p = reg.netdiag("push", f"{d}/tok/bb:1", env=reader, timeout=60)  # pull only: the push is denied
        # the actions in the order the registry's challenge lists them (distribution's order varies)
        assert p.returncode == 1 and re.search(r"was denied: the token lacks repository:tok/bb:(pull,push|push,pull)\b",
                                               p.stderr), p.stderr
        reg.ok("rmi", f"{d}/tok/bb:1")
        p = reg.netdiag("pull", f"{d}/tok/bb:1", env=env, timeout=60)
        assert p.returncode == 0 and "Status: Image is up to date" in p.stdout, p.stdout + p.stderr  # busybox still holds it
    finally:
        token_reg.stop()


def test_a_firewalled_registry_is_traced_to_the_rule(reg):
    """The TCP handshake dies: the pull names the nftables rule that drops it, as trace does."""
    d = reg.registry.domain
    rules = ("add table inet ndblockreg\n"
             "add chain inet ndblockreg out { type filter hook output priority 0; }\n"
             f"add rule inet ndblockreg out ip daddr {reg.registry.address} tcp dport {reg.registry.port} drop\n")
    assert reg.run_in(None, ["nft", "-f", "-"], input=rules, timeout=10).returncode == 0
    try:
        p = reg.netdiag("pull", "--json", "--timeout", "2", f"{d}/lab/bb:1", timeout=120)
        assert p.returncode == 1, p.stderr
        r = json.loads(p.stdout)
        assert r["pulled"] is False and r["cause"] == "FIREWALL_DROP", r
        assert "ndblockreg" in json.dumps(r["trace"]["evidence"]) and r["fix"], r
    finally:
        reg.run_in(None, ["nft", "delete", "table", "inet", "ndblockreg"], timeout=10)


def test_a_certificate_for_another_name_is_a_name_mismatch(reg, tmp_path):
    other = LabRegistry(reg, tmp_path / "misnamed", port=5004, cert_name="registry.example").start()
    try:
        other.trust(reg.certs_d)
        p = reg.netdiag("pull", "--json", f"{other.domain}/lab/x:1", timeout=60)
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["cause"] == "TLS_NAME_MISMATCH", r
        assert "not valid for 203.0.113.1" in r["summary"], r
    finally:
        other.stop()


def test_run_pulls_an_image_the_host_lacks(reg, tmp_path):
    """A second host runs what the first pushed: `run` pulls a name that says its registry."""
    d = reg.registry.domain
    reg.ok("tag", "busybox", f"{d}/lab/auto:1")
    reg.ok("push", f"{d}/lab/auto:1")
    other = {**reg.env, "NETDIAG_ROOT": str(tmp_path / "host3")}
    p = reg.netdiag("run", "--rm", "--network", "none", f"{d}/lab/auto:1", "echo", "auto", env=other, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "auto", p.stderr
    assert f"Unable to find image '{d}/lab/auto:1' locally" in p.stderr and "Pull complete" in p.stderr, p.stderr
    p = reg.netdiag("run", "--rm", "--network", "none", "no-such-image-on-the-hub", env=other, timeout=60)
    assert p.returncode == 125 and "No such image" in p.stderr, p.stderr  # never sent to Docker Hub


def test_an_interrupted_pull_resumes(reg, tmp_path):
    """A pull killed half-way keeps what it received; the next asks only for the rest (Range)."""
    import signal
    import time

    d = reg.registry.domain
    name = f"{d}/lab/resume:1"
    _random_image(reg, tmp_path, name, 12_000_000)
    image_id = json.loads(reg.ok("image", "inspect", name))[0]["Id"]
    reg.ok("push", name)
    other = {**reg.env, "NETDIAG_ROOT": str(tmp_path / "host4")}
    partial = tmp_path / "host4/images/partial"
    shaped = reg.run_in("outside", ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "16mbit", "burst", "32kbit",
                                    "latency", "400ms"], timeout=10)
    assert shaped.returncode == 0, shaped.stderr
    try:
        p = subprocess.Popen([sys.executable, "-m", "netdiag", "pull", name], env=other, preexec_fn=reg.enter(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(f.stat().st_size > 2_000_000 for f in partial.glob("*")):
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        kept = sum(f.stat().st_size for f in partial.glob("*"))
        assert 2_000_000 < kept < 12_000_000, kept
    finally:
        reg.run_in("outside", ["tc", "qdisc", "del", "dev", "eth0", "root"], timeout=10)
    p = reg.netdiag("pull", name, env=other, timeout=60)
    assert p.returncode == 0 and "Resuming download at" in p.stdout, p.stdout + p.stderr
    p = reg.netdiag("image", "inspect", name, env=other, timeout=30)
    assert json.loads(p.stdout)[0]["Id"] == image_id
    assert not list(partial.glob("*"))


_PUT_INDEX = """
import json, sys
from runtime.registry.transport import Session, scope
domain, repo, this, other = sys.argv[1:5]
with Session(domain) as s:
    entries = []
    for tag, platform in ((other, {"os": "linux", "architecture": "s390x"}),
                          (this, {"os": "linux", "architecture": {"x86_64": "amd64", "aarch64": "arm64"}[__import__("os").uname().machine]})):
        r = s.request("GET", f"/v2/{repo}/manifests/{tag}", (scope(repo, "pull,push"),),
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": len(r.content),
                        "digest": r.headers["docker-content-digest"], "platform": platform})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})
    r = s.request("PUT", f"/v2/{repo}/manifests/multi", (scope(repo, "pull,push"),), ok=(201,), content=index,
                  headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    print(r.headers["docker-content-digest"])
"""


def test_a_multi_platform_index_gives_this_machines_image(reg, tmp_path):
    d = reg.registry.domain
    _random_image(reg, tmp_path, f"{d}/lab/multi:other", 10_000)
    reg.ok("tag", "busybox", f"{d}/lab/multi:this")
    reg.ok("push", f"{d}/lab/multi:other")
    reg.ok("push", f"{d}/lab/multi:this")
    p = reg.run_in(None, [sys.executable, "-c", _PUT_INDEX, d, "lab/multi", "this", "other"], env=reg.env, timeout=60)
    assert p.returncode == 0, p.stderr
    index_digest = p.stdout.strip()
    other = {**reg.env, "NETDIAG_ROOT": str(tmp_path / "host5")}
    p = reg.netdiag("pull", f"{d}/lab/multi:multi", env=other, timeout=60)
    assert p.returncode == 0 and f"Digest: {index_digest}" in p.stdout, p.stdout + p.stderr
    pulled = json.loads(reg.netdiag("image", "inspect", f"{d}/lab/multi:multi", env=other, timeout=30).stdout)[0]
    assert pulled["Id"] == json.loads(reg.ok("image", "inspect", "busybox"))[0]["Id"]  # this platform's entry
    assert pulled["RepoDigests"] == [f"{d}/lab/multi@{index_digest}"]
    p = reg.netdiag("pull", "--platform", "linux/s390x", f"{d}/lab/multi:multi", env=other, timeout=60)
    assert p.returncode == 0, p.stderr
    pulled = json.loads(reg.netdiag("image", "inspect", f"{d}/lab/multi:multi", env=other, timeout=30).stdout)[0]
    assert pulled["Id"] == json.loads(reg.ok("image", "inspect", f"{d}/lab/multi:other"))[0]["Id"]


def test_plain_http_only_when_configured_insecure(reg, tmp_path):
    """A registry without TLS off loopback: refused unless configured insecure (flag, environment
    or daemon.json), then spoken to over plain HTTP, as Docker does."""
    plain = LabRegistry(reg, tmp_path / "plain", port=5006, tls=False).start()
    try:
        d = plain.domain
        reg.ok("tag", "busybox", f"{d}/lab/plain:1")
        p = _fails(reg, "push", f"{d}/lab/plain:1")
        assert f"TLS to {d} failed" in p.stderr and "configured insecure" in p.stderr, p.stderr
        assert "cause: TLS_FAILED" in p.stderr, p.stderr  # a push failure is explained as a pull's is
        out = reg.ok("push", "--insecure-registry", d, f"{d}/lab/plain:1")
        assert "Pushed" in out, out
        reg.ok("rmi", f"{d}/lab/plain:1")
        p = reg.netdiag("pull", f"{d}/lab/plain:1", env={**reg.env, "NETDIAG_INSECURE_REGISTRIES": "203.0.113.0/24"}, timeout=60)
        assert p.returncode == 0, p.stderr
        (reg.state_dir / "daemon.json").write_text(json.dumps({"insecure-registries": [d]}))
        try:
            assert "Image is up to date" in reg.ok("pull", f"{d}/lab/plain:1")
        finally:
            (reg.state_dir / "daemon.json").unlink()
    finally:
        plain.stop()


def test_a_name_that_does_not_resolve_is_a_dns_failure(reg):
    """The lab host's resolver answers nothing (its DNS traffic is rejected in the lab): DNS_FAILURE."""
    rules = ("add table inet ndnodns\n"
             "add chain inet ndnodns out { type filter hook output priority 0; }\n"
             "add rule inet ndnodns out udp dport 53 reject\n"
             "add rule inet ndnodns out tcp dport 53 reject with tcp reset\n")
    assert reg.run_in(None, ["nft", "-f", "-"], input=rules, timeout=10).returncode == 0
    try:
        p = reg.netdiag("pull", "--json", "registry.netdiag-lab.example:5000/lab/bb:1", timeout=60)
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["cause"] == "DNS_FAILURE", r
        assert "registry.netdiag-lab.example" in r["summary"] and r["fix"], r
    finally:
        reg.run_in(None, ["nft", "delete", "table", "inet", "ndnodns"], timeout=10)


def test_a_pull_that_stalls_behind_an_mtu_black_hole(reg, tmp_path):
    """The registry sits behind a router (the lab's outside) whose link to the host has MTU 1300 and
    whose ICMP is dropped: the manifest (small) arrives, the layer's full-size segments never do.
    The pull stalls, and its diagnosis traces a full-size packet from the registry back: MTU_BLACKHOLE."""
    name = f"{reg.name}-mtu"
    assert subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    behind = None
    try:
        setup = [("outside", ["ip", "link", "add", "r0", "type", "veth", "peer", "name", "eth0", "netns", name]),
                 ("outside", ["ip", "addr", "add", "198.18.7.1/24", "dev", "r0"]), ("outside", ["ip", "link", "set", "r0", "up"]),
                 (name, ["ip", "addr", "add", "198.18.7.2/24", "dev", "eth0"]), (name, ["ip", "link", "set", "eth0", "up"]),
                 (name, ["ip", "route", "add", "default", "via", "198.18.7.1"])]
        for where, argv in setup:
            assert reg.run_in(where, argv, timeout=10).returncode == 0, argv
        behind = LabRegistry(reg, tmp_path / "behind", where=name, address="198.18.7.2", tls=False).start()
        env = {**reg.env, "NETDIAG_INSECURE_REGISTRIES": "198.18.7.2:5000"}
        image = f"{behind.domain}/lab/big:1"
        _random_image(reg, tmp_path, image, 200_000)
        assert reg.run_in("outside", ["sysctl", "-qw", "net.ipv4.ip_forward=1"], timeout=10).returncode == 0
        assert reg.netdiag("push", image, env=env, timeout=60).returncode == 0
        reg.ok("rmi", image)
        hardening = "table inet ndhardening {\n chain out {\n  type filter hook output priority 0;\n  meta l4proto icmp drop\n }\n}\n"
        assert reg.run_in("outside", ["nft", "-f", "-"], input=hardening, timeout=10).returncode == 0
        assert reg.run_in("outside", ["ip", "link", "set", "eth0", "mtu", "1300"], timeout=10).returncode == 0
        p = reg.netdiag("pull", "--json", "--timeout", "3", image, env=env, timeout=120)
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["cause"] == "MTU_BLACKHOLE", r
        assert f"MTU of 1300 in ns:{reg.outside}" in r["summary"] and "ndhardening" in r["summary"], r
    finally:
        if behind is not None:
            behind.stop()
        reg.run_in("outside", ["ip", "link", "set", "eth0", "mtu", "1500"], timeout=10)
        reg.run_in("outside", ["nft", "delete", "table", "inet", "ndhardening"], timeout=10)
        reg.run_in("outside", ["sysctl", "-qw", "net.ipv4.ip_forward=0"], timeout=10)
        reg.run_in("outside", ["ip", "link", "del", "r0"], timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_a_login_without_pull_access_to_a_repository_is_denied(reg, tmp_path):
    """The real registry with token auth: team B's login gets a token without team A's pull scope;
    distribution refuses it (401 insufficient_scope) and the pull says which grant to ask for."""
    token_reg = LabRegistry(reg, tmp_path / "scoped", port=5008, users={USER: PASSWORD, "bob": "b"}, auth="token",
                            repos={"bob": "teamb/"}).start()
    try:
        d = token_reg.domain
        token_reg.trust(reg.certs_d)
        alice, bob = ({**reg.env, "DOCKER_CONFIG": str(tmp_path / who)} for who in ("alice", "bob"))
        for env, user, password in ((alice, USER, PASSWORD), (bob, "bob", "b")):
            p = reg.netdiag("login", "-u", user, "--password-stdin", d, input=password + "\n", env=env, timeout=30)
            assert p.returncode == 0, p.stderr
        reg.ok("tag", "busybox", f"{d}/teama/app:1")
        assert reg.netdiag("push", f"{d}/teama/app:1", env=alice, timeout=60).returncode == 0
        p = reg.netdiag("pull", "--json", f"{d}/teama/app:1", env={**bob, "NETDIAG_ROOT": str(tmp_path / "bobhost")}, timeout=60)
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["cause"] == "DENIED", r
        assert "repository:teama/app:pull" in r["summary"] and "'bob'" in r["fix"], r
        assert f"netdiag login -u USER {d}" in r["fix"] and "http" in {e["kind"] for e in r["evidence"]}, r
    finally:
        token_reg.stop()


def test_a_front_that_forbids_a_repository_or_limits_the_rate_is_diagnosed(reg, tmp_path):
    """A real HAProxy in front of the registry answers 403 DENIED for repositories under secret/ (an
    access policy, as Harbor's or GHCR's) and allows 4 requests a minute per client, then 429 with
    Retry-After. Logged in already, the pull is told whom to ask, then how long to wait."""
    from netdiag.worlds.registry_front import RegistryFront

    front = RegistryFront(reg, tmp_path / "front", reg.registry, port=5443, requests=4, retry_after=42,
                          forbidden=("secret/",)).start()
    try:
        d = front.domain
        front.trust(reg.certs_d)
        env = {**reg.env, "DOCKER_CONFIG": str(tmp_path / "docker"), "NETDIAG_ROOT": str(tmp_path / "host")}
        p = reg.netdiag("login", "-u", USER, "--password-stdin", d, input=PASSWORD + "\n", env=env, timeout=30)
        assert p.returncode == 0, p.stderr  # requests 1 and 2: the ping and the authenticated one
        p = reg.netdiag("pull", "--json", f"{d}/secret/app:1", env=env, timeout=60)  # 3: the ping, 4: the manifest
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["cause"] == "DENIED", r
        assert {"kind": "http", "detail": f"403 from https://{d}/v2/secret/app/manifests/1"} in r["evidence"], r
        assert f"grant '{USER}' repository:secret/app:pull" in r["fix"], r["fix"]
        p = reg.netdiag("pull", "--json", f"{d}/lab/bb:1", env=env, timeout=60)  # 5: over the limit
        r = json.loads(p.stdout)
        assert p.returncode == 1 and r["cause"] == "RATE_LIMITED", r
        assert {"kind": "rate-limit", "detail": "Retry-After: 42"} in r["evidence"], r
        assert r["fix"].startswith("wait 42 s") and "log in" not in r["fix"], r["fix"]
    finally:
        front.stop()


def test_an_identity_token_is_exchanged_at_the_realm_as_docker_does(reg, tmp_path):
    """Docker's config.json may hold an identity token instead of a password (`identitytoken`, an
    OAuth2 refresh token): each token is then POSTed for with a refresh-token grant. A revoked one is
    a 401 whose fix is to log in again."""
    import base64

    token_reg = LabRegistry(reg, tmp_path / "oauth", port=5010, users={USER: PASSWORD}, auth="token",
                            token={"refresh": {"idtok-of-alice": USER}}).start()
    try:
        d = token_reg.domain
        token_reg.trust(reg.certs_d)

        def config(token: str) -> dict:
            cfg = tmp_path / token
            cfg.mkdir()
            entry = {"auth": base64.b64encode(f"{USER}:".encode()).decode(), "identitytoken": token}  # what Docker writes
            (cfg / "config.json").write_text(json.dumps({"auths": {d: entry}}))
            return {**reg.env, "DOCKER_CONFIG": str(cfg), "NETDIAG_ROOT": str(tmp_path / f"host-{token}")}

        env = config("idtok-of-alice")
        reg.ok("tag", "busybox", f"{d}/oauth/bb:1")
        p = reg.netdiag("push", f"{d}/oauth/bb:1", env={**env, "NETDIAG_ROOT": reg.env["NETDIAG_ROOT"]}, timeout=60)
        assert p.returncode == 0 and "Pushed" in p.stdout, p.stdout + p.stderr
        p = reg.netdiag("pull", f"{d}/oauth/bb:1", env=env, timeout=60)
        assert p.returncode == 0 and "Pull complete" in p.stdout, p.stdout + p.stderr
        assert f"refresh_token grant for {USER}" in token_reg.token_log(), token_reg.token_log()
        r = json.loads(_fails(reg, "pull", "--json", f"{d}/oauth/bb:1", env=config("revoked")).stdout)
        assert r["cause"] == "UNAUTHORIZED" and "refused the identity token" in r["summary"], r
        assert f"netdiag login {d}" in r["fix"] and "invalid_grant" in r["evidence"][0]["detail"], r
        # login asks offline, as Docker does; the token service's refresh token is kept, the password is not
        fresh = {**reg.env, "DOCKER_CONFIG": str(tmp_path / "fresh"), "NETDIAG_ROOT": str(tmp_path / "host-fresh")}
        p = reg.netdiag("login", "-u", USER, "--password-stdin", d, input=PASSWORD + "\n", env=fresh, timeout=30)
        assert p.returncode == 0, p.stderr
        kept = json.loads((tmp_path / "fresh/config.json").read_text())["auths"][d]
        assert kept["identitytoken"] and base64.b64decode(kept["auth"]).decode() == f"{USER}:", kept
        p = reg.netdiag("pull", f"{d}/oauth/bb:1", env=fresh, timeout=60)
        assert p.returncode == 0 and "Pull complete" in p.stdout, p.stdout + p.stderr
    finally:
        token_reg.stop()


def _on_a_terminal(w, env, *args) -> str:
    """netdiag ARGS with its stdout on a pseudo-terminal; what the terminal showed."""
    import os

    master, slave = os.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "netdiag", *args], env={**env, "TERM": "xterm", "COLUMNS": "120"},
                             stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=w.enter())
        os.close(slave)
        slave = None
        shown = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            shown += data
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()
        p.stderr.close()
        return shown.decode(errors="replace")
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)


def test_push_draws_a_bar_per_layer_on_a_terminal_and_lines_without_one(reg, tmp_path):
    d = reg.registry.domain
    name = f"{d}/lab/bars:1"
    _random_image(reg, tmp_path, name, 3_000_000)
    shown = _on_a_terminal(reg, reg.env, "push", name)
    assert "━" in shown and "3.0/3.0 MB" in shown and "\x1b[" in shown, shown  # rich's bar, sizes, terminal control
    assert "Pushed" in shown, shown
    reg.ok("tag", name, f"{d}/lab/bars2:1")
    plain = reg.ok("push", f"{d}/lab/bars2:1")  # a pipe: Docker's plain lines only
    assert "━" not in plain and "\x1b[" not in plain and "Mounted from lab/bars" in plain, plain
