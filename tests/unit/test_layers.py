import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from runtime.errors import ImageError, UnsafeArchive
from runtime.images.layers import extract_layer, file_digest, tar_directory


def member(name, type_=tarfile.REGTYPE, data=b"", linkname="", mode=0o644, mtime=1_600_000_000,
           uid=0, gid=0, dev=(0, 0)):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = type_, mode, mtime, uid, gid
    ti.linkname = linkname
    ti.devmajor, ti.devminor = dev
    if type_ == tarfile.DIRTYPE and mode == 0o644:
        ti.mode = 0o755
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    return ti, (io.BytesIO(data) if type_ == tarfile.REGTYPE else None)


def make_tar(path: Path, members) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for ti, f in members:
            tf.addfile(ti, f)
    return path


@pytest.fixture
def layout(tmp_path):
    """dest to extract into, and a sentinel directory beside it that must stay empty."""
    outside = tmp_path / "outside"
    outside.mkdir()
    return tmp_path / "dest", outside


def assert_refused(tmp_path, dest, outside, members, match=None):
    tar = make_tar(tmp_path / "layer.tar", [member("ok.txt", data=b"fine")] + members)
    with pytest.raises(UnsafeArchive, match=match) as exc:
        extract_layer(tar, dest)
    assert "layer.tar" in str(exc.value)
    assert not dest.exists(), "a refused layer must leave nothing half-extracted"
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.tar", "outside"]


# --- hostile layers ---------------------------------------------------------------------------


def test_refuses_dotdot_name(tmp_path, layout):
    dest, outside = layout
    assert_refused(tmp_path, dest, outside, [member("../outside/escape", data=b"x")], match="'\\.\\.'")


def test_refuses_dotdot_inside_name(tmp_path, layout):
    dest, outside = layout
    assert_refused(tmp_path, dest, outside, [member("a/../../outside/escape", data=b"x")])


def test_refuses_absolute_name(tmp_path, layout):
    dest, outside = layout
    # An absolute path into the sentinel: a naive dest / name join would land exactly there.
    assert_refused(tmp_path, dest, outside, [member(str(outside / "evil"), data=b"x")], match="absolute")


def test_refuses_write_through_absolute_symlink(tmp_path, layout):
    dest, outside = layout
    assert_refused(tmp_path, dest, outside, [
        member("lib", tarfile.SYMTYPE, linkname=str(outside)),
        member("lib/evil", data=b"x"),
    ], match="symlink")


def test_refuses_write_through_relative_symlink(tmp_path, layout):
    dest, outside = layout
    assert_refused(tmp_path, dest, outside, [
        member("up", tarfile.SYMTYPE, linkname=".."),
        member("up/outside/evil", data=b"x"),
    ], match="symlink")


def test_refuses_hardlink_to_absolute_path(tmp_path, layout):
    dest, outside = layout
    links_before = os.stat("/etc/passwd").st_nlink
    assert_refused(tmp_path, dest, outside, [member("passwd", tarfile.LNKTYPE, linkname="/etc/passwd")],
                   match="absolute")
    assert os.stat("/etc/passwd").st_nlink == links_before


def test_refuses_hardlink_via_dotdot(tmp_path, layout):
    dest, outside = layout
    secret = tmp_path / "secret"
    secret.write_text("s")
    tar = make_tar(tmp_path / "layer.tar", [member("s", tarfile.LNKTYPE, linkname="../secret")])
    with pytest.raises(UnsafeArchive, match="'\\.\\.'"):
        extract_layer(tar, dest)
    assert not dest.exists()
    assert list(outside.iterdir()) == []
    assert secret.stat().st_nlink == 1


def test_refuses_hardlink_through_symlink(tmp_path, layout):
    dest, outside = layout
    (outside / "target").write_text("t")
    tar = make_tar(tmp_path / "layer.tar", [
        member("out", tarfile.SYMTYPE, linkname=str(outside)),
        member("h", tarfile.LNKTYPE, linkname="out/target"),
    ])
    with pytest.raises(UnsafeArchive, match="symlink"):
        extract_layer(tar, dest)
    assert not dest.exists()
    assert (outside / "target").stat().st_nlink == 1


def test_refuses_char_device(tmp_path, layout):
    dest, outside = layout
    assert_refused(tmp_path, dest, outside, [member("dev/mem", tarfile.CHRTYPE, dev=(1, 1))],
                   match="device node")


def test_refuses_block_device(tmp_path, layout):
    dest, outside = layout
    assert_refused(tmp_path, dest, outside, [member("dev/sda", tarfile.BLKTYPE, dev=(8, 0))],
                   match="device node")


def test_refuses_whiteout_naming_parent(tmp_path, layout):
    dest, outside = layout
    assert_refused(tmp_path, dest, outside, [member("a/.wh...")])


def test_never_writes_through_symlink_at_the_target(tmp_path, layout):
    dest, outside = layout
    victim = outside / "victim"
    tar = make_tar(tmp_path / "layer.tar", [
        member("x", tarfile.SYMTYPE, linkname=str(victim)),
        member("x", data=b"overwritten"),
    ])
    extract_layer(tar, dest)
    assert not victim.exists()
    assert not (dest / "x").is_symlink()
    assert (dest / "x").read_bytes() == b"overwritten"


