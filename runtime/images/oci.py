"""The OCI image layout's JSON documents (index, image manifest, image config), checked before
anything trusts them. Pure functions over bytes, shared by `load` (an archive from anyone) and the
store (which reads back what it wrote); the caller names the file when it reports a Malformed.
"""
from __future__ import annotations

from .. import bounded

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
NAME_ANNOTATION = "io.containerd.image.name"  # `docker save` (25+) puts the full name here, the tag alone in REF

_MANIFEST_TYPES = (MANIFEST_TYPE, "application/vnd.docker.distribution.manifest.v2+json")
_LAYER_TYPES = (LAYER_TYPE, "application/vnd.docker.image.rootfs.diff.tar")
_HEX = set("0123456789abcdef")
# A layer's size as a manifest states it is shown by `images` and checked against the blob at load;
# no real layer comes near 1 TiB, so a larger claim (10**18) is refused at once as a lie.
MAX_LAYER_SIZE = 1 << 40


class Malformed(ValueError):
    """Why a document cannot be used; the caller says which file it was."""


class Manifest:
    """What the store needs of an image manifest (a plain class: this module is on `run`'s path)."""

    __slots__ = ("config", "layers", "size", "sizes")

    def __init__(self, config: str, layers: list[str], size: int, sizes: list[int | None] | None = None):
        self.config = config  # the config's digest: the image id
        self.layers = layers  # layer digests, bottom first
        self.size = size      # the layers' total size, as the manifest states it
        self.sizes = sizes or [None] * len(layers)  # each layer's, as stated (None: not stated)


def is_digest(value) -> bool:
    if not isinstance(value, str):
        return False
    algo, _, hexpart = value.partition(":")
    return algo == "sha256" and len(hexpart) == 64 and set(hexpart) <= _HEX


def _digest(value, what: str) -> str:
    if not is_digest(value):
        raise Malformed(f"{what} {bounded.excerpt(value)} is not a sha256 digest (sha256:<64 hex digits>)")
    return value


def _object(data: bytes, what: str) -> dict:
    try:
        obj = bounded.loads_json(data, what)  # depth-limited: `[[[[...` is refused, not a RecursionError
    except bounded.Refused as e:
        raise Malformed(f"{what} is {e.problem}") from None
    if not isinstance(obj, dict):
        raise Malformed(f"{what} is not a JSON object")
    return obj


def index(data: bytes) -> list[tuple[str, str | None]]:
    """(manifest digest, ref name or None) for each image index.json names."""
    obj = _object(data, "index.json")
    entries = obj.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise Malformed("index.json lists no manifests")
    out = []
    for i, m in enumerate(entries):
        where = f"index.json manifest #{i + 1}"
        if not isinstance(m, dict):
            raise Malformed(f"{where} is not an object")
        digest = _digest(m.get("digest"), f"{where}: digest")
        media = m.get("mediaType", MANIFEST_TYPE)
        if media == INDEX_TYPE:
            raise Malformed(f"{where} is a nested image index (multi-platform images are not supported)")
        if media not in _MANIFEST_TYPES:
            raise Malformed(f"{where} has media type {bounded.excerpt(media)}, not an image manifest")
        notes = m.get("annotations") or {}
        if not isinstance(notes, dict):
            raise Malformed(f"{where}: its annotations are not an object")
        for key in (NAME_ANNOTATION, REF_ANNOTATION):
            if notes.get(key) is not None and not isinstance(notes[key], str):
                raise Malformed(f"{where}: its {key} annotation is not a string")
        name = notes.get(NAME_ANNOTATION)
        if name:  # Docker's short form: docker.io/library/busybox:1 is busybox:1
            name = _familiar(name)
        out.append((digest, name or notes.get(REF_ANNOTATION)))
    return out


def _familiar(name: str) -> str:
    """A full reference in Docker's short form (left as it is when it is not a reference)."""
    from ..errors import InvalidArgument
    from .refs import parse

    try:
        return parse(name).familiar()
    except InvalidArgument:
        return name


def manifest(data: bytes, what: str = "the manifest") -> Manifest:
    obj = _object(data, what)
    if obj.get("schemaVersion") != 2:
        raise Malformed(f"{what} has schemaVersion {bounded.excerpt(obj.get('schemaVersion'))}, not 2")
    cfg = obj.get("config")
    if not isinstance(cfg, dict):
        raise Malformed(f"{what} names no config")
    config = _digest(cfg.get("digest"), f"{what}: config digest")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise Malformed(f"{what} has no list of layers")
    digests, size, sizes = [], 0, []
    for i, ly in enumerate(layers):
        where = f"{what}: layer #{i + 1}"
        if not isinstance(ly, dict):
            raise Malformed(f"{where} is not an object")
        digests.append(_digest(ly.get("digest"), f"{where} digest"))
        media = ly.get("mediaType", LAYER_TYPE)
        if media not in _LAYER_TYPES:
            compressed = any(z in str(media) for z in ("gzip", "zstd"))
            raise Malformed(f"{where} has media type {bounded.excerpt(media)}"
                            + ("; netdiag stores layers uncompressed, as 'docker save' and 'netdiag save' write them"
                               if compressed else ", not a layer tar"))
        n = ly.get("size")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_LAYER_SIZE):
            raise Malformed(f"{where} has an invalid size {bounded.excerpt(n)}"
                            + (f" (more than {MAX_LAYER_SIZE >> 40} TiB)" if isinstance(n, int) and n > MAX_LAYER_SIZE else ""))
        sizes.append(n)
        size += n or 0
    return Manifest(config, digests, size, sizes)


_LISTS = ("Env", "Cmd", "Entrypoint")
_STRINGS = ("User", "WorkingDir", "StopSignal")
_MAPS = ("ExposedPorts", "Labels", "Volumes", "Healthcheck")


def config(data: bytes, layers: list[str], what: str = "the image config") -> dict:
    """The image config, checked where the runtime relies on it: rootfs.diff_ids are the layers
    (uncompressed, so each layer's digest is its diff id) and the run config has the right types."""
    obj = _object(data, what)
    rootfs = obj.get("rootfs")
    if rootfs is not None:
        if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids", []), list):
            raise Malformed(f"{what} has an invalid rootfs")
        if "diff_ids" in rootfs and rootfs["diff_ids"] != list(layers):
            raise Malformed(f"{what}: its rootfs.diff_ids do not match the manifest's layers")
    run = obj.get("config")
    if run is None:
        return obj
    if not isinstance(run, dict):
        raise Malformed(f"{what}: 'config' is not an object")
    for key in _LISTS:
        v = run.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise Malformed(f"{what}: config.{key} is not a list of strings")
    for key in _STRINGS:
        if run.get(key) is not None and not isinstance(run[key], str):
            raise Malformed(f"{what}: config.{key} is not a string")
    for key in _MAPS:
        if run.get(key) is not None and not isinstance(run[key], dict):
            raise Malformed(f"{what}: config.{key} is not an object")
    return obj
