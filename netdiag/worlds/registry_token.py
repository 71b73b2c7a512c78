"""A token service for a lab registry (Docker's token authentication, as Docker Hub's auth server
speaks it), so the Bearer flow is tested against the real registry: the registry answers 401 with
`Bearer realm=THIS,service=...,scope=...`; the client asks here with Basic credentials for those
scopes and gets a JWT (ES256, its certificate in the x5c header, which the registry checks against
its rootcertbundle). Known users get the actions they ask for (a --read-only user only pull);
anyone else a token with no access.

    python3 -m netdiag.worlds.registry_token --listen IP:PORT --key K --cert C --users USERS.json
        --issuer ISSUER --service SERVICE

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


def _grants(scopes: list[str], allowed: bool, read_only: bool = False, prefixes: tuple = ()) -> list[dict]:
    """The access a token carries: what was asked, for a known user; pull only for a read-only one;
    nothing outside a user's repository prefixes when it has some (a team's own repositories)."""
    out = []
    for s in scopes:
        kind, _, rest = s.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name:
            mine = not prefixes or any(name.startswith(p) for p in prefixes)
            granted = [a for a in actions.split(",") if allowed and mine and (a == "pull" or not read_only)]
            out.append({"type": kind, "name": name, "actions": granted})
    return out


def serve(listen: str, key: str, cert: str, users: dict, issuer: str, service: str, read_only: tuple = (),
          repos: dict | None = None) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            q = parse_qs(urlparse(self.path).query)
            user = ""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                u, _, p = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")
                if users.get(u) != p:
                    return self._answer(401, {"details": "wrong user name or password"})
                user = u
            token = make_token(key, cert, issuer, q.get("service", [service])[0], user, _grants(q.get("scope", []), bool(user), user in read_only,
                                                                                                   (repos or {}).get(user, ())))
            self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

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
    print(f"listening on {listen}", flush=True)  # LabRegistry waits for this line
    server.serve_forever()


def main() -> None:
    a = argparse.ArgumentParser()
    for opt in ("--listen", "--key", "--cert", "--users", "--issuer", "--service"):
        a.add_argument(opt, required=True)
    a.add_argument("--read-only", action="append", default=[], help="a user granted pull only (repeatable)")
    a.add_argument("--repos", action="append", default=[], metavar="USER=PREFIX",
                   help="a user granted only repositories under PREFIX (repeatable)")
    args = a.parse_args()
    with open(args.users) as f:
        users = json.load(f)
    repos: dict[str, tuple] = {}
    for entry in args.repos:
        user, _, prefix = entry.partition("=")
        repos[user] = (*repos.get(user, ()), prefix)
    serve(args.listen, args.key, args.cert, users, args.issuer, args.service, tuple(args.read_only), repos)


if __name__ == "__main__":
    main()
