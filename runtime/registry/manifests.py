"""Manifest documents of the distribution protocol, checked before they are trusted: OCI image
manifest and index, Docker schema 2 manifest and manifest list. Pure."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .. import bounded
from ..images import oci
from .errors import BAD_CONTENT, NOT_FOUND, RegistryError

OCI_MANIFEST = oci.MANIFEST_TYPE
OCI_INDEX = oci.INDEX_TYPE
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
INDEXES = (OCI_INDEX, DOCKER_LIST)
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json", "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)

# layer media type -> how its bytes are stored: "" plain tar, "gzip"
LAYER_ENCODING = {
    oci.LAYER_TYPE: "", "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
MAX_MANIFEST = 4 << 20  # distribution's own limit for a manifest PUT


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict | None = None
    urls: tuple = ()


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor
    layers: list[Descriptor]


def _bad(what: str, why: str) -> RegistryError:
    return RegistryError(f"The registry sent a malformed {what}", why, "report it to the registry's owner", cause=BAD_CONTENT)


def _descriptor(obj, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise _bad(what, "a descriptor is not an object")
    if not oci.is_digest(obj.get("digest")):
        raise _bad(what, f"digest {bounded.excerpt(obj.get('digest'))} is not sha256:<64 hex>")
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= oci.MAX_LAYER_SIZE:
        raise _bad(what, f"size {bounded.excerpt(size)} is not a byte count")
    platform = obj.get("platform")
    return Descriptor(str(obj.get("mediaType", "")), obj["digest"], size,
                      platform if isinstance(platform, dict) else None, tuple(obj.get("urls") or ()))


def media_type(body: bytes, header: str, what: str) -> tuple[str, dict]:
    """The document's media type (its own mediaType field first, the Content-Type header else)."""
    try:
        doc = bounded.loads_json(body, what)
    except bounded.Refused as e:
        raise _bad(what, e.problem) from None
    if not isinstance(doc, dict):
        raise _bad(what, "it is not a JSON object")
    kind = doc.get("mediaType") or header.split(";")[0].strip()
    if doc.get("schemaVersion") == 1 or kind in SCHEMA1:
        raise RegistryError(f"{what} is a Docker schema 1 manifest", "schema 1 is deprecated and not supported (Docker dropped it too)",
                            "push the image again with a current client", cause=BAD_CONTENT)
    if kind not in INDEXES + MANIFESTS:
        if "manifests" in doc:
            kind = OCI_INDEX
        elif "layers" in doc:
            kind = OCI_MANIFEST
        else:
            raise _bad(what, f"media type {bounded.excerpt(kind)} is not an image manifest or index")
    return kind, doc


def image_manifest(doc: dict, what: str) -> ImageManifest:
    if doc.get("schemaVersion") != 2:
        raise _bad(what, "schemaVersion is not 2")
    config = _descriptor(doc.get("config"), what)
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise _bad(what, "it has no list of layers")
    out = [_descriptor(x, what) for x in layers]
    for d in out:
        if d.media_type not in LAYER_ENCODING:
            why = "zstd layers are not supported yet" if "zstd" in d.media_type else "not a layer netdiag can unpack"
            raise RegistryError(f"{what} has a layer of media type {bounded.excerpt(d.media_type)}", why,
                                "pull a gzip or uncompressed variant of the image", cause=BAD_CONTENT)
    return ImageManifest(config, out)


def this_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) as OCI names them."""
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}.get(machine, machine)
    variant = {"aarch64": "v8", "armv7l": "v7"}.get(machine, "")
    return "linux", arch, variant


def parse_platform(text: str) -> tuple[str, str, str]:
    """'linux/arm64/v8' -> ('linux', 'arm64', 'v8'), as `--platform` takes it."""
    from ..errors import InvalidArgument

    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise InvalidArgument(f"Invalid platform {text!r}", "a platform is OS/ARCH[/VARIANT]", "e.g. linux/amd64 or linux/arm64/v8")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def pick_platform(doc: dict, what: str, platform: tuple[str, str, str] | None = None) -> Descriptor:
    """The index entry for this machine (an arm64 entry without a variant fits v8, as containerd's matcher)."""
    want_os, want_arch, want_variant = platform or this_platform()
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise _bad(what, "its manifests are not a list")
    descs = [_descriptor(x, what) for x in entries]
    seen = []
    for d in descs:
        p = d.platform or {}
        seen.append("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x))
        if d.media_type not in MANIFESTS or p.get("os") != want_os or p.get("architecture") != want_arch:
            continue
        if want_variant and p.get("variant") not in (None, "", want_variant):
            continue
        return d
    want = "/".join(x for x in (want_os, want_arch, want_variant) if x)
    raise RegistryError(f"{what} has no image for this machine's platform {want}",
                        f"it has: {', '.join(s for s in seen if s) or 'no platform entries'}",
                        "pull an image built for this platform", cause=NOT_FOUND)
