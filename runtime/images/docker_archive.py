"""`docker save`'s own layout (Docker before 25, e.g. Debian 12's docker.io 20.10): manifest.json
lists each image as {Config, RepoTags, Layers}; the config is `<its sha256>.json`, each layer
`<v1 id>/layer.tar` (a symlink to an earlier one when two layers are the same), beside `VERSION`,
`json` and `repositories`, which nothing here needs.

`load` turns it into the OCI form the store keeps: the config's bytes unchanged (so the image id is
the one Docker shows), each layer a blob named by its sha256, which must be the config's diff_id,
and a manifest written here the same way every time. Members are only ever read as the tar stream
passes (links are resolved by name here, never followed on disk); problems are oci.Malformed
naming the member or the document.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
from pathlib import Path

from .. import bounded
from . import oci

MAX_JSON = 16 << 20   # an image config larger than this is not one (the OCI path's limit too)
MAX_MANIFEST = bounded.MAX_JSON  # manifest.json: a few hundred bytes per image
_MAX_LINK_HOPS = 8


def member_path(raw: str, named_by: str = "") -> str:
    """A member's name (or a name a document gives) as a path relative to the archive's root; one
    that climbs out of it or is absolute marks a hostile archive, refused whatever it names."""
    if raw.startswith("/") or ".." in raw.split("/"):
        what = f"{named_by} names {bounded.excerpt(raw)}, which" if named_by else f"member {bounded.excerpt(raw)}"
        raise oci.Malformed(f"{what} points outside the archive's root")
    return posixpath.normpath(raw)


class Members:
    """The members `docker save` names by path (not by digest), staged while the tar streams past:
    regular files copied to `where` with their sha256, links remembered by their target."""

    def __init__(self, where: Path, blobs: Path):
        self.where, self.blobs = where, blobs  # blobs: OCI blobs staged by digest (Docker 25 names them)
        self.files: dict[str, tuple[Path, str, int]] = {}  # path -> (staged copy, sha256 hex, size)
        self.links: dict[str, str] = {}

    def add(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: str) -> None:
        if path in self.files or path in self.links:
            raise oci.Malformed(f"member {bounded.excerpt(m.name)} appears twice")
        if m.isfile():
            self.where.mkdir(exist_ok=True)
            copy, h = self.where / str(len(self.files)), hashlib.sha256()
            with tf.extractfile(m) as f, open(copy, "wb") as out:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
            self.files[path] = (copy, h.hexdigest(), copy.stat().st_size)
        elif m.issym() or m.islnk():  # a symlink is relative to its directory, a hard link to the root
            base = posixpath.dirname(path) if m.issym() else ""
            target = posixpath.normpath(posixpath.join(base, m.linkname))
            if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise oci.Malformed(f"member {bounded.excerpt(m.name)} links outside the archive's root")
            self.links[path] = target

    def resolve(self, path, named_by: str) -> tuple[Path, str, int]:
        """The staged file a document names: (copy, sha256 hex, size)."""
        if not isinstance(path, str) or not path:
            raise oci.Malformed(f"{named_by} is not a file name")
        path = member_path(path, named_by)
        for _ in range(_MAX_LINK_HOPS):
            if path not in self.links:
                break
            path = self.links[path]
        else:
            raise oci.Malformed(f"{named_by}: {bounded.excerpt(path)} is a chain of more than {_MAX_LINK_HOPS} links")
        if path in self.files:
            return self.files[path]
        hexpart = path.removeprefix("blobs/sha256/")
        blob = self.blobs / hexpart
        if hexpart != path and oci.is_digest("sha256:" + hexpart) and blob.is_file():  # checked as staged
            return blob, hexpart, blob.stat().st_size
        raise oci.Malformed(f"{named_by} names {bounded.excerpt(path)}, which is not in the archive")


def to_oci(manifest: bytes, members: Members, staged: Path) -> list[tuple[str, str | None]]:
    """Stage every image manifest.json lists as OCI blobs in `staged` (named by their sha256 hex);
    (manifest digest, tag or None) for each, as oci.index gives for an index.json."""
    try:
        images = bounded.loads_json(manifest, "manifest.json")
    except bounded.Refused as e:
        raise oci.Malformed(f"manifest.json is {e.problem}") from None
    if not isinstance(images, list) or not images:
        raise oci.Malformed("manifest.json is not a list of images")
    entries = []
    for i, image in enumerate(images):
        where = f"manifest.json image #{i + 1}"
        if not isinstance(image, dict):
            raise oci.Malformed(f"{where} is not an object")
        layers, tags = image.get("Layers"), image.get("RepoTags") or []
        if not isinstance(layers, list):
            raise oci.Malformed(f"{where} has no list of Layers")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise oci.Malformed(f"{where}: its RepoTags are not a list of names")
        digest = _stage_image(image.get("Config"), layers, members, staged, where)
        entries += [(digest, t.removeprefix("docker.io/").removeprefix("library/")) for t in tags] or [(digest, None)]
    return entries


def _stage_image(config_path, layer_paths: list, members: Members, staged: Path, where: str) -> str:
    """Check one image's config against its name and its layers against the config's diff_ids, move
    them to `staged` and write its manifest there; the manifest's digest."""
    copy, config_hex, config_size = members.resolve(config_path, f"{where}: its Config")
    named = posixpath.basename(config_path).removesuffix(".json")
    if oci.is_digest("sha256:" + named) and named != config_hex:  # Docker names the config by its digest
        raise oci.Malformed(f"member {bounded.excerpt(config_path)} is corrupt: its content does not match "
                            "the digest in its name")
    try:
        data = bounded.read_bytes(copy, MAX_JSON, config_path)
    except bounded.Refused as e:
        raise oci.Malformed(f"image config {bounded.excerpt(config_path)} is {e.problem}") from None
    layers = [members.resolve(p, f"{where}: its layer #{n + 1}") for n, p in enumerate(layer_paths)]
    _match_diff_ids(data, config_path, layer_paths, [h for _, h, _ in layers])
    oci.config(data, ["sha256:" + h for _, h, _ in layers], f"image config {bounded.excerpt(config_path)}")
    for file, hexpart, _ in [(copy, config_hex, config_size), *layers]:
        target = staged / hexpart
        if not target.exists():  # a link, not a move: two images may share a layer or a config
            os.link(file, target)
    man = {"schemaVersion": 2, "mediaType": oci.MANIFEST_TYPE,
           "config": {"mediaType": oci.CONFIG_TYPE, "digest": "sha256:" + config_hex, "size": config_size},
           "layers": [{"mediaType": oci.LAYER_TYPE, "digest": "sha256:" + h, "size": n} for _, h, n in layers]}
    data = json.dumps(man, sort_keys=True, separators=(",", ":")).encode()  # the same bytes on every load
    man_hex = hashlib.sha256(data).hexdigest()
    (staged / man_hex).write_bytes(data)
    return "sha256:" + man_hex


def _match_diff_ids(data: bytes, config_path: str, layer_paths: list, hexes: list[str]) -> None:
    """The layers manifest.json names are the ones the config describes, byte for byte: a layer
    whose sha256 is not its diff_id was changed (or compressed by another tool)."""
    what = f"image config {bounded.excerpt(config_path)}"
    try:
        obj = bounded.loads_json(data, config_path)
    except bounded.Refused as e:
        raise oci.Malformed(f"{what} is {e.problem}") from None
    rootfs = obj.get("rootfs") if isinstance(obj, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise oci.Malformed(f"{what} has no rootfs.diff_ids, so its layers cannot be checked")
    if len(diff_ids) != len(hexes):
        raise oci.Malformed(f"{what} describes {len(diff_ids)} layers, manifest.json names {len(hexes)}")
    for n, (path, h, diff_id) in enumerate(zip(layer_paths, hexes, diff_ids)):
        if diff_id != "sha256:" + h:
            raise oci.Malformed(f"layer #{n + 1} {bounded.excerpt(path)} does not match the config's diff_id "
                                f"{bounded.excerpt(diff_id)} (its sha256 is {h[:12]}): it was changed or recompressed")
