"""A read-only view of an image's root filesystem as overlayfs would show it, read straight from
the extracted layer directories (no mount, so no root needed to read it).

The builder uses it to resolve COPY destinations through the image's own symlinks (a /bin that
links to usr/bin must not become a directory), to give staged parent directories the image's
metadata (a COPY into /tmp must not turn /tmp 1777 into 0755), to read /etc/passwd for
--chown=NAME, and to tell the runtime's mount-point stubs from files the image really has.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .. import fsroot
from ..errors import BuildError
from ..images.layers import is_opaque


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class ImageView:
    def __init__(self, layer_dirs: list[Path]):
        """layer_dirs bottom first, as overlay lowerdirs are listed by the store."""
        self.top_first = [str(d) for d in reversed(layer_dirs)]

    def find(self, parts: tuple[str, ...]) -> tuple[str, os.stat_result] | None:
        """(host path, lstat) of the entry at `parts` (no symlink resolution), or None."""
        if not parts:
            return (self.top_first[0], os.lstat(self.top_first[0])) if self.top_first else None
        for layer in self.top_first:
            cur, hides_lower = layer, False
            for i, comp in enumerate(parts):
                cur = os.path.join(cur, comp)
                try:
                    st = os.lstat(cur)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if i == len(parts) - 1:
                    return None if _is_whiteout(st) else (cur, st)
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a file, link or whiteout here hides whatever lower layers have below
                hides_lower = hides_lower or is_opaque(cur)
            if hides_lower:
                return None
        return None

    def lstat(self, parts: tuple[str, ...]) -> os.stat_result | None:
        hit = self.find(parts)
        return hit[1] if hit else None

    def is_dir(self, parts: tuple[str, ...]) -> bool:
        if not parts:
            return True
        st = self.lstat(parts)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def resolve(self, path: str, *, follow_last: bool = True) -> tuple[str, ...]:
        """The components of `path` with the image's symlinks followed, scoped to the image root
        (an absolute link or '..' never leaves it; the runtime's rule, runtime/fsroot.py). Missing
        components are kept as written."""
        def readlink(parts: tuple[str, ...]) -> str | None:
            hit = self.find(parts)
            return os.readlink(hit[0]) if hit and stat.S_ISLNK(hit[1].st_mode) else None

        try:
            return fsroot.resolve(path, readlink, follow_last=follow_last)
        except OSError:  # ELOOP
            raise BuildError(f"Too many levels of symbolic links in {path!r} in the image",
                             fix="Fix the image's symlinks, or use another destination") from None

    def read_text(self, path: str) -> str | None:
        hit = self.find(self.resolve(path))
        if not hit or not stat.S_ISREG(hit[1].st_mode):
            return None
        with open(hit[0], encoding="utf-8", errors="replace") as f:
            return f.read()
