"""RepoDigests, as `docker image inspect` shows them: the registry manifests (REPO@DIGEST, REPO in
Docker's familiar form) an image was pulled from or pushed as, one per repository. Kept beside the
store's index (images/repodigests.json, {image id: [REPO@DIGEST]}); entries of removed images are
ignored when read and dropped at the next write."""
from __future__ import annotations

from .. import paths, state


def _path():
    return paths.images_dir() / "repodigests.json"


def _read() -> dict:
    try:
        data = state.read_json(_path(), {}, expect=dict)
    except state.CorruptRecord:
        return {}  # only a record of where images came from: losing it costs one download
    return {k: [x for x in v if isinstance(x, str)] for k, v in data.items() if isinstance(v, list)}


def add(image_id: str, repo_digest: str, live: set[str]) -> None:
    """Record REPO@DIGEST for `image_id` (replacing that repository's older digest on any image);
    `live` are the ids still in the store."""
    repo = repo_digest.split("@", 1)[0]
    with state.locked("repodigests"):
        data = {k: [x for x in v if x.split("@", 1)[0] != repo] for k, v in _read().items() if k in live}
        data.setdefault(image_id, []).append(repo_digest)
        state.write_json(_path(), {k: sorted(v) for k, v in data.items() if v})


def of(image_id: str) -> list[str]:
    return _read().get(image_id, [])


def find(repo_digest: str) -> str | None:
    """The id of the image recorded for REPO@DIGEST."""
    for image_id, entries in _read().items():
        if repo_digest in entries:
            return image_id
    return None

