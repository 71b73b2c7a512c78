"""`push`: an image's blobs, then its manifest, exactly as the store holds them (so the registry's
digest is the local manifest's). Each blob is checked with HEAD first (a layer the repository has
is not sent), mounted from another repository of the same registry where this store knows one has
it, and uploaded only otherwise: in one PUT, or in PATCH chunks above the chunk size."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .. import bounded
from ..errors import InvalidArgument
from ..images import oci, repodigests, store
from ..images.refs import Reference, parse
from . import blobs
from .errors import BAD_CONTENT, RegistryError
from .transport import Session, scope

PARALLEL = 3  # Docker's max-concurrent-uploads is 5; the lab machines have 2 cores
CHUNK = 64 << 20  # NETDIAG_UPLOAD_CHUNK (bytes) overrides: blobs larger go in PATCH chunks


def _mount_sources(ref: Reference, digest: str) -> list[str]:
    """Repositories of the same registry that hold `digest`, as far as this store knows."""
    out = []
    for img in store.list_images():
        if digest not in (img.id, *img.layers):
            continue
        for entry in repodigests.of(img.id):
            try:
                other = parse(entry, default_tag=False)
            except InvalidArgument:
                continue
            if other.domain == ref.domain and other.path != ref.path and other.path not in out:
                out.append(other.path)
    return out[:3]


def push(reference: str, *, insecure: list[str] = (), out=print, progress=None) -> str:
    """Push the image `reference` names; Docker's lines through `out`, and `progress(layer, sent,
    size)` while a layer uploads (a terminal's bars)."""
    ref = parse(reference)
    if ref.digest:
        raise InvalidArgument(f"Cannot push {reference}", "a push names a tag, not a digest", "give NAME[:TAG]")
    img = store.get(ref.familiar())
    manifest = store.blob_path(img.manifest_digest).read_bytes()
    kind = bounded.loads_json(manifest, f"manifest {img.manifest_digest[7:19]}").get("mediaType") or oci.MANIFEST_TYPE
    chunk = int(os.environ.get("NETDIAG_UPLOAD_CHUNK") or CHUNK)
    repo = ref.path
    with Session(ref.domain, insecure=list(insecure)) as s:
        out(f"The push refers to repository [{ref.name if ref.domain != 'docker.io' else 'docker.io/' + ref.path}]")

        def one(digest: str, say=out, bar: bool = True) -> None:
            short = digest[7:19]
            path = store.blob_path(digest)
            if not path.exists():
                raise RegistryError(f"Blob {short} of {ref.familiar()} is missing from the store", "",
                                    f"remove the image and build or pull it again", cause=BAD_CONTENT)
            if blobs.exists(s, repo, digest):
                say(f"{short}: Layer already exists")
                return
            for source in _mount_sources(ref, digest):
                if blobs.mount(s, repo, digest, source):
                    say(f"{short}: Mounted from {source}")
                    return
            size = path.stat().st_size
            blobs.upload(s, repo, digest, path, chunk_size=chunk,
                         progress=(lambda n: progress(short, n, size)) if progress and bar else None)
            say(f"{short}: Pushed")

        with ThreadPoolExecutor(PARALLEL) as pool:
            for f in [pool.submit(one, d) for d in img.layers]:
                f.result()
        one(img.id, say=lambda _line: None, bar=False)  # the config: Docker lists only layers
        r = s.request("PUT", f"/v2/{repo}/manifests/{ref.tag}", (scope(repo, "pull,push"),), ok=(201,),
                      content=manifest, headers={"Content-Type": kind}, what=f"the manifest of {ref.familiar()}")
        said = r.headers.get("docker-content-digest")
        if said and said != img.manifest_digest:
            raise RegistryError(f"The registry stored the manifest of {ref.familiar()} as {said}",
                                f"netdiag sent {img.manifest_digest}", "", cause=BAD_CONTENT)
    repodigests.add(img.id, f"{ref.familiar_name}@{img.manifest_digest}", {i.id for i in store.list_images()})
    out(f"{ref.tag}: digest: {img.manifest_digest} size: {len(manifest)}")
    return img.manifest_digest
