"""Moving images in and out: `import` a root filesystem tar, `save`/`load` OCI-layout tars."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import signal
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from .. import bounded, paths, state
from ..errors import ImageError, InvalidArgument, UnsafeArchive
from ..kernel.syscalls import signals_blocked
from . import docker_archive, layers, oci
from . import store as st
from .refs import normalize


def _shown(name: str) -> str:
    return "standard input" if name == "-" else name


def _bad(name: str, why: str, fix: str = "", verb: str = "load") -> InvalidArgument:
    """The user's archive is unusable: bad input (exit 2), naming the file (and member, in `why`)."""
    return InvalidArgument(f"Cannot {verb} {_shown(name)}", why,
                           fix or "check the file; 'netdiag save' and 'docker save' write usable archives")


def _plain_tar(src: BinaryIO, out: Path, name: str) -> None:
    """Copy src to out, gunzipping when it is gzip-compressed."""
    head = src.read(2)
    rest = io.BufferedReader(_Prefixed(head, src)) if head else src
    with open(out, "wb") as f:
        if head == b"\x1f\x8b":
            try:
                with gzip.GzipFile(fileobj=rest) as gz:
                    shutil.copyfileobj(gz, f, 1 << 20)
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
                if state.is_disk_full(e):
                    raise  # our disk, not their archive: store.adding reports it
                raise _bad(name, f"its gzip stream is corrupt ({e})", verb="import") from None
        else:
            shutil.copyfileobj(rest, f, 1 << 20)


