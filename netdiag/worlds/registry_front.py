"""A front for a lab registry: a real HAProxy (Debian's `haproxy`) terminating TLS on its own port
and passing requests to the registry, as the fronts of Docker Hub and of many private registries
do. Each client address may send `requests` requests per `period` seconds; past that HAProxy
answers 429 with a Retry-After header (a stick-table counts them). Repositories under a
`forbidden` prefix are answered 403 with the registry protocol's DENIED error, as registries with
their own access policy (Harbor, GHCR) answer a login that lacks access:

    front = RegistryFront(lab, workdir, reg, port=5443, requests=3, forbidden=("secret/",)).start()
    front.domain        # "203.0.113.1:5443": what image names say to go through the front
    front.trust(certs_d)
    front.stop()

It runs in the registry's namespace, in its own session with the world's environment (the
world's leak check sees it if stop() is not called).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import servers
from .registry import make_certificates

HAPROXY = "/usr/sbin/haproxy"


class RegistryFront:
    def __init__(self, world, workdir: Path, registry, *, port: int = 5443, requests: int = 3, period: int = 60,
                 retry_after: int = 60, forbidden: tuple[str, ...] = ()):
        self.world, self.workdir, self.registry = world, Path(workdir), registry
        self.address, self.port = registry.address, port
        self.requests, self.period, self.retry_after = requests, period, retry_after
        self.forbidden = tuple(forbidden)
        self.ca_cert: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def domain(self) -> str:
        return f"{self.address}:{self.port}"

    def _config(self) -> Path:
        self.ca_cert, cert, key = make_certificates(self.workdir / "tls", self.address)
        pem = self.workdir / "front.pem"  # HAProxy wants the certificate and its key in one file
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        backend = self.registry.domain
        tls = f" ssl verify required ca-file {self.registry.ca_cert}" if self.registry.tls else ""
        denied = '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
        policy = "".join(f"    http-request deny deny_status 403 content-type application/json string '{denied}' "
                         f"if {{ path_beg /v2/{prefix} }}\n" for prefix in self.forbidden)
        text = f"""global
    stats socket {self.workdir / 'admin.sock'} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend registry
    bind {self.domain} ssl crt {pem}
    stick-table type ip size 1k expire {self.period}s store http_req_rate({self.period}s)
    http-request track-sc0 src
{policy}    http-request deny deny_status 429 hdr Retry-After {self.retry_after} if {{ sc_http_req_rate(0) gt {self.requests} }}
    default_backend registry
backend registry
    server registry {backend}{tls}
"""
        path = self.workdir / "haproxy.cfg"
        path.write_text(text)
        return path

    def start(self, timeout: float = 10.0) -> "RegistryFront":
        if not os.path.exists(HAPROXY):
            raise RuntimeError(f"{HAPROXY} is missing: install Debian's haproxy package (scripts/setup does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._config()
        log, sock = self.workdir / "haproxy.log", self.workdir / "admin.sock"
        self.proc = servers.spawn(self.world, self.registry.where, [HAPROXY, "-db", "-f", str(config)], log)
        try:  # the stats socket is bound with the listeners, after the configuration was accepted
            servers.wait_ready(self.proc, log, sock.exists, timeout)
        except RuntimeError:
            self.proc = None
            raise
        return self

    def trust(self, certs_d: Path) -> Path:
        d = Path(certs_d) / self.domain
        d.mkdir(parents=True, exist_ok=True)
        (d / "ca.crt").write_bytes(self.ca_cert.read_bytes())
        return d / "ca.crt"

    def stop(self) -> None:
        servers.kill(self.proc)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
