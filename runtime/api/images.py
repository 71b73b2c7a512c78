"""Image actions (Docker's images, image inspect|rm|prune, import, save, load, build)."""
from __future__ import annotations

import os
from typing import BinaryIO


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"



def listing() -> list[dict]:
    """`images` rows, a row per tag (Docker's `--format json` fields); a damaged image has Error."""
    import time

    from ..containers.container_records import human_duration, parse_iso
    from ..images import repodigests, store

    out = []
    for img in store.list_images():
        created = img.config.get("created", "")
        since = human_duration(time.time() - parse_iso(created)) + " ago" if created else "N/A"
        at = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(parse_iso(created))) if created else ""  # Docker's form
        # Docker's Digest: the registry's manifest digest for the row's repository (RepoDigests), else
        # <none>; a repository known only by digest (pulled as REPO@sha256:...) is a row whose tag is <none>
        digests = dict(rd.split("@", 1) for rd in repodigests.of(img.id))
        tags = [tag.rpartition(":")[::2] for tag in img.tags]
        tags += [(repo, "<none>") for repo in sorted(digests) if repo not in {r for r, _ in tags}]
        for repo, t in tags or [("<none>", "<none>")]:
            out.append({"Repository": repo, "Tag": t, "ID": img.short_id, "CreatedAt": at, "CreatedSince": since,
                        "Size": human_size(img.size), "Digest": digests.get(repo, "<none>"),
                        **({"Error": img.broken} if img.broken else {})})
    return out


def inspect(ref: str) -> dict:
    from ..containers.inspect import image_json
    from ..images import store

    return image_json(store.get(ref))


def remove(ref: str, *, force: bool = False) -> list[str]:
    """Untag or delete an image (refused while a container uses it, unless force); Docker's lines."""
    from ..containers import container_records
    from ..images import store

    img = store.get(ref, allow_broken=True)
    users = [c.name for c in container_records.list_all() if c.config.get("Image") == img.id]
    return store.remove(ref, users=users, force=force)


def changes(lines: list[str]) -> dict:
    """`--change` Dockerfile instructions applied to an empty image config."""
    if not lines:
        return {}
    from ..build.builder import apply_config_instruction
    from ..build.dockerfile import parse

    cfg: dict = {}
    cmd_set = False
    for ins in parse("FROM scratch\n" + "\n".join(lines), "--change")[1:]:
        apply_config_instruction(cfg, ins, cmd_set=cmd_set)
        cmd_set = cmd_set or ins.cmd == "CMD"
    return cfg


def import_rootfs(src: BinaryIO, reference: str | None, change: list[str] = (), *, name: str = "-"):
    from ..images import archive

    return archive.import_rootfs(src, reference, changes(list(change)), name=name)


def save(refs: list[str], out: BinaryIO) -> None:
    from ..images import archive

    archive.save(refs, out)


def save_to(refs: list[str], path: str) -> None:
    """Write the tar to path whole or not at all (a .partial file renamed at the end)."""
    from .. import state
    from ..images import archive

    tmp = path + ".partial"
    try:
        with state.space_for(f"save to {path}", path), open(tmp, "wb") as f:
            archive.save(refs, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(src: BinaryIO, name: str = "-") -> list[str]:
    from ..images import archive

    return list(archive.load(src, name))


def prune(all_: bool = False) -> tuple[list[str], int]:
    """Untagged images (every unused one with all_), then what nothing refers to; lines, bytes freed."""
    from ..images import store

    return store.prune("all" if all_ else "dangling")


def build(context: str, *, dockerfile: str | None = None, tags: list[str] = (), build_args: dict | None = None,
          no_cache: bool = False, quiet: bool = False):
    from ..build.builder import build as build_image
    from . import require_root

    require_root("build an image")
    return build_image(context, dockerfile=dockerfile, tags=list(tags), build_args=dict(build_args or {}),
                       no_cache=no_cache, quiet=quiet)
