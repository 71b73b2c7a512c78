"""Moving images in and out: `import` a root filesystem tar, `save`/`load` OCI-layout tars."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from .. import paths
from ..errors import ImageError, InvalidArgument
from . import layers
from . import store as st
from .refs import normalize


def _tmpdir() -> tempfile.TemporaryDirectory:
    paths.root().mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=paths.root(), prefix=".archive-")


def _plain_tar(src: BinaryIO, out: Path) -> None:
    """Copy src to out, gunzipping when it is gzip-compressed."""
    head = src.read(2)
    rest = io.BufferedReader(_Prefixed(head, src)) if head else src
    with open(out, "wb") as f:
        if head == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=rest) as gz:
                shutil.copyfileobj(gz, f, 1 << 20)
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


def import_rootfs(src: BinaryIO, ref: str | None, changes: dict | None = None) -> st.Image:
    """`netdiag import`: a root filesystem tar (optionally gzip) becomes a one-layer image.
    The layer is extracted (and so checked for hostile members) before it is stored."""
    tag = normalize(ref) if ref else None
    with _tmpdir() as tmp:
        tar = Path(tmp) / "layer.tar"
        _plain_tar(src, tar)
        layers.extract_layer(tar, Path(tmp) / "check")
        digest = layers.file_digest(tar)
        target = paths.layers_dir() / digest.split(":", 1)[1]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / "check", target)
        digest = st.put_layer_file(tar)
    config = {"created": _now(), "config": dict(changes or {}), "history": [{"created_by": "netdiag import"}]}
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


def load(src: BinaryIO) -> list[str]:
    """Read an OCI layout tar; every blob is checked against its digest before it is stored."""
    index = None
    loaded: list[str] = []
    blob_dir = paths.images_dir() / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=src, mode="r|*") as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if name == "index.json" and m.isfile():
                index = json.loads(tf.extractfile(m).read())
            elif name.startswith("blobs/sha256/") and m.isfile():
                hexpart = name.split("/")[-1]
                if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
                    raise ImageError(f"Archive member {m.name!r} is not a sha256 blob", "", "")
                h = hashlib.sha256()
                tmp = blob_dir / f".{hexpart}.{os.getpid()}.load"
                with tf.extractfile(m) as f, open(tmp, "wb") as out:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
                if h.hexdigest() != hexpart:
                    tmp.unlink()
                    raise ImageError(f"Blob {hexpart[:12]} in the archive is corrupt", "its content does not match its digest", "save the image again")
                os.replace(tmp, blob_dir / hexpart)
    if index is None:
        raise ImageError("The archive has no index.json", "it is not an OCI image layout (netdiag save writes one)", "")
    for m in index.get("manifests", []):
        man = json.loads(st.blob_path(m["digest"]).read_bytes())
        if not st.blob_path(man["config"]["digest"]).exists():
            raise ImageError(f"Config {man['config']['digest'][:19]} is missing from the archive", "", "")
        for ly in man["layers"]:
            if not st.blob_path(ly["digest"]).exists():
                raise ImageError(f"Layer {ly['digest'][:19]} is missing from the archive", "", "")
        ref = (m.get("annotations") or {}).get(st.REF_ANNOTATION)
        img = st.tag_manifest(m["digest"], ref)
        loaded.append(f"Loaded image: {ref}" if ref else f"Loaded image ID: {img.id}")
    return loaded
