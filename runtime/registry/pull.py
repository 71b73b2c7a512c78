"""`pull`: a reference's manifest (this machine's platform from an index), its config, and each
layer the store lacks, streamed, verified and unpacked into the store, several at a time. What the
store already has is not fetched: a layer whose diff id is stored, and the whole image when its
registry digest is recorded (one HEAD request: "Image is up to date")."""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

from .. import paths, state
from ..images import oci, repodigests, store
from ..images.refs import Reference, parse
from . import blobs
from .errors import BAD_CONTENT, RegistryError
from .manifests import ACCEPT, INDEXES, image_manifest, media_type, parse_platform, pick_platform
from .transport import Session, scope

PARALLEL = 3  # Docker's max-concurrent-downloads


def get_manifest(s: Session, repo: str, target: str, what: str, digest: str = "") -> tuple[str, dict, str]:
    """(media type, document, digest) of a manifest by tag or digest; a digest is checked."""
    r = s.request("GET", f"/v2/{repo}/manifests/{target}", (scope(repo, "pull"),), headers={"Accept": ACCEPT}, what=what)
    body = r.content
    got = "sha256:" + hashlib.sha256(body).hexdigest()
    said = r.headers.get("docker-content-digest")
    if (digest and got != digest) or (said and said.startswith("sha256:") and said != got):
        raise RegistryError(f"{what} does not match its digest: refused", f"expected {digest or said}, got {got}",
                            "pull again; if it persists something between rewrites the traffic", cause=BAD_CONTENT)
    kind, doc = media_type(body, r.headers.get("content-type", ""), what)
    return kind, doc, got


def _present(ref: Reference, digest: str) -> store.Image | None:
    image_id = repodigests.find(f"{ref.familiar_name}@{digest}")
    img = next((i for i in store.list_images() if i.id == image_id), None) if image_id else None
    if img is None or img.broken or not all(store.blob_path(d).exists() for d in img.layers):
        return None
    return img


def partial_path(digest: str):
    """Where a blob's bytes wait while they download (kept when a pull is interrupted: the next one
    resumes; `image prune` removes them)."""
    d = paths.images_dir() / "partial"
    d.mkdir(parents=True, exist_ok=True)
    return d / digest[7:]


def pull(reference: str, *, insecure: list[str] = (), out=print, timeout: float = 30.0, progress=None,
         platform: str = "") -> store.Image:
    """`progress(layer, bytes, total)` is called as layers download (a terminal's progress bars);
    `platform` (OS/ARCH[/VARIANT]) picks from a multi-platform image instead of this machine's."""
    wanted = parse_platform(platform) if platform else None
    ref = parse(reference)
    repo, shown = ref.path, ref.familiar()
    with Session(ref.domain, insecure=list(insecure), timeout=timeout) as s:
        what = f"manifest for {shown}"
        if ref.digest:
            digest = ref.digest
        else:
            r = s.request("HEAD", f"/v2/{repo}/manifests/{ref.tag}", (scope(repo, "pull"),), headers={"Accept": ACCEPT},
                          what=what, ok=(200, 404))  # a 404 has no body to explain it: the GET below says why
            digest = r.headers.get("docker-content-digest", "") if r.status_code == 200 else ""
        img = _present(ref, digest) if digest and not wanted else None  # which platform's image is recorded is not
        if img is not None:
            return _up_to_date(ref, img, digest, out)
        kind, doc, digest = get_manifest(s, repo, ref.digest or ref.tag, what, ref.digest)
        img = _present(ref, digest) if not wanted else None  # a registry whose HEAD names no digest
        if img is not None:
            return _up_to_date(ref, img, digest, out)
        if kind in INDEXES:
            chosen = pick_platform(doc, what, wanted)
            kind, doc, _ = get_manifest(s, repo, chosen.digest, f"{what} ({chosen.digest[7:19]})", chosen.digest)
            if kind in INDEXES:
                raise RegistryError(f"{what} is an index inside an index", "", "", cause=BAD_CONTENT)
        man = image_manifest(doc, what)
        config_bytes = blobs.fetch_small(s, repo, man.config, f"the config of {shown}")
        diff_ids = _diff_ids(config_bytes, len(man.layers), shown)
        out(f"{ref.digest or ref.tag}: Pulling from {ref.path}")  # Docker names the repository without its registry
        with store.adding(f"pull {shown}"), store.writing(), state.scratch_dir("pull") as tmp:
            def one(i: int) -> None:
                desc, diff_id = man.layers[i], diff_ids[i]
                short, final = desc.digest[7:19], store.blob_path(diff_id)
                # one download of a blob at a time (its partial file; an image may list a layer twice)
                with state.locked(f"pull-{desc.digest[7:23]}"):
                    if final.exists():
                        out(f"{short}: Already exists")
                        return
                    path = tmp / diff_id[7:]
                    got = blobs.fetch_layer(s, repo, desc, path, partial_path(desc.digest), f"layer {short} of {shown}",
                                            progress=(lambda n: progress(short, n, desc.size)) if progress else None, say=out)
                    if got != diff_id:
                        path.unlink(missing_ok=True)
                        raise RegistryError(f"Layer {short} of {shown} unpacks to {got[:19]}…, not the config's {diff_id[:19]}…",
                                            "the image's config and its layers do not belong together: refused, nothing stored",
                                            "push the image again", cause=BAD_CONTENT)
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, final)  # verified above: the store's digest is the file's
                out(f"{short}: Pull complete")

            with ThreadPoolExecutor(PARALLEL) as pool:
                for f in [pool.submit(one, i) for i in range(len(man.layers))]:
                    f.result()
            img = store.commit_config_bytes(config_bytes, diff_ids, f"{ref.familiar_name}:{ref.tag}" if ref.tag else None)
        repodigests.add(img.id, f"{ref.familiar_name}@{digest}", {i.id for i in store.list_images()})
    out(f"Digest: {digest}")
    out(f"Status: Downloaded newer image for {shown}")
    out(str(ref))  # Docker's last line: the full reference (docker.io/library/busybox:latest)
    return img


def _up_to_date(ref: Reference, img: store.Image, digest: str, out) -> store.Image:
    """The image is here: (re)tag it, say so, fetch nothing."""
    if ref.tag and f"{ref.familiar_name}:{ref.tag}" not in img.tags:
        img = store.tag_manifest(img.manifest_digest, f"{ref.familiar_name}:{ref.tag}")
    out(f"{ref.digest or ref.tag}: Pulling from {ref.path}")  # Docker names the repository without its registry
    out(f"Digest: {digest}")
    out(f"Status: Image is up to date for {ref.familiar()}")
    out(str(ref))
    return img


def _diff_ids(config_bytes: bytes, n_layers: int, shown: str) -> list[str]:
    try:
        doc = json.loads(config_bytes)
        diff_ids = doc["rootfs"]["diff_ids"]
        oci.config(config_bytes, diff_ids, f"the config of {shown}")
    except (ValueError, KeyError, TypeError, oci.Malformed) as e:
        raise RegistryError(f"The config of {shown} cannot be used", str(e), "", cause=BAD_CONTENT) from None
    if not isinstance(diff_ids, list) or len(diff_ids) != n_layers or not all(oci.is_digest(d) for d in diff_ids):
        raise RegistryError(f"The config of {shown} does not list one diff id per layer", "", "", cause=BAD_CONTENT)
    return diff_ids
