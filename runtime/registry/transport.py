"""One HTTP session per registry, as Docker's client makes it.

TLS: the system CA store plus, as Docker reads them, every *.crt in CERTS_D/HOST[:PORT]/ (CAs) and
client.cert/client.key pairs there (CERTS_D is /etc/docker/certs.d; NETDIAG_CERTS_D moves it, for
labs and tests). Insecure registries (verification off, then plain HTTP if TLS fails) only when
configured (--insecure-registry, NETDIAG_INSECURE_REGISTRIES, or "insecure-registries" in
NETDIAG_ROOT/daemon.json, as in Docker's daemon.json) and, as Docker does, for 127.0.0.0/8 and ::1.

Auth: `GET /v2/` first (the ping) gives the WWW-Authenticate challenge; Basic sends the stored
credentials, Bearer fetches a token for the request's scopes from the challenge's realm (with the
credentials when there are any, anonymously otherwise) and keeps it per scope set. An identity
token in Docker's config (`identitytoken`, an OAuth2 refresh token) is POSTed to the realm instead,
with a refresh-token grant, as Docker does.
"""
from __future__ import annotations

import ipaddress
import os
import re
import ssl
import threading
from pathlib import Path

from .. import paths
from . import dockerconfig
from .errors import (CONNECT_FAILED, DENIED, DNS_FAILURE, NOT_FOUND, RATE_LIMITED, REGISTRY_ERROR, TLS_FAILED,
                     TLS_NAME_MISMATCH, TLS_UNKNOWN_AUTHORITY, UNAUTHORIZED, RegistryError)

DEFAULT_CERTS_D = "/etc/docker/certs.d"
_HUB_API = "registry-1.docker.io"
CLIENT_ID = "netdiag"  # OAuth2's client_id in token requests (Docker sends "docker")
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def load_httpx():
    """httpx, without its command-line client: `import httpx` also imports httpx._main (click,
    rich.progress, pygments' lexers: ~0.15 s, most of a no-op pull's time) only to offer
    `httpx.main`, which netdiag never calls. A stand-in module takes its place when nothing has
    imported the real one yet; every other part of httpx is the real one."""
    import sys

    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        import types

        stand_in = types.ModuleType("httpx._main")
        def main() -> None:  # httpx/__init__ re-exports it; netdiag never calls it
            raise RuntimeError("httpx's command-line client is not loaded in netdiag")

        stand_in.main = main
        sys.modules["httpx._main"] = stand_in
    import httpx as module

    return module


def certs_d() -> Path:
    return Path(os.environ.get("NETDIAG_CERTS_D") or DEFAULT_CERTS_D)


def configured_insecure(extra: list[str] = ()) -> list[str]:
    out = [x for x in os.environ.get("NETDIAG_INSECURE_REGISTRIES", "").split(",") if x.strip()]
    daemon = paths.root() / "daemon.json"
    if daemon.is_file():
        from .. import bounded

        data = bounded.load_json(daemon)
        listed = data.get("insecure-registries") if isinstance(data, dict) else None
        out += [x for x in listed or [] if isinstance(x, str)]
    return [x.strip() for x in [*out, *extra]]


