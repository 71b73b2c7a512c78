"""A real registry in a world: Debian's `docker-registry` (the CNCF distribution registry 2.8)
serving from one of the world's namespaces (a lab's "outside", the internet it plays), with its
storage, TLS certificate and htpasswd file in a work directory:

    reg = LabRegistry(lab, workdir, users={"alice": "s3cret"}).start()
    reg.domain          # "203.0.113.1:5000": what image names say
    reg.ca_cert         # the CA that signed its certificate (made here with openssl)
    reg.trust(certs_d)  # certs_d/DOMAIN/ca.crt, as Docker reads it
    reg.stop()

The certificate is for the registry's address (subjectAltName IP), or for `cert_name` when a test
wants a name mismatch. `users` are checked by htpasswd (Basic auth; bcrypt entries, the only kind
distribution accepts: the `bcrypt` module is imported only then), or with auth="token" by a token
service on port+1 (registry_token.py: Bearer tokens, as Docker Hub does it; `token` moves it,
e.g. to Docker Hub's https://auth.docker.io, and sets its policy: public prefixes, identity tokens). The process runs in its own session with
the world's environment, so the world's leak check sees it if stop() is not called.
`behind_router` gives a registry a namespace a hop beyond the outside (the outside routes to it);
`random_rootfs` makes an image whose one layer only the registry will have.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from . import servers
from .host import OUTSIDE_IP

REGISTRY = "/usr/bin/docker-registry"


def _openssl(*args: str, cwd: Path) -> None:
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {p.stderr.strip()[-400:]}")


def make_certificates(d: Path, ip: str, name: str | None = None) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for `ip` (or DNS `name`); returns (ca, cert, key)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=netdiag lab registry CA", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={name or ip}", cwd=d)
    (d / "san.ext").write_text(f"subjectAltName={'DNS:' + name if name else 'IP:' + ip}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d / "ca.crt", d / "server.crt", d / "server.key"


def random_rootfs(size: int) -> bytes:
    """A root filesystem tarball of one file of `size` random bytes: an image (`netdiag import`)
    whose layer nothing else shares and nothing compresses, so a pull must fetch it whole."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = os.urandom(size)
        info = tarfile.TarInfo("blob.bin")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def behind_router(world, name: str, router_ip: str, ip: str, prefix: int) -> str:
    """A namespace NAME behind the world's outside, which then routes like a router: a veth r0
    (router_ip) there, eth0 (ip, default route via r0) here, forwarding on in the outside. Where a
    registry a hop beyond the host's gateway runs (an MTU step between them hides there)."""
    import ipaddress

    from runtime.kernel import addr, link, ns, route, sysctl

    from .host import fresh_sysctls

    path = ns.create(name)
    fresh_sysctls(path)
    with ns.netns(world.namespace("outside")):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            link.create_veth("r0", "eth0", fd)
        finally:
            os.close(fd)
        r0 = link.index("r0")
        addr.add(r0, ipaddress.IPv4Address(router_ip), prefix)
        link.set_up(r0)
        sysctl.write("net/ipv4/ip_forward", "1")
    with ns.netns(path):
        eth0 = link.index("eth0")
        addr.add(eth0, ipaddress.IPv4Address(ip), prefix)
        link.set_up(eth0)
        link.set_up(link.index("lo"))
        route.add_default(ipaddress.IPv4Address(router_ip), eth0)
    return name


def remove_behind(name: str) -> None:
    """The namespace behind_router made (its veth goes with it); fine when it is gone."""
    from runtime.kernel import ns

    ns.remove(name)


