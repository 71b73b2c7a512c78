"""COPY and ADD for the builder: find the sources in the build context (never outside it), hash
them for the build cache, and stage them in a directory laid out as their final paths in the
image, which the builder then packs as one layer.

Docker's rules: sources are relative to the context (a leading / too) and may be globs; a
directory source copies its contents; the destination is a directory ("into") when it ends in /
or is ".", when there are several sources, or when the image already has a directory there; a
relative destination is relative to WORKDIR. Files from the context are owned by 0:0 unless
--chown; ADD extracts a local tar (plain, gzip, bzip2, xz) with its owners.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, ImageError
from ..images import layers
from .image_view import ImageView

_GLOB = set("*?[")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    name: str    # the name it is copied as: the last component of the path as matched in the context
    path: Path   # where the data really is (symlinks resolved), inside the context


# ---------------------------------------------------------------- finding sources

def inside_context(context: Path, rel: str, cmd: str = "COPY", where: str = "Dockerfile") -> Path:
    """The real path of context-relative `rel`, refusing '..' escapes and symlinks (at any depth
    of the path) that resolve outside the context. Raises BuildError naming `where`."""
    ctx = os.path.realpath(context)
    norm = posixpath.normpath(rel.lstrip("/") or ".")
    real = os.path.realpath(os.path.join(ctx, norm))
    if norm == ".." or norm.startswith("../") or not (real == ctx or real.startswith(ctx.rstrip("/") + "/")):
        raise BuildError(f"{where}: {cmd} may not read outside the build context",
                         f"{rel!r} resolves to {real}, which is not under {ctx}",
                         "Put the file into the context directory and copy it from there")
    return Path(real)


def resolve_sources(context: Path, cmd: str, srcs: tuple[str, ...], where: str) -> list[Source]:
    """Expand globs and check every source; a source that matches nothing is an error."""
    ctx = os.path.realpath(context)
    out: list[Source] = []
    for src in srcs:
        if "://" in src or src.startswith("git@"):
            raise BuildError(f"{where}: {cmd} from a URL ({src}) is not supported",
                             "netdiag builds offline, from the build context only",
                             "Download the file into the context first, then COPY it")
        rel = posixpath.normpath(src.lstrip("/") or ".")
        if _GLOB & set(rel) and not (rel == ".." or rel.startswith("../")):
            matches = sorted(glob.glob(rel, root_dir=ctx, include_hidden=True))
            if not matches:
                raise BuildError(f"{where}: {cmd} source {src!r} matches no file in the build context",
                                 f"the context is {ctx}", "Check the pattern and the context directory")
        else:
            matches = [rel]
        for m in matches:
            real = inside_context(Path(ctx), m, cmd, where)
            if not real.exists():
                raise BuildError(f"{where}: {cmd} source {src!r} not found in the build context",
                                 f"there is no {os.path.join(ctx, m)}",
                                 "Check the name; sources are relative to the context directory")
            out.append(Source(posixpath.basename(m) if m != "." else "", real))
    return out


def sources_digest(context: Path, sources: list[Source]) -> str:
    """What the build cache keys a COPY/ADD on: the sources' names, types, modes and contents
    (not their mtimes or owners, which Docker ignores too)."""
    ctx = os.path.realpath(context)
    h = hashlib.sha256()
    for src in sources:
        h.update(f"source\0{src.name}\0{os.path.relpath(src.path, ctx)}\0".encode())
        _hash_entry(h, str(src.path), "", os.stat(src.path))
    return "sha256:" + h.hexdigest()


def _hash_entry(h, path: str, name: str, st: os.stat_result) -> None:
    mode = st.st_mode
    h.update(f"{name}\0{stat.S_IFMT(mode):o}\0{stat.S_IMODE(mode):o}\0".encode())
    if stat.S_ISLNK(mode):
        h.update(os.readlink(path).encode() + b"\0")
    elif stat.S_ISREG(mode):
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        h.update(b"\0")
    elif stat.S_ISDIR(mode):
        for entry in sorted(os.listdir(path)):
            child = os.path.join(path, entry)
            _hash_entry(h, child, f"{name}/{entry}", os.lstat(child))


# ---------------------------------------------------------------- --chown

def parse_chown(spec: str, view: ImageView, where: str) -> tuple[int, int]:
    """USER[:GROUP] as numbers; names are looked up in the image's /etc/passwd and /etc/group.
    Without a group, the gid is the uid (Docker's documented rule)."""
    user, _, group = spec.partition(":")
    uid = _id_of(user, view, "/etc/passwd", where)
    gid = _id_of(group, view, "/etc/group", where) if group else uid
    return uid, gid


def _id_of(name: str, view: ImageView, table: str, where: str) -> int:
    if name.isdigit():
        return int(name)
    for line in (view.read_text(table) or "").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    kind = "user" if table.endswith("passwd") else "group"
    raise BuildError(f"{where}: --chown: unable to find {kind} {name!r}",
                     f"the image's {table} has no entry for it", "Use a numeric id, e.g. --chown=1000:1000")


# ---------------------------------------------------------------- staging

class Stager:
    """Lays sources out under `root` at their final image paths."""

    def __init__(self, root: Path, view: ImageView, owner: tuple[int, int] | None):
        self.root, self.view, self.owner = root, view, owner
        self.chown = os.geteuid() == 0

    def dest_paths(self, cmd: str, dest: str, workdir: str, n_sources: int, where: str):
        """(directory components, into?) for `dest`, symlinks in the image resolved."""
        if not dest.startswith("/"):
            dest = posixpath.join(workdir or "/", dest)
        into = dest.endswith("/") or posixpath.basename(dest) in (".", "..")
        resolved = self.view.resolve(dest)
        if into or self.view.is_dir(resolved):
            return resolved, True
        if n_sources > 1:
            raise BuildError(f"{where}: when using {cmd} with more than one source file, "
                             "the destination must be a directory and end with a /", fix=f'Write "{dest}/"')
        return self.view.resolve(posixpath.dirname(dest)) + (posixpath.basename(dest),), False

    def add(self, cmd: str, src: Source, target: tuple[str, ...], into: bool, tmp: Path, where: str) -> None:
        if cmd == "ADD" and src.path.is_file():
            plain = _plain_tar(src.path, tmp / "add.tar")
            if plain is not None:
                extracted = tmp / "add"
                try:
                    layers.extract_layer(plain, extracted)
                except ImageError as e:
                    raise BuildError(f"{where}: ADD cannot extract {src.name}", e.why or e.what, e.fix) from None
                try:
                    self._tree(str(extracted), self.dir(target), preserve_owner=True)
                finally:
                    shutil.rmtree(extracted, ignore_errors=True)
                    (tmp / "add.tar").unlink(missing_ok=True)
                return
        if src.path.is_dir():
            self._tree(str(src.path), self.dir(target), preserve_owner=False)
            return
        parts = target + (src.name,) if into else target
        parent = self.dir(parts[:-1])
        self._file(str(src.path), os.path.join(parent, parts[-1]), os.stat(src.path), preserve_owner=False)

    def dir(self, parts: tuple[str, ...]) -> str:
        """Make the staged directory `parts`, each level with the image's metadata if the image
        has it (so the layer does not change it), else 0755 owned by --chown or root."""
        cur = str(self.root)
        for i in range(len(parts)):
            cur = os.path.join(cur, parts[i])
            st = os.lstat(cur) if os.path.lexists(cur) else None
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            if st is not None:
                os.unlink(cur)
            os.mkdir(cur)
            existing = self.view.lstat(parts[:i + 1])
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                self._meta(cur, existing.st_uid, existing.st_gid, existing.st_mode)
            else:
                uid, gid = self.owner or (0, 0)
                self._meta(cur, uid, gid, 0o755)
        return cur

    def _meta(self, path: str, uid: int, gid: int, mode: int, *, link: bool = False) -> None:
        if self.chown:  # before chmod: chown clears setuid/setgid
            os.lchown(path, uid, gid)
        if not link:
            os.chmod(path, stat.S_IMODE(mode))

    def _owner(self, st: os.stat_result, preserve_owner: bool) -> tuple[int, int]:
        if self.owner:
            return self.owner
        return (st.st_uid, st.st_gid) if preserve_owner else (0, 0)

    def _clear(self, path: str, keep_dir: bool = False) -> None:
        if not os.path.lexists(path):
            return
        if stat.S_ISDIR(os.lstat(path).st_mode):
            if not keep_dir:
                shutil.rmtree(path)
        else:
            os.unlink(path)

    def _file(self, src: str, dst: str, st: os.stat_result, preserve_owner: bool) -> None:
        self._clear(dst)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dst)
        elif stat.S_ISREG(mode):
            shutil.copyfile(src, dst, follow_symlinks=False)
        else:
            return  # devices, sockets and whiteouts have no place in a COPY layer
        self._meta(dst, *self._owner(st, preserve_owner), mode, link=stat.S_ISLNK(mode))

    def _tree(self, src: str, dst: str, preserve_owner: bool) -> None:
        """Copy the contents of directory src into the existing staged directory dst."""
        for name in sorted(os.listdir(src)):
            s, d = os.path.join(src, name), os.path.join(dst, name)
            st = os.lstat(s)
            if stat.S_ISDIR(st.st_mode):
                self._clear(d, keep_dir=True)
                if not os.path.isdir(d):
                    os.mkdir(d)
                self._tree(s, d, preserve_owner)
                self._meta(d, *self._owner(st, preserve_owner), st.st_mode)
            else:
                self._file(s, d, st, preserve_owner)


def _plain_tar(src: Path, out: Path) -> Path | None:
    """src as an uncompressed tar (decompressed to `out` if needed), or None if it is no tar:
    ADD copies such a file as it is, like Docker."""
    with open(src, "rb") as f:
        head = f.read(6)
    opener = (gzip.open if head[:2] == b"\x1f\x8b" else bz2.open if head[:3] == b"BZh"
              else lzma.open if head == b"\xfd7zXZ\x00" else None)
    plain = src
    if opener is not None:
        try:
            with opener(src, "rb") as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
        except (OSError, EOFError, lzma.LZMAError):
            out.unlink(missing_ok=True)
            return None
        plain = out
    try:
        with tarfile.open(plain, "r:") as tf:
            tf.next()
    except (tarfile.TarError, OSError):
        out.unlink(missing_ok=True)
        return None
    return plain