def split_host(domain: str) -> tuple[str, int | None]:
    """'203.0.113.1:5000' -> ('203.0.113.1', 5000); '[fc00::1]:5000' -> ('fc00::1', 5000)."""
    if domain.startswith("["):
        host, _, rest = domain[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, _, port = domain.partition(":")
    return host, int(port) if port else None


def is_insecure(domain: str, configured: list[str]) -> bool:
    host, _ = split_host(domain)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        return True
    for entry in configured:
        if entry in (domain, host):
            return True
        if "/" in entry and ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def ssl_context(domain: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    d = certs_d() / domain
    if d.is_dir():
        for crt in sorted(d.glob("*.crt")):
            ctx.load_verify_locations(cafile=str(crt))
        for cert in sorted(d.glob("*.cert")):
            key = cert.with_suffix(".key")
            if key.exists():
                ctx.load_cert_chain(str(cert), str(key))
    return ctx


def parse_challenge(header: str) -> tuple[str, dict]:
    """'Bearer realm="https://a/token",service="reg",scope="repository:x:pull"' -> ('bearer', {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
              for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


def scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


class Session:
    """Requests to one registry (`domain` as a reference names it), authenticated for scopes."""

    def __init__(self, domain: str, *, insecure: list[str] = (), timeout: float = 30.0):
        httpx = load_httpx()

        self.domain = domain
        self._api = _HUB_API if domain == "docker.io" else domain
        self.host, port = split_host(self._api)  # where requests go (Docker Hub's API host for docker.io)
        self.port = port or 443
        self.insecure = is_insecure(domain, configured_insecure(list(insecure)))
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._client = httpx.Client(verify=self._verify(), timeout=self._timeout, follow_redirects=True)
        self.scheme = "https"
        self._challenge: tuple[str, dict] | None = None
        self._pinged = False
        self._tokens: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()
        self._login: tuple[str, str, str] | None | bool = False  # (user, password, identity token); False: not read yet
        self._offline = False  # ask the token service for a refresh token too (login does)
        self.refresh_token = ""

    def _verify(self):
        if self.insecure:
            return False
        try:
            return ssl_context(self.domain)
        except (ssl.SSLError, OSError) as e:
            raise RegistryError(f"Cannot use the certificates in {certs_d() / self.domain}", str(e),
                                "fix or remove the files there (ca.crt, client.cert, client.key)", cause=TLS_FAILED) from None

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stored(self) -> tuple[str, str, str] | None:
        if self._login is False:
            self._login = dockerconfig.login(self.domain)
        return self._login

    @property
    def credentials(self) -> tuple[str, str] | None:
        """User and password (None with an identity token: it stands for the password)."""
        found = self._stored()
        return (found[0], found[1]) if found and not found[2] else None

    @property
    def identity_token(self) -> str:
        found = self._stored()
        return found[2] if found else ""

    @property
    def user(self) -> str | None:
        """The login whose credentials are sent (None: anonymous)."""
        found = self._stored()
        return found[0] if found else None

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.scheme}://{self._api}{path}"

    # -- the ping: scheme and challenge -------------------------------------------------------------
    def ping(self) -> None:
        if self._pinged:
            return
        try:
            r = self._send("GET", "/v2/")
        except RegistryError as e:
            if not self.insecure or e.cause not in (TLS_FAILED, TLS_UNKNOWN_AUTHORITY, TLS_NAME_MISMATCH, CONNECT_FAILED):
                raise
            self.scheme = "http"  # Docker's fallback for an insecure registry
            r = self._send("GET", "/v2/")
        if r.status_code == 401 and r.headers.get("www-authenticate"):
            self._challenge = parse_challenge(r.headers["www-authenticate"])
        elif r.status_code not in (200, 401):
            raise_for(r, f"registry {self.domain}", user=self.user)
        self._pinged = True

    def check_login(self, user: str, password: str) -> str:
        """What `login` does: the ping, then an authenticated request (a token for no scope, asked
        for offline as Docker asks: a token service may add a refresh token). Returns that refresh
        token, Docker's identity token, or ""."""
        self._login = (user, password, "")
        self._offline = True
        self.ping()
        if self._challenge is None:
            return ""
        try:
            r = self._send("GET", "/v2/", headers=self._auth_headers(()))
        except RegistryError as e:
            if e.cause != UNAUTHORIZED:
                raise
            r = None  # the token server refused the credentials
        if r is None or r.status_code == 401:
            raise RegistryError(f"Login to {self.domain} failed", "the registry refused the user name or password (401 Unauthorized)",
                                "check them and try again", cause=UNAUTHORIZED, detail={"host": self.domain})
        if r.status_code != 200:
            raise_for(r, f"registry {self.domain}", user=self.user)
        return self.refresh_token

    # -- requests --------------------------------------------------------------------------------------
    def request(self, method: str, path: str, scopes: tuple[str, ...], *, stream: bool = False, what: str = "",
                ok: tuple[int, ...] = (200,), **kw):
        """One request with auth for `scopes`; a status outside `ok` raises RegistryError (`what` names
        the object). A streamed response must be closed by the caller."""
        self.ping()
        for attempt in (0, 1):
            headers = {**kw.pop("headers", {}), **self._auth_headers(scopes, fresh=attempt == 1)}
            r = self._send(method, path, headers=headers, stream=stream, **kw)
            kw["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if r.status_code == 401 and attempt == 0 and self._challenge and self._challenge[0] == "bearer":
                r.close()
                continue  # a token that expired: fetch one again, once
            break
        if r.status_code not in ok:
            try:
                if stream:
                    r.read()
                raise_for(r, what or path, scopes, self._challenge, user=self.user)
            finally:
                r.close()
        return r

    def _send(self, method: str, path: str, *, stream: bool = False, **kw):
        import httpx

        url = self.url(path)
        try:
            req = self._client.build_request(method, url, **kw)
            return self._client.send(req, stream=stream)
        except httpx.HTTPError as e:
            raise connection_error(e, self.domain, self.host, self.port) from None

    def _auth_headers(self, scopes: tuple[str, ...], fresh: bool = False) -> dict:
        if self._challenge is None:
            return {}
        kind, params = self._challenge
        if kind == "basic":
            if not self.credentials:
                return {}
            import base64

            return {"Authorization": "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()}
        if kind != "bearer":
            return {}
        key = tuple(sorted(scopes))
        with self._lock:
            if fresh or key not in self._tokens:
                self._tokens[key] = self._fetch_token(params, key)
            return {"Authorization": f"Bearer {self._tokens[key]}"}

    def _fetch_token(self, params: dict, scopes: tuple[str, ...]) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"Registry {self.domain} asks for a Bearer token but names no realm", "", "", cause=REGISTRY_ERROR)
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        if self._offline:
            query += [("offline_token", "true"), ("client_id", CLIENT_ID)]
        auth = self.credentials
        try:
            if self.identity_token:  # OAuth2's refresh-token grant, POSTed to the realm as Docker does
                form = {"grant_type": "refresh_token", "refresh_token": self.identity_token, "client_id": CLIENT_ID,
                        **({"service": params["service"]} if params.get("service") else {}),
                        **({"scope": " ".join(scopes)} if scopes else {})}
                r = self._client.post(realm, data=form)
            else:
                r = self._client.get(realm, params=query, auth=auth if auth else None)
        except Exception as e:  # the token server is another host: its own connection errors
            import httpx

            if not isinstance(e, httpx.HTTPError):
                raise
            host = httpx.URL(realm).host
            raise connection_error(e, host, host, httpx.URL(realm).port or 443) from None
        if r.status_code != 200:
            if self.identity_token and r.status_code in (400, 401):  # OAuth2's invalid_grant: revoked or expired
                raise RegistryError(f"The token service {realm} refused the identity token stored for {self.domain}",
                                    f"{r.status_code} for its refresh-token grant" + (f" ({_oauth_error(r)})" if _oauth_error(r) else ""),
                                    f"log in again: 'netdiag login {self.domain}'", cause=UNAUTHORIZED,
                                    detail={"status": r.status_code, "url": realm, "realm": realm, "scheme": "bearer",
                                            "registry": self.domain, "scopes": list(scopes)})
            raise_for(r, f"a token from {realm}", scopes, self._challenge)
        body = r.json()
        if isinstance(body.get("refresh_token"), str):
            self.refresh_token = body["refresh_token"]
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"The token server {realm} sent no token", "", "", cause=REGISTRY_ERROR)
        return token


def _ssl_cause(e: BaseException) -> BaseException | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            return e
        e = e.__cause__ or e.__context__
    return None


def connection_error(e: Exception, domain: str, host: str, port: int) -> RegistryError:
    """An httpx transport error as a RegistryError whose cause names the layer that failed."""
    import socket

    import httpx

    detail = {"host": host, "port": port, "registry": domain}
    tls = _ssl_cause(e)
    if isinstance(tls, ssl.SSLCertVerificationError):
        d = certs_d() / domain
        if tls.verify_code == 62 or "match" in (tls.verify_message or "").lower():
            return RegistryError(f"TLS to {domain} failed: x509: the certificate is not valid for {host}", tls.verify_message or "",
                                 "use the name the certificate is for, or have the registry's certificate reissued with this name "
                                 "in its subjectAltName", cause=TLS_NAME_MISMATCH, detail=detail)
        # the narrowest fix: this one registry's CA directory, as Docker reads it (the system store
        # would make the CA trusted for every server; an insecure registry turns verification off)
        detail.update(certs_d=str(certs_d()), ca_path=str(d / "ca.crt"))
        return RegistryError(f"TLS to {domain} failed: x509: certificate signed by unknown authority",
                             f"{tls.verify_message or tls}: neither the system CA store nor {d}/ holds the CA that signed "
                             f"the registry's certificate",
                             f"put the certificate of the CA that signed the registry's certificate in {d}/ca.crt "
                             f"(Docker's place for the CAs of {domain} alone)",
                             cause=TLS_UNKNOWN_AUTHORITY, detail=detail)
    if tls is not None:
        return RegistryError(f"TLS to {domain} failed", str(tls), "check that the registry speaks TLS on that port "
                             "(a plain-HTTP registry must be configured insecure)", cause=TLS_FAILED, detail=detail)
    cause = e.__cause__ or e.__context__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, socket.gaierror):
        return RegistryError(f"Cannot resolve the registry's name {host}", str(cause),
                             "check the name, and the resolver in /etc/resolv.conf", cause=DNS_FAILURE, detail=detail)
    if isinstance(e, httpx.TimeoutException):
        phase = "connecting" if isinstance(e, httpx.ConnectTimeout) else "waiting for data"
        detail["phase"] = "connect" if isinstance(e, httpx.ConnectTimeout) else "read"
        return RegistryError(f"Registry {domain} timed out ({phase})", f"no answer from {host}:{port}",
                             f"see where packets stop: 'netdiag trace host {host} --port {port}'", cause=CONNECT_FAILED, detail=detail)
    why = (cause.strerror if isinstance(cause, OSError) and cause.strerror else str(e)) or type(e).__name__
    return RegistryError(f"Cannot connect to registry {domain}", f"{host}:{port}: {why}",
                         f"see where packets stop: 'netdiag trace host {host} --port {port}'", cause=CONNECT_FAILED, detail=detail)


def _oauth_error(r) -> str:
    """RFC 6749's error body ({"error": "invalid_grant", "error_description": ...}) as one phrase."""
    try:
        body = r.json()
        return ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
    except (ValueError, AttributeError, TypeError):
        return ""


def _registry_message(r) -> str:
    try:
        errs = r.json().get("errors") or []
        return "; ".join(f"{x.get('code', '')}: {x.get('message', '')}".strip(": ") for x in errs if isinstance(x, dict))
    except (ValueError, AttributeError):
        return ""


def _denied_fix(registry: str, user: str | None, wanted: str) -> str:
    who = f"'{user}'" if user else "this login"
    return (f"ask the registry's owner to grant {who} {wanted or 'this access'}, or log in as a user who has it: "
            f"'netdiag login -u USER {registry}'")


def raise_for(r, what: str, scopes: tuple[str, ...] = (), challenge: tuple[str, dict] | None = None,
              user: str | None = None) -> None:
    """The registry's answer as a RegistryError naming what asked for what (`user`: the login whose
    credentials were sent, so a 401 for a scope is a refusal, not a request to log in)."""
    status = r.status_code
    said = _registry_message(r)
    host = r.request.url.host
    registry = host if not r.request.url.port else f"{host}:{r.request.url.port}"
    detail = {"status": status, "host": host, "url": str(r.request.url), "scopes": list(scopes), "registry": registry}
    if status == 401:
        header = r.headers.get("www-authenticate", "")
        kind, params = parse_challenge(header) if header else (challenge or ("", {}))
        detail.update(realm=params.get("realm", ""), scheme=kind)
        if user is not None and params.get("error") == "insufficient_scope":  # the login's token does not grant the scope
            wanted = params.get("scope") or ", ".join(scopes)
            raise RegistryError(f"Access to {what} was denied: the token lacks {wanted}",
                                f"the token service ({params.get('realm', '?')}) did not grant it to "
                                f"{repr(user) if user else 'this login'}" + (f" ({said})" if said else ""),
                                _denied_fix(registry, user, wanted), cause=DENIED, detail=detail)
        asked = f"{kind.capitalize()} realm {params.get('realm', '?')!r}" + (f" for {', '.join(scopes)}" if scopes else "")
        raise RegistryError(f"Access to {what} was refused: authentication required (401 Unauthorized)",
                            f"the registry asks for {asked}" + (f" ({said})" if said else ""),
                            f"log in: 'netdiag login {registry}'", cause=UNAUTHORIZED, detail=detail)
    if status == 403:
        wanted = ", ".join(scopes)
        raise RegistryError(f"Access to {what} was denied (403 Forbidden)",
                            f"the registry refuses {wanted or 'this'} to {repr(user) if user else 'an anonymous client'}"
                            + (f" ({said})" if said else ""),
                            _denied_fix(registry, user, wanted) if user else f"log in: 'netdiag login {registry}'",
                            cause=DENIED, detail=detail)
    if status == 404:
        raise RegistryError(f"Not found: {what}", said or "the registry has no such repository, tag or blob (404)",
                            "check the name and tag (the registry's tags: GET /v2/REPO/tags/list)", cause=NOT_FOUND, detail=detail)
    if status == 429:
        after = r.headers.get("retry-after", "")
        detail["retry_after"] = after
        wait = f"wait {after} s (the registry's Retry-After) and pull again" if after.isdigit() else "wait and try again"
        raise RegistryError(f"The registry limits requests: {what} was refused (429 Too Many Requests)",
                            said or (f"retry after {after} s" if after else "too many requests"),
                            wait + ("" if user else f", or log in ('netdiag login {registry}': registries give logins a higher "
                                                      f"limit)") + ", or pull through a mirror (a pull-through cache) near this host",
                            cause=RATE_LIMITED, detail=detail)
    raise RegistryError(f"The registry answered {status} for {what}", said or r.reason_phrase, "", cause=REGISTRY_ERROR, detail=detail)
