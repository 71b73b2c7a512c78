"""The content-addressed image store, laid out as an OCI image layout under NETDIAG_ROOT/images.

blobs/sha256/<hex> holds layer tars (uncompressed), image configs and manifests; index.json names
the manifests (annotation org.opencontainers.image.ref.name = "name:tag"). An image's id is the
digest of its config, as in Docker. Layers are extracted once, on demand, to layers/<hex>/ for use
as overlayfs lowerdirs.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from collections.abc import Iterator

from .. import paths, state
from ..errors import Conflict, ImageError, InvalidArgument, NotFound
from . import oci
from .oci import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, REF_ANNOTATION  # noqa: F401 - the store's vocabulary
from .refs import normalize


class Image:
    """A stored image (a plain class: a dataclass imports dataclasses and inspect on every `run`)."""

    _FIELDS = ("id", "manifest_digest", "config", "layers", "tags", "size", "broken")

    def __init__(self, id: str, manifest_digest: str, config: dict, layers: list[str], tags: list[str] | None = None,
                 size: int = 0, broken: str = ""):
        self.id = id  # sha256:<config digest>
        self.manifest_digest = manifest_digest
        self.config = config  # the whole OCI image config (config, rootfs, history, created...)
        self.layers = layers  # layer digests, bottom first
        self.tags = [] if tags is None else tags
        self.size = size
        self.broken = broken  # why its manifest or config cannot be read ("" when they can)

    def __repr__(self) -> str:
        return f"Image(id={self.id!r}, tags={self.tags!r}, broken={self.broken!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Image) and all(getattr(self, k) == getattr(other, k) for k in self._FIELDS)

    __hash__ = None  # mutable, like the dataclass it was

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def run_config(self) -> dict:
        """Docker's container config part: Env, Cmd, Entrypoint, WorkingDir, ExposedPorts..."""
        return self.config.get("config") or {}


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"Invalid digest {digest!r}", "digests are sha256:<64 hex digits>")
    return hexpart


def blob_path(digest: str) -> Path:
    return paths.images_dir() / "blobs" / "sha256" / _hex(digest)


def put_blob(data: bytes) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    p = blob_path(digest)
    if not p.exists():
        state.write_bytes(p, data)
    return digest


def _json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def put_layer_file(tar_path: Path) -> str:
    """Move a finished layer tar into the store; returns its digest."""
    from . import layers  # hashlib and tarfile: not needed to run an extracted image

    digest = layers.file_digest(tar_path)
    p = blob_path(digest)
    if p.exists():
        tar_path.unlink()
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tar_path), p)
    return digest


def _init_layout() -> None:
    d = paths.images_dir()
    if not (d / "oci-layout").exists():
        state.write_json(d / "oci-layout", {"imageLayoutVersion": "1.0.0"})
    if not (d / "index.json").exists():
        state.write_json(d / "index.json", {"schemaVersion": 2, "manifests": []})


def _index() -> dict:
    _init_layout()
    path = paths.images_dir() / "index.json"
    fix = ("restore it from a backup, or remove it to start an empty image store (then "
           "'netdiag image prune' removes the blobs it named)")
    try:
        index = state.read_json(path, expect=dict)
    except state.CorruptRecord as e:
        raise state.CorruptRecord(path, e.why, fix) from None
    if not isinstance(index.get("manifests"), list) or not all(
            isinstance(m, dict) and oci.is_digest(m.get("digest")) for m in index["manifests"]):
        raise state.CorruptRecord(path, "its manifests are not a list of descriptors with digests", fix)
    return index


def _read_manifest(manifest_digest: str) -> oci.Manifest:
    what = f"manifest {manifest_digest[7:19]}"
    try:
        return oci.manifest(blob_path(manifest_digest).read_bytes(), what)
    except FileNotFoundError:
        raise oci.Malformed(f"{what} is missing from the store") from None


def _load(manifest_digest: str, tags: list[str]) -> Image:
    """The image of a manifest in the store; a broken Image when its blobs are missing or corrupt."""
    try:
        man = _read_manifest(manifest_digest)
        try:
            config = oci.config(blob_path(man.config).read_bytes(), man.layers, f"config {man.config[7:19]}")
        except FileNotFoundError:
            raise oci.Malformed(f"config {man.config[7:19]} is missing from the store") from None
    except oci.Malformed as e:
        return Image(manifest_digest, manifest_digest, {}, [], tags, 0, broken=str(e))
    return Image(man.config, manifest_digest, config, man.layers, tags, man.size)


