"""Registry actions (Docker's pull, push, tag, login, logout)."""
from __future__ import annotations

from ..registry.errors import RegistryError  # noqa: F401 - what the CLI catches to explain a failed pull


def pull(ref: str, *, insecure: list[str] = (), out=print, timeout: float = 30.0, progress=None, platform: str = ""):
    """`out(line)` gets Docker's status lines; `progress(layer, bytes, total)` each layer's download."""
    from ..registry.pull import pull as pull_image

    return pull_image(ref, insecure=list(insecure), out=out, timeout=timeout, progress=progress, platform=platform)


def repo_digests(image_id: str) -> list[str]:
    from ..images import repodigests

    return repodigests.of(image_id)


def push(ref: str, *, insecure: list[str] = (), out=print, progress=None) -> str:
    from ..registry.push import push as push_image

    return push_image(ref, insecure=list(insecure), out=out, progress=progress)


def familiar(ref: str) -> str:
    """Docker's short spelling of a reference: docker.io/library/busybox -> busybox:latest."""
    from ..images.refs import parse

    return parse(ref).familiar()


def tag(source: str, target: str):
    """Point TARGET (NAME[:TAG]) at the image SOURCE names (a name, NAME@DIGEST or an id)."""
    from ..images import store
    from ..images.refs import normalize

    img = store.get(source)
    return store.tag_manifest(img.manifest_digest, normalize(target))


def registry_domain(server: str | None) -> str:
    """`login`'s argument as Docker takes it (a host[:port], with or without https://; none: Docker Hub)."""
    from ..errors import InvalidArgument
    from ..images.refs import DEFAULT_DOMAIN, parse

    if not server:
        return DEFAULT_DOMAIN
    host = server.split("://", 1)[-1].split("/", 1)[0]
    if host in ("index.docker.io", "registry-1.docker.io", DEFAULT_DOMAIN):
        return DEFAULT_DOMAIN
    try:
        parsed = parse(f"{host}/x", default_tag=False)
    except InvalidArgument:
        parsed = None
    if parsed is None or parsed.domain != host:
        raise InvalidArgument(f"Invalid registry {server!r}", "a registry is HOST[:PORT]", "e.g. 'registry.example:5000'")
    return host


def login(server: str | None, user: str, password: str, *, insecure: list[str] = ()) -> str:
    """Check the credentials against the registry, then store them in Docker's config file."""
    from ..errors import InvalidArgument
    from ..registry import dockerconfig
    from ..registry.transport import Session

    if not user or not password:
        raise InvalidArgument("A user name and a password are required", "", "give -u USER and --password-stdin")
    domain = registry_domain(server)
    with Session(domain, insecure=list(insecure)) as s:
        identity_token = s.check_login(user, password)
    dockerconfig.store(domain, user, password, identity_token)
    return f"Login Succeeded (credentials stored in {dockerconfig.config_path()})"


def logout(server: str | None) -> str:
    from ..registry import dockerconfig

    domain = registry_domain(server)
    if dockerconfig.erase(domain):
        return f"Removing login credentials for {domain}"
    return f"Not logged in to {domain}"
