"""Image references as Docker spells them (github.com/distribution/reference: its grammar and its
normalisation), validated before they touch the store or a registry.

    busybox                      -> docker.io/library/busybox:latest   (familiar: busybox:latest)
    lab/web:1.0                  -> docker.io/lab/web:1.0
    127.0.0.1:5000/web@sha256:…  -> that registry, repository "web", a digest

The store keeps Docker's familiar form ("busybox:latest", "127.0.0.1:5000/web:1"); the registry
client uses the domain and path. Pure: shared by the store, the builder and the registry client.
"""
from __future__ import annotations

import re
from collections import namedtuple

from ..errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL = "library/"
_PATH_MAX = 255

# distribution/reference regexp.go, piece by piece (Go's \w is ASCII: re.ASCII)
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_COMPONENT = _ALNUM + r"(?:" + _SEP + _ALNUM + r")*"
_REMOTE = _COMPONENT + r"(?:/" + _COMPONENT + r")*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = r"(?:" + _DOMAIN_PART + r"(?:\." + _DOMAIN_PART + r")*|\[(?:[a-fA-F0-9:]+)\])"
_DOMAIN = _HOST + r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(r"^((?:" + _DOMAIN + r"/)?" + _REMOTE + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?$", re.ASCII)
_NAME = re.compile(r"^(?:(" + _DOMAIN + r")/)?(" + _REMOTE + r")$", re.ASCII)
_IDENTIFIER = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}  # go-digest's registered algorithms


class Reference(namedtuple("Reference", "domain path tag digest", defaults=("", ""))):
    """domain: "docker.io", "127.0.0.1:5000", "[fc00::1]:5000", "localhost"; path: the repository in
    that registry ("library/busybox"); tag and digest "" when not given. A named tuple, immutable
    and hashable as the frozen dataclass it was, without importing dataclasses on every `run`."""

    __slots__ = ()

    @property
    def name(self) -> str:
        """The full repository name: docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """Docker's short form: busybox, lab/web, 127.0.0.1:5000/web."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        rest = self.path.removeprefix(_OFFICIAL)
        return rest if self.path.startswith(_OFFICIAL) and "/" not in rest else self.path

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def familiar(self) -> str:
        return self.familiar_name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_tag(self, tag: str) -> "Reference":
        return Reference(self.domain, self.path, tag, "")


def _invalid(ref: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"Invalid reference format {ref!r}", why,
                           "use a name like 'web', 'lab/web:1.0', 'registry.example:5000/web:1' or 'web@sha256:<64 hex>'")


def _split_domain(s: str) -> tuple[str, str]:
    """distribution/reference's splitDockerDomain: the first part is a registry when it is
    'localhost', has a '.' or ':', or has upper-case letters; else the name is on Docker Hub."""
    first, slash, rest = s.partition("/")
    if not slash:
        domain, remote = DEFAULT_DOMAIN, s
    elif first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, remote = first, rest
    else:
        domain, remote = DEFAULT_DOMAIN, s
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = _OFFICIAL + remote
    return domain, remote


def parse(s: str, *, default_tag: bool = True) -> Reference:
    """Docker's ParseNormalizedNamed (plus the tag 'latest' when neither tag nor digest is given,
    with default_tag). A digest must be a registered algorithm's ('sha256:<64 hex>')."""
    if not s:
        raise _invalid(s, "the reference is empty")
    if _IDENTIFIER.match(s):
        raise _invalid(s, "a 64-digit hexadecimal string is an image id, not a repository name (give 'sha256:' before it)")
    domain, remainder = _split_domain(s)
    remote = remainder.split(":", 1)[0].split("@", 1)[0]
    if remote.lower() != remote:
        raise _invalid(s, f"repository name {remote!r} must be lowercase")
    m = _REFERENCE.match(f"{domain}/{remainder}")
    if not m:
        raise _invalid(s, "names are lower-case letters, digits and separators (. _ -) with '/' between parts, "
                          "optionally after a registry host[:port]/; a tag is up to 128 letters, digits, '_', '.' or '-'")
    nm = _NAME.match(m.group(1))
    path = nm.group(2)
    if len(path) > _PATH_MAX:
        raise _invalid(s, f"the repository name is longer than {_PATH_MAX} characters")
    tag, digest = m.group(2) or "", m.group(3) or ""
    if digest:
        algo, _, hexpart = digest.partition(":")
        if _DIGEST_HEX.get(algo) != len(hexpart) or hexpart.lower() != hexpart:
            raise _invalid(s, f"digest {digest[:24]}… is not <sha256|sha384|sha512>:<lower-case hex of that length>")
    if default_tag and not tag and not digest:
        tag = "latest"
    return Reference(nm.group(1), path, tag, digest)


def parse_ref(ref: str) -> tuple[str, str]:
    """'busybox' -> ('busybox', 'latest'); 'lab/web:1.0' -> ('lab/web', '1.0'); a digest is refused
    here: the store's names are tags (a digest is looked up among pulled images' RepoDigests)."""
    r = parse(ref)
    if r.digest:
        raise InvalidArgument(f"Reference {ref!r} names a digest, not a tag",
                              "images are tagged by NAME:TAG", "give a tag, e.g. 'web:1.0'")
    return r.familiar_name, r.tag


def normalize(ref: str) -> str:
    name, tag = parse_ref(ref)
    return f"{name}:{tag}"