class LabRegistry:
    def __init__(self, world, workdir: Path, *, where: str = "outside", address: str = OUTSIDE_IP, port: int = 5000,
                 tls: bool = True, users: dict[str, str] | None = None, cert_name: str | None = None, auth: str = "htpasswd",
                 read_only: tuple[str, ...] = (), repos: dict[str, str] | None = None, token: dict | None = None):
        self.world, self.workdir, self.where = world, Path(workdir), where
        self.address, self.port, self.tls, self.users, self.cert_name = address, port, tls, users or {}, cert_name
        self.auth, self.read_only = auth, tuple(read_only)  # read_only: users the token service grants pull only
        self.repos = dict(repos or {})  # user -> the repository prefix the token service limits it to
        # the token service's place and policy beyond the defaults: address, port, name (then it serves
        # HTTPS with a certificate for that name), service, public (prefixes), refresh (token -> user)
        self.token = dict(token or {})
        self.token_ca: Path | None = None
        self.ca_cert: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.token_proc: subprocess.Popen | None = None

    @property
    def domain(self) -> str:
        return f"{self.address}:{self.port}"

    def _config(self) -> Path:
        lines = ["version: 0.1", "log:", "  level: info", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.workdir / 'storage'}", "  delete:", "    enabled: true",
                 "  maintenance:", "    uploadpurging:", "      enabled: false",
                 "http:", f"  addr: {self.domain}", f"  secret: {os.urandom(16).hex()}"]
        if self.tls:
            self.ca_cert, cert, key = make_certificates(self.workdir / "tls", self.address, self.cert_name)
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if self.users and self.auth == "token":
            lines += self._token_service()
        elif self.users:
            import bcrypt

            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                                        for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: netdiag-lab-registry", f"    path: {htpasswd}"]
        path = self.workdir / "config.yml"
        path.write_text("\n".join(lines) + "\n")
        return path

    @property
    def token_realm(self) -> str:
        t = self.token
        if t.get("name"):
            return f"https://{t['name']}" + (f":{t['port']}" if t.get("port", 443) != 443 else "") + "/token"
        return f"http://{t.get('address', self.address)}:{t.get('port', self.port + 1)}/token"

    def _token_service(self) -> list[str]:
        import json
        import sys

        d, t = self.workdir / "token", self.token
        d.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "token.key",
                 "-out", "token.crt", "-days", "2", "-subj", "/CN=netdiag lab token signer", cwd=d)
        (d / "users.json").write_text(json.dumps(self.users))
        service = t.get("service", "netdiag-lab-registry")
        argv = [sys.executable, "-m", "netdiag.worlds.registry_token",
                "--listen", f"{t.get('address', self.address)}:{t.get('port', self.port + 1)}",
                "--key", str(d / "token.key"), "--cert", str(d / "token.crt"), "--users", str(d / "users.json"),
                "--issuer", "netdiag-lab-token", "--service", service,
                *(x for u in self.read_only for x in ("--read-only", u)),
                *(x for u, prefix in self.repos.items() for x in ("--repos", f"{u}={prefix}")),
                *(x for prefix in t.get("public", ()) for x in ("--public", prefix)),
                *(x for tok, u in t.get("refresh", {}).items() for x in ("--refresh-token", f"{tok}={u}"))]
        if t.get("name"):  # HTTPS, its own CA (token_ca), as a public auth server has
            self.token_ca, cert, key = make_certificates(d / "tls", t.get("address", self.address), t["name"])
            argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
        self.token_proc = self._spawn(argv, d / "token.log", 10.0)
        return ["auth:", "  token:", f"    realm: {self.token_realm}", f"    service: {service}",
                "    issuer: netdiag-lab-token", f"    rootcertbundle: {d / 'token.crt'}"]

    def token_log(self) -> str:
        try:
            return (self.workdir / "token" / "token.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _spawn(self, argv: list[str], logfile: Path, timeout: float) -> subprocess.Popen:
        proc = servers.spawn(self.world, self.where, argv, logfile)
        try:
            servers.wait_ready(proc, logfile, servers.logged(logfile, "listening on"), timeout)
        except RuntimeError:
            self.stop()
            raise
        return proc

    def start(self, timeout: float = 15.0) -> "LabRegistry":
        if not os.path.exists(REGISTRY):
            raise RuntimeError(f"{REGISTRY} is missing: install Debian's docker-registry package (scripts/setup does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            config = self._config()
        except BaseException:
            self.stop()
            raise
        self.proc = self._spawn([REGISTRY, "serve", str(config)], self.workdir / "registry.log", timeout)
        return self

    def log(self) -> str:
        try:
            return (self.workdir / "registry.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def trust(self, certs_d: Path) -> Path:
        """Put the CA where Docker (and netdiag) look for this registry's: CERTS_D/DOMAIN/ca.crt."""
        d = Path(certs_d) / self.domain
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.ca_cert, d / "ca.crt")
        return d / "ca.crt"

    def stop(self) -> None:
        for proc in (self.proc, self.token_proc):
            servers.kill(proc)
        self.proc = self.token_proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
