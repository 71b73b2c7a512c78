"""Crafting image archives and root filesystem tars for tests, hostile ones included: an OCI image
layout (index.json + blobs/sha256/...) whose every part a test can break on purpose."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

REF = "org.opencontainers.image.ref.name"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def entry(name: str, type_: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "", mode: int = 0o644,
          dev: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname = type_, mode, linkname
    ti.devmajor, ti.devminor = dev
    if type_ == tarfile.DIRTYPE:
        ti.mode = 0o755
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    return ti, (data if type_ == tarfile.REGTYPE else None)


def tar_bytes(members) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def busybox_root(*extra, proc=True) -> list:
    """A runnable root: the host's static busybox as /bin/busybox and /bin/sh, plus `extra`."""
    data = Path("/bin/busybox").read_bytes()
    members = [entry("bin", tarfile.DIRTYPE), entry("bin/busybox", data=data, mode=0o755),
               entry("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox")]
    for applet in ("cat", "ls", "stat", "readlink", "mount", "echo", "test"):
        members.append(entry(f"bin/{applet}", tarfile.SYMTYPE, linkname="/bin/busybox"))
    if proc:
        members += [entry("proc", tarfile.DIRTYPE), entry("sys", tarfile.DIRTYPE), entry("dev", tarfile.DIRTYPE)]
    return members + list(extra)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Archive:
    """An OCI image layout being put together; `write` makes the tar (optionally broken)."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.index: list[dict] = []

    def blob(self, data: bytes) -> str:
        d = digest(data)
        self.blobs[d] = data
        return d

    def image(self, layers: list[bytes], ref: str | None = "hostile:1", *, manifest_edit=None, config_edit=None) -> str:
        ids = [self.blob(ly) for ly in layers]
        config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": ids}}
        if config_edit:
            config_edit(config)
        cfg = json.dumps(config).encode()
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.blob(cfg), "size": len(cfg)},
                    "layers": [{"mediaType": LAYER_TYPE, "digest": d, "size": len(self.blobs[d])} for d in ids]}
        if manifest_edit:
            manifest_edit(manifest)
        md = self.blob(json.dumps(manifest).encode())
        e = {"mediaType": MANIFEST_TYPE, "digest": md, "size": len(self.blobs[md])}
        if ref:
            e["annotations"] = {REF: ref}
        self.index.append(e)
        return md

    def write(self, path: Path, *, index: bytes | None = None, drop: tuple[str, ...] = (),
              replace: dict[str, bytes] | None = None) -> Path:
        """`drop`: digests left out; `replace`: digest -> other content under the same name."""
        members = [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                   ("index.json", index if index is not None else json.dumps({"schemaVersion": 2, "manifests": self.index}).encode())]
        for d, data in self.blobs.items():
            if d not in drop:
                members.append(("blobs/sha256/" + d.split(":")[1], (replace or {}).get(d, data)))
        Path(path).write_bytes(tar_bytes([entry(n, data=b) for n, b in members]))
        return Path(path)