class _Prefixed(io.RawIOBase):
    def __init__(self, prefix: bytes, rest: BinaryIO):
        self.prefix, self.rest = prefix, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.prefix:
            n = min(len(b), len(self.prefix))
            b[:n], self.prefix = self.prefix[:n], self.prefix[n:]
            return n
        data = self.rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def _check_layer(tar: Path, dest: Path, name: str, label: str, verb: str = "load") -> None:
    """Extract a layer into `dest` under layers.py's rules for hostile tars; a refusal or a broken
    tar is the user's bad input, reported with their file's name."""
    try:
        layers.extract_layer(tar, dest, label)
    except ImageError as e:
        raise _bad(name, f"{e.what.rstrip('.')}: {e.why}" if e.why else e.what,
                   e.fix if isinstance(e, UnsafeArchive) else "", verb) from None


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C and TERM wait until the store is consistent: they act right after, not half-way."""
    with signals_blocked(signal.SIGINT, signal.SIGTERM):
        yield


def _install_layer(extracted: Path, digest: str) -> None:
    """Keep a layer extracted while checking it: it is what the runtime would extract on first use."""
    hexpart = digest.split(":", 1)[1]
    target = paths.layers_dir() / hexpart
    with state.locked("layer-" + hexpart[:16]):  # the lock store.layer_dir extracts under
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(extracted, target)


def import_rootfs(src: BinaryIO, ref: str | None, changes: dict | None = None, *, name: str = "-") -> st.Image:
    """`netdiag import`: a root filesystem tar (optionally gzip) becomes a one-layer image.
    The layer is extracted (and so checked for hostile members) before anything is stored."""
    tag = normalize(ref) if ref else None
    with st.adding(f"import {_shown(name)}"), state.scratch_dir("import") as tmp:
        tar = tmp / "layer.tar"
        _plain_tar(src, tar, name)
        _check_layer(tar, tmp / "layer", name, "the tar", "import")
        digest = layers.file_digest(tar)
        config = {"created": _now(), "config": dict(changes or {}), "history": [{"created_by": "netdiag import"}]}
        with _uninterrupted(), st.writing():
            _install_layer(tmp / "layer", digest)
            st.put_layer_file(tar)
            return st.commit(config, [digest], tag)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def save(refs: list[str], out: BinaryIO) -> None:
    """An OCI image layout tar holding `refs` (what `docker save` writes, in OCI form)."""
    images = [st.get(r) for r in refs]
    wanted = {normalize(r) for r in refs if _is_ref(r)}
    manifests = []
    blobs: set[str] = set()
    for img in images:
        tags = [t for t in img.tags if t in wanted] or img.tags[:1]
        for t in tags or [None]:
            entry = {"mediaType": st.MANIFEST_TYPE, "digest": img.manifest_digest,
                     "size": st.blob_path(img.manifest_digest).stat().st_size}
            if t:
                entry["annotations"] = {st.REF_ANNOTATION: t}
            manifests.append(entry)
        blobs |= {img.manifest_digest, img.id, *img.layers}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        _add_bytes(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tf, "index.json", json.dumps({"schemaVersion": 2, "manifests": manifests}).encode())
        for digest in sorted(blobs):
            p = st.blob_path(digest)
            info = tarfile.TarInfo("blobs/sha256/" + p.name)
            info.size, info.mode = p.stat().st_size, 0o644
            with open(p, "rb") as f:
                tf.addfile(info, f)


def _is_ref(r: str) -> bool:
    try:
        normalize(r)
        return True
    except InvalidArgument:
        return False


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tf.addfile(info, io.BytesIO(data))


_MAX_JSON = docker_archive.MAX_JSON  # an index, manifest or config larger than this is not one


def load(src: BinaryIO, name: str = "-") -> list[str]:
    """Read an image archive: an OCI layout tar (`netdiag save`, `docker save` of Docker 25+) or
    the layout older Docker writes (manifest.json, <id>/layer.tar: docker_archive.py). Everything is
    checked before anything is stored: the index, each manifest and config, every blob against its
    digest, every layer against the hostile-tar rules. Blobs are staged in a scratch directory and
    moved into the store at the end, in one step that Ctrl-C does not cut."""
    with st.adding(f"load {_shown(name)}"), state.scratch_dir("load") as tmp:
        staged = tmp / "blobs"
        staged.mkdir()
        members = docker_archive.Members(tmp / "members", staged)
        index, docker_manifest = _read_archive(src, name, staged, members)
        if index is None and docker_manifest is None:
            raise _bad(name, "it has neither index.json nor manifest.json, so it is not an image archive",
                       "write it with 'netdiag save' or 'docker save'")
        try:
            found = oci.index(index) if index is not None else docker_archive.to_oci(docker_manifest, members, staged)
            entries = [(d, normalize(ref) if ref else None) for d, ref in found]
        except oci.Malformed as e:
            raise _bad(name, f"its {e}") from None
        except InvalidArgument as e:
            raise _bad(name, f"{'index.json' if index is not None else 'manifest.json'} names an invalid image: {e.what}",
                       e.fix) from None
        blobs: dict[str, oci.Manifest] = {}
        checked: set[str] = set()
        for digest, _ref in entries:
            man = blobs.get(digest) or _check_manifest(staged, digest, name)
            blobs[digest] = man
            for layer in man.layers:
                if layer not in checked:
                    _check_layer(staged / _hex(layer), tmp / "layers" / _hex(layer), name, f"layer {layer[7:19]}")
                    checked.add(layer)
        with _uninterrupted(), st.writing():
            wanted = set(blobs) | {m.config for m in blobs.values()} | checked
            for digest in sorted(wanted):
                target = st.blob_path(digest)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.replace(staged / _hex(digest), target)
            for layer in checked:
                _install_layer(tmp / "layers" / _hex(layer), layer)
            st.tag_manifests(entries)
    loaded = []
    for digest, ref in entries:
        loaded.append(f"Loaded image: {ref}" if ref else f"Loaded image ID: {blobs[digest].config}")
    return loaded


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _read_archive(src: BinaryIO, name: str, staged: Path,
                  members: docker_archive.Members) -> tuple[bytes | None, bytes | None]:
    """Stage every member of the tar stream: blobs checked against their digest, the other files
    for docker_archive. Return index.json and manifest.json (None when absent)."""
    index = manifest = member = None
    try:
        with tarfile.open(fileobj=src, mode="r|*") as tf:
            for m in tf:
                member = m.name
                path = docker_archive.member_path(m.name)
                if path == "index.json":
                    if not m.isfile() or m.size > _MAX_JSON:
                        raise _bad(name, "its index.json is not a regular file of sensible size")
                    index = tf.extractfile(m).read()
                elif path == "manifest.json" and m.isfile():
                    manifest = bounded.read_stream(tf.extractfile(m), docker_archive.MAX_MANIFEST, "manifest.json")
                elif path.startswith("blobs/") and not m.isdir():
                    _stage_blob(tf, m, path, name, staged)
                else:
                    members.add(tf, m, path)
    except oci.Malformed as e:
        raise _bad(name, f"its {e}") from None
    except bounded.Refused as e:
        raise _bad(name, f"its {e.display} is {e.problem}") from None
    except tarfile.TarError as e:
        where = f" after member {member!r}" if member else ""
        raise _bad(name, f"it is not a readable tar archive{where} ({e})") from None
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        if state.is_disk_full(e):
            raise  # our disk, not their archive: store.adding reports it
        if isinstance(e, OSError) and e.errno is not None:  # a failed operation, not bad input
            raise ImageError(f"Cannot load {_shown(name)}", e.strerror or str(e)) from None
        raise _bad(name, f"its compressed stream is corrupt ({e})") from None
    return index, manifest


def _stage_blob(tf: tarfile.TarFile, m: tarfile.TarInfo, path: str, name: str, staged: Path) -> None:
    parts = path.split("/")
    if len(parts) != 3 or parts[1] != "sha256" or not oci.is_digest("sha256:" + parts[2]):
        raise _bad(name, f"member {m.name!r} is not a blob named by its sha256 digest")
    if not m.isfile():
        raise _bad(name, f"member {m.name!r} is not a regular file")
    h = hashlib.sha256()
    with tf.extractfile(m) as f, open(staged / parts[2], "wb") as out:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != parts[2]:
        raise _bad(name, f"member {m.name!r} is corrupt: its content does not match its digest",
                   "save the image again")


def _blob(staged: Path, digest: str, name: str, named_by: str) -> bytes:
    p = staged / _hex(digest)
    if not p.exists():
        raise _bad(name, f"blob {digest} named by {named_by} is missing from the archive")
    if p.stat().st_size > _MAX_JSON:
        raise _bad(name, f"blob {digest} named by {named_by} is far too large for a JSON document")
    return p.read_bytes()


def _check_manifest(staged: Path, digest: str, name: str) -> oci.Manifest:
    what = f"manifest {digest[7:19]}"
    try:
        man = oci.manifest(_blob(staged, digest, name, "index.json"), what)
        oci.config(_blob(staged, man.config, name, what), man.layers, f"config {man.config[7:19]}")
    except oci.Malformed as e:
        raise _bad(name, f"its {e}") from None
    for layer, declared in zip(man.layers, man.sizes):
        blob = staged / _hex(layer)
        if not blob.exists():
            raise _bad(name, f"layer {layer} named by {what} is missing from the archive")
        if declared is not None and declared != blob.stat().st_size:  # `images` shows what the manifest says
            raise _bad(name, f"{what} says layer {layer[7:19]} has {declared} bytes, its blob has {blob.stat().st_size}",
                       "save the image again")
    return man
