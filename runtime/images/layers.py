"""Layer tars in and out: extraction that refuses hostile archives, and deterministic packing.

Layers come from registries and build steps we do not trust, and the extracted tree is used
as an overlayfs lowerdir, so a layer must never write, link or create a device outside it.
"""
import errno
import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path

from ..errors import ImageError, UnsafeArchive

CHUNK = 1 << 20
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# --- extraction -------------------------------------------------------------------------------


def extract_layer(tar_path: Path, dest: Path, name: str | None = None) -> None:
    """Extract an uncompressed layer tar into the fresh directory `dest`. Errors call the layer
    `name` (what the user knows it as, e.g. "layer abc123 of image.tar") instead of its path.

    On any failure `dest` is removed entirely, so callers never see a half-extracted layer.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    name = name or f"Layer {tar_path}"
    try:
        tf = tarfile.open(tar_path, "r:")
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"Cannot read {name}", str(exc), "Pull or build the image again") from exc
    with tf:
        _make_fresh_dir(dest)
        extractor = _Extractor(name, dest)
        try:
            for member in tf:
                extractor.add(member, tf)
            extractor.finish()
        except BaseException as exc:
            shutil.rmtree(dest, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # not the layer's fault: the caller names the full filesystem (state.DiskFull)
            if isinstance(exc, ImageError) or not isinstance(
                exc, (OSError, tarfile.TarError, ValueError, OverflowError)
            ):
                raise
            raise ImageError(
                f"Cannot extract {name}",
                f"Member {extractor.current!r}: {exc}",
                "The layer may be corrupt (pull it again); whiteouts need root",
            ) from exc


def _make_fresh_dir(dest: Path) -> None:
    try:
        dest.mkdir(parents=True)
        return
    except FileExistsError:
        pass
    st = os.lstat(dest)
    if not stat.S_ISDIR(st.st_mode) or any(os.scandir(dest)):
        # Not ours to remove, so refuse before touching it.
        raise ImageError(f"Cannot extract a layer into {dest}", "It exists and is not an empty directory",
                         "Remove it first")


class _Extractor:
    def __init__(self, name: str, dest: Path):
        self.name, self.dest = name, dest
        self.current = ""
        # Directory metadata is applied last: writing children would otherwise bump mtimes, and
        # a read-only mode would stop an unprivileged extraction from writing the children at all.
        self.dir_meta: dict[tuple[str, ...], tarfile.TarInfo] = {}
        # Without root, chown to the layer's owners fails; like tar, keep our own ownership then.
        self.chown = os.geteuid() == 0

    def refuse(self, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.name}: member {self.current!r} refused", why,
                             "The image is malformed or hostile; do not use it")

    def parts(self, name: str) -> tuple[str, ...]:
        """The components of a member or hardlink name, checked to stay inside dest."""
        if not name or "\0" in name:
            raise self.refuse("Its name is empty or contains NUL")
        if name.startswith("/"):
            raise self.refuse(f"{name!r} is an absolute path")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self.refuse(f"{name!r} contains '..'")
        return parts

    def parent(self, parts: tuple[str, ...], create: bool = True) -> Path:
        """The real directory holding parts[-1], reached without passing through any symlink.

        Missing directories are created (0755) unless create is False, when they are refused.
        """
        cur = self.dest
        for comp in parts[:-1]:
            cur = cur / comp
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                if not create:
                    raise self.refuse(f"{'/'.join(parts)!r} is not in the layer") from None
                os.mkdir(cur)
                os.chmod(cur, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self.refuse(f"Its path goes through the symlink {cur.relative_to(self.dest)}")
            if not stat.S_ISDIR(st.st_mode):
                raise ImageError(f"{self.name}: member {self.current!r} cannot be created",
                                 f"{cur.relative_to(self.dest)} is not a directory", "Rebuild the image")
        return cur

    def clear(self, parts: tuple[str, ...], path: Path, keep_dir: bool = False) -> bool:
        """Remove what sits at path (a layer overwrites); return True if a directory was kept."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return False
        if keep_dir:
            return True
        shutil.rmtree(path)
        n = len(parts)
        for key in [k for k in self.dir_meta if k[:n] == parts]:
            del self.dir_meta[key]
        return False

    def add(self, m: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        self.current = m.name
        parts = self.parts(m.name)
        if not parts:
            if not m.isdir():
                raise self.refuse("Only a directory may stand for the layer root")
            self.dir_meta[()] = m
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            self.whiteout(parts, m)
            return
        if m.ischr() or m.isblk():
            raise self.refuse("It is a device node")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise self.refuse(f"Its tar type {m.type!r} is not supported")

        path = self.parent(parts) / base
        if m.isdir():
            if not self.clear(parts, path, keep_dir=True):
                os.mkdir(path, 0o700)
            self.dir_meta[parts] = m
            return
        if m.islnk():
            # Validate the target before removing anything, so a bad link cannot delete files.
            target = self.link_target(m.linkname)
            self.clear(parts, path)
            os.link(target, path, follow_symlinks=False)
            return  # a hardlink shares its target's inode and so its metadata
        self.clear(parts, path)
        if m.issym():
            os.symlink(m.linkname, path)
        elif m.isfifo():
            os.mkfifo(path, 0o600)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out, tf.extractfile(m) as src:
                shutil.copyfileobj(src, out, CHUNK)
        self.set_meta(path, m)

    def link_target(self, linkname: str) -> Path:
        parts = self.parts(linkname)
        if not parts:
            raise self.refuse("Its hardlink points at the layer root")
        target = self.parent(parts, create=False) / parts[-1]
        try:
            os.lstat(target)
        except FileNotFoundError:
            raise self.refuse(f"Its hardlink target {linkname!r} is not in the layer") from None
        return target

    def whiteout(self, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        base = parts[-1]
        if base == OPAQUE:
            # Opaque: hide everything lower layers have in this directory.
            os.setxattr(self.parent(parts), OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # reserved for aufs bookkeeping (.wh..wh.plnk etc.); nothing to create
        name = base[len(WHITEOUT):]
        if name in ("", ".", ".."):
            raise self.refuse("Its whiteout names no entry")
        target_parts = parts[:-1] + (name,)
        path = self.parent(parts) / name
        self.clear(target_parts, path)
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        if self.chown:
            os.lchown(path, m.uid, m.gid)

    def set_meta(self, path: Path, m: tarfile.TarInfo) -> None:
        # chown before chmod: chown clears setuid/setgid bits.
        if self.chown:
            os.lchown(path, m.uid, m.gid)
        if not m.issym():
            os.chmod(path, m.mode & 0o7777)
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def finish(self) -> None:
        # Deepest first, so a directory made read-only does not block its subdirectories.
        for parts in sorted(self.dir_meta, key=len, reverse=True):
            self.current = self.dir_meta[parts].name
            path = self.dest.joinpath(*parts)
            if stat.S_ISDIR(os.lstat(path).st_mode):
                self.set_meta(path, self.dir_meta[parts])


# --- packing ----------------------------------------------------------------------------------


class _HashingWriter:
    """Hashes bytes as tarfile writes them, so a big layer is not read back to digest it."""

    def __init__(self, f):
        self.f, self.h, self.pos = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.h.update(data)
        self.pos += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.pos


def tar_directory(src: Path, out_path: Path, *, overlay_upper: bool = False) -> str:
    """Write a deterministic tar of src's contents to out_path and return its "sha256:<hex>".

    Same tree (names, contents, modes, owners, links) -> same bytes: names are sorted, mtimes
    are 0, user/group names are empty, and the format is always PAX. With overlay_upper, src is
    an overlayfs upperdir whose whiteouts and opaque directories become OCI `.wh.` members.
    """
    src, out_path = Path(src), Path(out_path)
    try:
        with open(out_path, "wb") as f:
            writer = _HashingWriter(f)
            with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT) as tf:
                _Packer(tf, overlay_upper).walk(str(src), "")
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return "sha256:" + writer.h.hexdigest()


class _Packer:
    def __init__(self, tf: tarfile.TarFile, overlay_upper: bool):
        self.tf, self.overlay_upper = tf, overlay_upper
        self.seen: dict[tuple[int, int], str] = {}  # (dev, ino) -> first member name

    @staticmethod
    def info(name: str, st: os.stat_result, type_: bytes) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = 0
        return ti

    def walk(self, directory: str, prefix: str) -> None:
        if self.overlay_upper and is_opaque(directory):
            ti = self.info(prefix + OPAQUE, os.lstat(directory), tarfile.REGTYPE)
            ti.mode &= 0o777
            self.tf.addfile(ti)
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            self.add(path, prefix + name, os.lstat(path))

    def add(self, path: str, name: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.tf.addfile(self.info(name, st, tarfile.DIRTYPE))
            self.walk(path, name + "/")
        elif stat.S_ISLNK(mode):
            ti = self.info(name, st, tarfile.SYMTYPE)
            ti.linkname = os.readlink(path)
            self.tf.addfile(ti)
        elif stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in self.seen:
                    ti = self.info(name, st, tarfile.LNKTYPE)
                    ti.linkname = self.seen[key]
                    self.tf.addfile(ti)
                    return
                self.seen[key] = name
            if stat.S_ISFIFO(mode):
                self.tf.addfile(self.info(name, st, tarfile.FIFOTYPE))
                return
            ti = self.info(name, st, tarfile.REGTYPE)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                ti.size = os.fstat(f.fileno()).st_size
                self.tf.addfile(ti, f)
        elif stat.S_ISCHR(mode) and st.st_rdev == 0 and self.overlay_upper:
            head, _, base = name.rpartition("/")
            ti = self.info((head + "/" if head else "") + WHITEOUT + base, st, tarfile.REGTYPE)
            ti.mode &= 0o777
            self.tf.addfile(ti)
        # Other devices and sockets have no place in a layer (extraction refuses devices): skip.


def is_opaque(directory) -> bool:
    """Whether overlayfs marks `directory` opaque (it hides the lower layers' entries)."""
    try:
        return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        # Unprivileged processes cannot see trusted.* xattrs at all; that reads as "not opaque".
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
            return False
        raise
