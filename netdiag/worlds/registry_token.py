"""A token service for a lab registry (Docker's token authentication, as Docker Hub's auth server
speaks it), so the Bearer flow is tested against the real registry: the registry answers 401 with
`Bearer realm=THIS,service=...,scope=...`; the client asks here with Basic credentials for those
scopes and gets a JWT (ES256, its certificate in the x5c header, which the registry checks against
its rootcertbundle). Who gets what is the Policy below. Docker's OAuth2 flow is served too: a POST
with a refresh-token grant (Docker's identity token) or a password grant (access_type=offline gives
a refresh token), as Docker Hub's auth server answers it.

    python3 -m netdiag.worlds.registry_token --listen IP:PORT --key K --cert C --users USERS.json
        --issuer ISSUER --service SERVICE [--public PREFIX] [--refresh-token TOKEN=USER]
        [--tls-cert C --tls-key K]

Signing goes through `openssl dgst` (no crypto library needed): its DER ECDSA signature is turned
into JWS's raw r||s.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _der_to_raw(sig: bytes, size: int = 32) -> bytes:
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } -> r||s, each `size` bytes."""
    def integer(at: int) -> tuple[int, int]:
        assert sig[at] == 0x02
        n = sig[at + 1]
        return int.from_bytes(sig[at + 2:at + 2 + n], "big"), at + 2 + n

    at = 2 if sig[1] < 0x80 else 2 + (sig[1] & 0x7F)
    r, at = integer(at)
    s, _ = integer(at)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _cert_der(cert_pem: str) -> bytes:
    body = "".join(line for line in open(cert_pem).read().splitlines() if line and not line.startswith("-----"))
    return base64.b64decode(body)


def make_token(key: str, cert: str, issuer: str, service: str, subject: str, access: list[dict], ttl: int = 300) -> str:
    header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(_cert_der(cert)).decode()]}
    now = int(time.time())
    claims = {"iss": issuer, "sub": subject, "aud": service, "exp": now + ttl, "nbf": now - 10, "iat": now,
              "jti": os.urandom(8).hex(), "access": access}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                         capture_output=True, check=True, timeout=30).stdout
    return f"{signing_input}.{_b64(_der_to_raw(der))}"


class Policy:
    """Who gets what: known users (name -> password) the actions they ask for; a --read-only user
    pull only; a user with --repos prefixes nothing outside them; anyone, logged in or not, pull on
    --public prefixes (Docker Hub's library/); anyone else a token with no access. Refresh tokens
    (Docker's identity tokens) stand for their user: given at start, or issued to an offline login."""

    def __init__(self, users: dict, read_only=(), repos: dict | None = None, public=(), refresh: dict | None = None):
        self.users, self.read_only, self.repos, self.public = users, tuple(read_only), repos or {}, tuple(public)
        self.refresh = dict(refresh or {})

    def grants(self, user: str, scopes: list[str]) -> list[dict]:
        out = []
        for s in scopes:
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            prefixes = self.repos.get(user, ())
            mine = bool(user) and (not prefixes or any(name.startswith(p) for p in prefixes))
            public = any(name.startswith(p) for p in self.public)
            granted = [a for a in actions.split(",")
                       if (mine and (a == "pull" or user not in self.read_only)) or (public and a == "pull")]
            out.append({"type": kind, "name": name, "actions": granted})
        return out

    def issue_refresh(self, user: str) -> str:
        token = os.urandom(16).hex()
        self.refresh[token] = user
        return token


def serve(listen: str, key: str, cert: str, issuer: str, service: str, policy: Policy, tls: tuple[str, str] | None = None) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name; Docker's token GET with Basic credentials
            q = parse_qs(urlparse(self.path).query)
            user = ""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                u, _, p = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")
                if policy.users.get(u) != p:
                    return self._answer(401, {"details": "wrong user name or password"})
                user = u
            offline = user and q.get("offline_token", [""])[0] == "true"
            self._token(user, q.get("service", [service])[0], q.get("scope", []), offline)

        def do_POST(self):  # noqa: N802 - OAuth2 (RFC 6749): a refresh-token or password grant, form-encoded
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(errors="replace")).items()}
            grant = form.get("grant_type", "")
            if grant == "refresh_token":
                user = policy.refresh.get(form.get("refresh_token", ""))
                if user is None:
                    return self._answer(400, {"error": "invalid_grant", "error_description": "unknown refresh token"})
            elif grant == "password":
                user = form.get("username", "")
                if policy.users.get(user) != form.get("password"):
                    return self._answer(400, {"error": "invalid_grant", "error_description": "wrong user name or password"})
            else:
                return self._answer(400, {"error": "unsupported_grant_type"})
            print(f"{grant} grant for {user}", flush=True)
            self._token(user, form.get("service", service), form.get("scope", "").split(),
                        grant == "password" and form.get("access_type") == "offline")

        def _token(self, user: str, aud: str, scopes: list[str], offline: bool) -> None:
            token = make_token(key, cert, issuer, aud, user, policy.grants(user, scopes))
            body = {"token": token, "access_token": token, "expires_in": 300}
            if offline:
                body["refresh_token"] = policy.issue_refresh(user)
            self._answer(200, body)

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    host, _, port = listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    if tls:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening on {listen}", flush=True)  # LabRegistry waits for this line
    server.serve_forever()


def _pairs(entries: list[str]) -> list[tuple[str, str]]:
    return [tuple(e.partition("=")[::2]) for e in entries]


def main() -> None:
    a = argparse.ArgumentParser()
    for opt in ("--listen", "--key", "--cert", "--users", "--issuer", "--service"):
        a.add_argument(opt, required=True)
    a.add_argument("--read-only", action="append", default=[], help="a user granted pull only (repeatable)")
    a.add_argument("--repos", action="append", default=[], metavar="USER=PREFIX",
                   help="a user granted only repositories under PREFIX (repeatable)")
    a.add_argument("--public", action="append", default=[], metavar="PREFIX", help="repositories anyone may pull")
    a.add_argument("--refresh-token", action="append", default=[], metavar="TOKEN=USER", help="an identity token for USER")
    a.add_argument("--tls-cert", help="serve HTTPS with this certificate (and --tls-key)")
    a.add_argument("--tls-key")
    args = a.parse_args()
    with open(args.users) as f:
        users = json.load(f)
    repos: dict[str, tuple] = {}
    for user, prefix in _pairs(args.repos):
        repos[user] = (*repos.get(user, ()), prefix)
    policy = Policy(users, args.read_only, repos, args.public, dict(_pairs(args.refresh_token)))
    serve(args.listen, args.key, args.cert, args.issuer, args.service, policy,
          (args.tls_cert, args.tls_key) if args.tls_cert else None)


if __name__ == "__main__":
    main()