def list_images() -> list[Image]:
    by_manifest: dict[str, list[str]] = {}
    for m in _index()["manifests"]:
        ref = (m.get("annotations") or {}).get(REF_ANNOTATION)
        by_manifest.setdefault(m["digest"], [])
        if ref:
            by_manifest[m["digest"]].append(ref)
    return [_load(d, sorted(t)) for d, t in by_manifest.items()]


def get(ref_or_id: str, *, allow_broken: bool = False) -> Image:
    """Resolve NAME[:TAG], a full id or a unique id prefix (like Docker). A broken image (its blobs
    are missing or corrupt) is an error unless `allow_broken` (for removing it)."""
    img = _find(ref_or_id)
    if img.broken and not allow_broken:
        shown = img.tags[0] if img.tags else img.short_id
        raise ImageError(f"Image {shown} is damaged in the store", img.broken,
                         f"remove it ('netdiag rmi {shown}') and build, import or load it again")
    return img


# name -> Image makers for images that exist without being stored first (the built-in busybox):
# the package wires them in (runtime/images/__init__.py), so the store depends on none of them
PROVIDERS: list = []


def _find(ref_or_id: str) -> Image:
    if not ref_or_id:
        raise InvalidArgument("An image name is required", "", "give a name like 'busybox'")
    images = list_images()
    want = None
    if ":" not in ref_or_id or not ref_or_id.startswith("sha256:"):
        try:
            want = normalize(ref_or_id)
        except InvalidArgument:
            want = None
    if want:
        for img in images:
            if want in img.tags:
                return img
        for provider in PROVIDERS:
            img = provider(want)
            if img is not None:
                return img
    if "@" in ref_or_id:
        img = _by_repo_digest(ref_or_id, images)
        if img is not None:
            return img
    prefix = ref_or_id.removeprefix("sha256:")
    if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
        hits = [i for i in images if i.id.removeprefix("sha256:").startswith(prefix)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise Conflict(f"Image id prefix {ref_or_id!r} is ambiguous", f"{len(hits)} images match", "give more characters of the id")
    raise NotFound(
        f"No such image: {ref_or_id}",
        "images come from 'netdiag pull', 'build', 'import' or 'load', plus the built-in busybox",
        "list images with 'netdiag images'",
    )


def _by_repo_digest(ref: str, images: list[Image]) -> Image | None:
    """NAME@DIGEST: the image pulled from or pushed as that registry manifest."""
    from . import repodigests
    from .refs import parse

    try:
        r = parse(ref, default_tag=False)
    except InvalidArgument:
        return None
    image_id = repodigests.find(f"{r.familiar_name}@{r.digest}")
    return next((i for i in images if i.id == image_id), None)


@contextlib.contextmanager
def adding(what: str) -> Iterator[None]:
    """Around a command that adds to the store (import, load, build, the built-in image): a full disk
    met inside becomes state.DiskFull("Cannot {what}"), after the blobs and extracted layers the
    command stored but no index entry refers to are removed again (the sweep `prune` does: under
    its exclusive lock, so no other writer's blob is taken half-way). Call it outside `writing()`."""
    try:
        with state.space_for(what):
            yield
    except state.DiskFull:
        try:
            with state.locked("blobs"), state.locked("images"):
                _sweep(_live(_index()))
        except (OSError, state.NetdiagError):
            pass  # prune sweeps them later; the error to report is the full disk
        raise


def _live(index: dict) -> set[str]:
    """Every blob something refers to: index entries, the build cache, containers."""
    live = _build_cache_blobs() | _container_blobs()
    for m in index["manifests"]:
        live |= _manifest_blobs(m["digest"])
    return live


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Held (shared) from writing blobs until an index entry or the build cache refers to them, so
    `prune`, which sweeps unreferenced blobs holding it exclusively, never takes them meanwhile."""
    with state.locked("blobs", shared=True):
        yield


def commit(config: dict, layer_digests: list[str], tag: str | None = None) -> Image:
    """Write config + manifest blobs and (optionally) point `tag` at them. Returns the image."""
    with writing():
        return _commit(config, layer_digests, tag)


def _commit(config: dict, layer_digests: list[str], tag: str | None) -> Image:
    config = dict(config)
    config.setdefault("architecture", {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine))
    config.setdefault("os", "linux")
    config["rootfs"] = {"type": "layers", "diff_ids": list(layer_digests)}
    return commit_config_bytes(_json_bytes(config), layer_digests, tag)


def commit_config_bytes(cfg_bytes: bytes, layer_digests: list[str], tag: str | None) -> Image:
    """Store a config as these exact bytes (a pulled image keeps its registry's id) and a manifest
    naming it and the (uncompressed, stored) layers; call it inside `writing()`."""
    cfg_digest = put_blob(cfg_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": cfg_digest, "size": len(cfg_bytes)},
        "layers": [
            {"mediaType": LAYER_TYPE, "digest": d, "size": blob_path(d).stat().st_size} for d in layer_digests
        ],
    }
    man_digest = put_blob(_json_bytes(manifest))
    return tag_manifest(man_digest, tag)


def tag_manifest(man_digest: str, tag: str | None) -> Image:
    """Add a manifest (already in blobs/) to the index, moving `tag` to it."""
    tag = normalize(tag) if tag else None
    tag_manifests([(man_digest, tag)])
    return _load(man_digest, [tag] if tag else [])


def tag_manifests(entries: list[tuple[str, str | None]]) -> None:
    """Add manifests (already in blobs/) to the index in one write, moving each tag to its manifest;
    the blobs of images left without an entry are deleted."""
    with state.locked("images"):
        index = _index()
        replaced = []
        for man_digest, tag in entries:
            size = blob_path(man_digest).stat().st_size
            if tag:
                tag = normalize(tag)
                replaced += [m["digest"] for m in index["manifests"] if (m.get("annotations") or {}).get(REF_ANNOTATION) == tag]
                index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_ANNOTATION) != tag]
            entry = {"mediaType": MANIFEST_TYPE, "digest": man_digest, "size": size}
            if tag:
                entry["annotations"] = {REF_ANNOTATION: tag}
            if tag or not any(m["digest"] == man_digest for m in index["manifests"]):
                index["manifests"].append(entry)
        state.write_json(paths.images_dir() / "index.json", index)
        added = {d for d, _ in entries}
        _drop_unreferenced(index, [d for d in replaced if d not in added])


def layer_dir(digest: str) -> Path:
    """The extracted layer (an overlay lowerdir), extracting it on first use."""
    d = paths.layers_dir() / _hex(digest)
    if d.is_dir():
        return d
    with state.locked("layer-" + _hex(digest)[:16]):
        if d.is_dir():
            return d
        tmp = d.with_name(f".{d.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        from . import layers

        layers.extract_layer(blob_path(digest), tmp, f"layer {_hex(digest)[:12]}")
        os.replace(tmp, d)
    return d


def remove(ref_or_id: str, *, users: list[str] = (), force: bool = False) -> list[str]:
    """Untag (and delete when no tag is left). `users` are containers using the image."""
    img = get(ref_or_id, allow_broken=True)
    if users and not force:
        raise Conflict(
            f"Image {ref_or_id} is in use by container(s) {', '.join(users)}",
            "removing it would leave those containers without their root filesystem",
            "remove the containers first ('netdiag rm -f NAME')",
        )
    removed: list[str] = []
    with state.locked("images"):
        index = _index()
        by_tag = normalize(ref_or_id) if _looks_like_ref(ref_or_id) and not _is_id(ref_or_id, img) else None
        keep = []
        for m in index["manifests"]:
            t = (m.get("annotations") or {}).get(REF_ANNOTATION)
            if m["digest"] == img.manifest_digest and (by_tag is None or t == by_tag):
                removed.append(f"Untagged: {t}" if t else f"Deleted: {img.id}")
                continue
            keep.append(m)
        index["manifests"] = keep
        state.write_json(paths.images_dir() / "index.json", index)
        if not any(m["digest"] == img.manifest_digest for m in keep):
            removed.append(f"Deleted: {img.id}")
        _drop_unreferenced(index, [img.manifest_digest])
    return removed


def _looks_like_ref(s: str) -> bool:
    try:
        normalize(s)
        return True
    except InvalidArgument:
        return False


def _is_id(s: str, img: Image) -> bool:
    p = s.removeprefix("sha256:")
    return len(p) >= 4 and img.id.removeprefix("sha256:").startswith(p)


def _manifest_blobs(manifest_digest: str) -> set[str]:
    """The manifest and the blobs it names (only itself when it cannot be read)."""
    try:
        man = _read_manifest(manifest_digest)
    except oci.Malformed:
        return {manifest_digest}
    return {manifest_digest, man.config, *man.layers}


def drop_unreferenced(manifests: list[str]) -> None:
    """Delete the blobs (and extracted layers) of `manifests` that nothing else still needs."""
    with state.locked("images"):
        _drop_unreferenced(_index(), manifests)


def _drop_unreferenced(index: dict, manifests: list[str]) -> None:
    candidates: set[str] = set()
    for m in manifests:
        candidates |= _manifest_blobs(m)
    if not candidates:
        return
    live: set[str] = set()
    for m in index["manifests"]:
        live |= _manifest_blobs(m["digest"])
    live |= _build_cache_blobs() | _container_blobs()
    for digest in candidates - live:
        blob_path(digest).unlink(missing_ok=True)
        shutil.rmtree(paths.layers_dir() / _hex(digest), ignore_errors=True)


def _build_cache_blobs() -> set[str]:
    """Manifests kept alive by the build cache (intermediate images of `netdiag build`)."""
    live: set[str] = set()
    d = paths.build_cache_dir()
    if not d.is_dir():
        return live
    for p in d.glob("*.json"):
        try:
            entry = state.read_json(p, {}, expect=dict)
        except state.CorruptRecord:
            continue  # the builder ignores it too (a cache miss)
        blobs = entry.get("blobs")
        if isinstance(blobs, list):
            live.update(b for b in blobs if isinstance(b, str))
    return live


def container_images() -> list:
    """The "Image" (config digest) every container record names: NETDIAG_ROOT/containers/<id>/
    config.json, written by runtime.containers at create. Read here, not through that package,
    because containers are made of images (it imports this store); an unreadable record names
    none, as its container (a dead one, see container_records._broken) then has no image."""
    d = paths.containers_dir()
    if not d.is_dir():
        return []
    out = []
    for sub in d.iterdir():
        if not sub.is_dir() or sub.name.startswith("."):
            continue
        try:
            cfg = state.read_json(sub / "config.json", expect=dict)
        except state.CorruptRecord:
            continue
        if cfg is not None:
            out.append(cfg.get("Image"))
    return out


def _container_blobs() -> set[str]:
    """What containers still need though their image may be untagged or removed (`rmi -f`): its
    config and the layers it lists, which a running container has mounted."""
    live: set[str] = set()
    for image in container_images():
        if not oci.is_digest(image):
            continue
        live.add(image)
        try:
            cfg = json.loads(blob_path(image).read_bytes())
            live.update(d for d in cfg["rootfs"]["diff_ids"] if oci.is_digest(d))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return live


def prune(images: str = "") -> tuple[list[str], int]:
    """`image prune` (images "dangling": untagged images; "all": every image) and `system prune`:
    removes those images unless a container uses them, then every blob and extracted layer that no
    image, build cache entry or container refers to, and what killed commands left half-written.
    Returns (Docker-style lines, bytes reclaimed)."""
    lines: list[str] = []
    used = _container_blobs()
    with state.locked("blobs"), state.locked("images"):  # writers hold "blobs" shared: none is mid-way
        index = _index()
        if images:
            index["manifests"], lines = _prune_index(index["manifests"], images == "all", used)
            state.write_json(paths.images_dir() / "index.json", index)
        freed = _sweep(_live(index))
    lines += [f"deleted: leftover {d.name}" for d in state.sweep_scratch()]
    return lines, freed


def _prune_index(entries: list[dict], every: bool, used: set[str]) -> tuple[list[dict], list[str]]:
    by_manifest: dict[str, list[dict]] = {}
    for m in entries:
        by_manifest.setdefault(m["digest"], []).append(m)
    keep, lines = [], []
    for digest, group in by_manifest.items():
        tags = [t for t in ((m.get("annotations") or {}).get(REF_ANNOTATION) for m in group) if t]
        image_id = _load(digest, tags).id
        if image_id in used or (tags and not every):
            keep += group
            continue
        lines += [f"untagged: {t}" for t in tags] + [f"deleted: {image_id}"]
    return keep, lines


def _sweep(live: set[str]) -> int:
    """Delete blobs and extracted layers not in `live`, and temp files of dead writers."""
    from ..kernel.syscalls import pid_alive

    freed = 0
    for p in sorted((paths.images_dir() / "partial").glob("*")):  # interrupted pulls' bytes (pulls hold "blobs" shared)
        freed += p.stat().st_size
        p.unlink(missing_ok=True)
    for d, is_layer in ((paths.images_dir() / "blobs" / "sha256", False), (paths.layers_dir(), True)):
        for p in sorted(d.iterdir()) if d.is_dir() else ():
            if p.name.startswith("."):  # .<name>.<pid>.tmp of a write or an extraction
                parts = p.name.split(".")
                if len(parts) < 4 or not parts[-2].isdigit() or pid_alive(int(parts[-2])):
                    continue
            elif "sha256:" + p.name in live:
                continue
            if is_layer or p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                freed += p.stat().st_size
                p.unlink(missing_ok=True)
    return freed
