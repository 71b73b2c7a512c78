"""Docker's client configuration file, so a user logged in with `docker login` is logged in here
and the other way round: $DOCKER_CONFIG/config.json (default ~/.docker/config.json), its `auths`
(base64 "user:password" per registry) and credential helpers (`credsStore`, `credHelpers`: the
docker-credential-NAME program, spoken to on stdin/stdout as Docker does)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

from .. import bounded
from ..errors import InvalidArgument, NetdiagError

HUB_KEY = "https://index.docker.io/v1/"  # Docker keeps Docker Hub's credentials under this key


def config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _key(domain: str) -> str:
    return HUB_KEY if domain in ("docker.io", "index.docker.io", "registry-1.docker.io") else domain


def _read() -> dict:
    path = config_path()
    if not path.exists():
        return {}
    data = bounded.load_json(path, display=str(path))
    if not isinstance(data, dict):
        raise InvalidArgument(f"Cannot use {path}", "it is not a JSON object", "fix or remove the file")
    return data


def _write(data: dict) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds passwords
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent="\t")
        f.write("\n")
    os.replace(tmp, path)


def _helper(data: dict, key: str) -> str | None:
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict) and isinstance(helpers.get(key), str):
        return helpers[key]
    store = data.get("credsStore")
    return store if isinstance(store, str) and store else None


def _run_helper(name: str, action: str, payload: str) -> str:
    program = f"docker-credential-{name}"
    try:
        p = subprocess.run([program, action], input=payload, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetdiagError(f"Credential helper {program} is not installed",
                           f"{config_path()} names it (credsStore or credHelpers)",
                           f"install it, or remove it from {config_path()}") from None
    if p.returncode != 0:
        out = (p.stdout + p.stderr).strip()
        if action == "get" and "credentials not found" in out.lower():
            return ""
        raise NetdiagError(f"Credential helper {program} {action} failed", out[:200], "check the helper's own setup")
    return p.stdout


IDENTITY_TOKEN_USER = "<token>"  # a credential helper's Username when its Secret is an identity token


def login(domain: str) -> tuple[str, str, str] | None:
    """(user, password, identity token) stored for a registry, or None. An identity token (Docker's
    `identitytoken`, an OAuth2 refresh token a token service gave at login) stands for the password:
    Docker stores it instead, and the password is then empty."""
    data = _read()
    key = _key(domain)
    helper = _helper(data, key)
    if helper:
        out = _run_helper(helper, "get", key)
        if out:
            got = json.loads(out)
            user, secret = got.get("Username", ""), got.get("Secret", "")
            return ("", "", secret) if user == IDENTITY_TOKEN_USER else (user, secret, "")
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
    for k in (key, f"https://{key}", f"http://{key}"):
        entry = auths.get(k)
        if not isinstance(entry, dict):
            continue
        token = entry.get("identitytoken") if isinstance(entry.get("identitytoken"), str) else ""
        user = password = ""
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument(f"Cannot use the credentials for {k} in {config_path()}",
                                      "its 'auth' is not base64 of user:password", f"run 'netdiag login {domain}' again") from None
        if user or token:
            return user, password, token
    return None


def credentials(domain: str) -> tuple[str, str] | None:
    """(user, password) stored for a registry, or None (see login() for identity tokens)."""
    found = login(domain)
    return (found[0], found[1]) if found and (found[0] or found[1]) else None


def store(domain: str, user: str, password: str, identity_token: str = "") -> None:
    """Keep a login as Docker does: an identity token, when the token service gave one, instead of
    the password ("user:" and `identitytoken`; a helper gets the "<token>" user and the token)."""
    data = _read()
    key = _key(domain)
    helper = _helper(data, key)
    if helper:
        secret = {"Username": IDENTITY_TOKEN_USER, "Secret": identity_token} if identity_token else {"Username": user, "Secret": password}
        _run_helper(helper, "store", json.dumps({"ServerURL": key, **secret}))
        data.setdefault("auths", {})[key] = {}  # what Docker writes: the registry is known, the secret is in the helper
    elif identity_token:
        data.setdefault("auths", {})[key] = {"auth": base64.b64encode(f"{user}:".encode()).decode(), "identitytoken": identity_token}
    else:
        data.setdefault("auths", {})[key] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    _write(data)


def erase(domain: str) -> bool:
    """Forget a registry's credentials; False when none were stored."""
    data = _read()
    key = _key(domain)
    helper = _helper(data, key)
    if helper:
        _run_helper(helper, "erase", key)
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
    found = [k for k in (key, f"https://{key}", f"http://{key}") if k in auths]
    for k in found:
        del auths[k]
    if found:
        _write(data)
    return bool(found or helper)