def test_corrupt_tar_is_image_error_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.tar"
    good = make_tar(tmp_path / "good.tar", [member("a", data=b"x" * 5000)])
    bad.write_bytes(good.read_bytes()[:1024])  # header plus a truncated body
    with pytest.raises(ImageError):
        extract_layer(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_refuses_non_empty_dest_without_touching_it(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep").write_text("k")
    tar = make_tar(tmp_path / "layer.tar", [member("a", data=b"x")])
    with pytest.raises(ImageError, match="not an empty directory"):
        extract_layer(tar, dest)
    assert (dest / "keep").read_text() == "k"


# --- normal layers ----------------------------------------------------------------------------


def test_extracts_normal_tree_with_absolute_symlinks(tmp_path):
    dest = tmp_path / "dest"
    tar = make_tar(tmp_path / "layer.tar", [
        member("./", tarfile.DIRTYPE, mode=0o755),
        member("./bin", tarfile.DIRTYPE, mode=0o755, mtime=1000),
        member("./bin/busybox", data=b"\x7fELF", mode=0o755),
        member("./bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox"),
        member("etc/secret", tarfile.DIRTYPE, mode=0o500, mtime=2000),
        member("etc/secret/key", data=b"k", mode=0o400),
        member("usr/lib/libc.so", data=b"c"),  # parents not in the tar
        member("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    ])
    extract_layer(tar, dest)
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert (dest / "bin/busybox").read_bytes() == b"\x7fELF"
    assert stat.S_IMODE(os.stat(dest / "bin/busybox").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "etc/secret").st_mode) == 0o500
    assert stat.S_IMODE(os.stat(dest / "etc/secret/key").st_mode) == 0o400
    # Directory mtimes are the layer's, not the time their children were written.
    assert os.stat(dest / "bin").st_mtime == 1000
    assert os.stat(dest / "etc/secret").st_mtime == 2000
    assert stat.S_IMODE(os.stat(dest / "usr/lib").st_mode) == 0o755
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)


def test_hardlink_inside_layer_shares_inode(tmp_path):
    dest = tmp_path / "dest"
    tar = make_tar(tmp_path / "layer.tar", [
        member("bin/busybox", data=b"bb", mode=0o755),
        member("bin/ls", tarfile.LNKTYPE, linkname="./bin/busybox"),
    ])
    extract_layer(tar, dest)
    assert os.stat(dest / "bin/ls").st_ino == os.stat(dest / "bin/busybox").st_ino
    assert os.stat(dest / "bin/busybox").st_nlink == 2


def test_later_member_replaces_earlier(tmp_path):
    dest = tmp_path / "dest"
    tar = make_tar(tmp_path / "layer.tar", [
        member("d/f", data=b"old"),
        member("d", tarfile.DIRTYPE, mode=0o700),
        member("d/f", data=b"new"),
        member("e/sub/f", data=b"x"),
        member("e", data=b"now a file"),
    ])
    extract_layer(tar, dest)
    assert (dest / "d/f").read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(dest / "d").st_mode) == 0o700
    assert (dest / "e").read_bytes() == b"now a file"


# --- packing ----------------------------------------------------------------------------------


def build_tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin/busybox").write_bytes(b"\x7fELF" * 100)
    os.chmod(root / "bin/busybox", 0o755)
    os.link(root / "bin/busybox", root / "bin/ls")
    os.symlink("/bin/busybox", root / "bin/sh")
    os.symlink("../nowhere", root / "dangling")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.chmod(root / "etc/passwd", 0o600)
    (root / "empty").mkdir()
    os.chmod(root / "empty", 0o700)


def test_tar_directory_is_deterministic(tmp_path):
    src = tmp_path / "src"
    build_tree(src)
    d1 = tar_directory(src, tmp_path / "a.tar")
    for p in [src / "bin/busybox", src / "etc", src / "etc/passwd"]:
        os.utime(p, (12345, 12345))
    os.utime(src / "bin/sh", (999, 999), follow_symlinks=False)
    d2 = tar_directory(src, tmp_path / "b.tar")
    assert d1 == d2 == file_digest(tmp_path / "a.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert d1.startswith("sha256:") and len(d1) == 7 + 64
    with tarfile.open(tmp_path / "a.tar") as tf:
        names = tf.getnames()
        assert names == ["bin", "bin/busybox", "bin/ls", "bin/sh", "dangling", "empty", "etc", "etc/passwd"]
        assert all(m.mtime == 0 and m.uname == "" and m.gname == "" for m in tf)
        assert tf.getmember("bin/ls").islnk() and tf.getmember("bin/ls").linkname == "bin/busybox"


def test_round_trip_preserves_modes_links_and_hardlinks(tmp_path):
    src = tmp_path / "src"
    build_tree(src)
    tar_directory(src, tmp_path / "l.tar")
    dest = tmp_path / "dest"
    extract_layer(tmp_path / "l.tar", dest)
    for rel in ["bin", "bin/busybox", "etc/passwd", "empty"]:
        assert os.lstat(dest / rel).st_mode == os.lstat(src / rel).st_mode, rel
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert os.readlink(dest / "dangling") == "../nowhere"
    assert os.stat(dest / "bin/ls").st_ino == os.stat(dest / "bin/busybox").st_ino
    assert (dest / "bin/ls").read_bytes() == b"\x7fELF" * 100
    # Re-packing the extracted tree gives the same layer.
    assert tar_directory(dest, tmp_path / "again.tar") == file_digest(tmp_path / "l.tar")


