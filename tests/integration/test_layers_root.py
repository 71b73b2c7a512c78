"""Layer extraction and packing where only root can look: ownership, setuid bits, device nodes,
overlay whiteouts (mknod, lchown, trusted.* xattrs). The pure rules are in tests/unit/test_layers.py."""
import os
import stat
import tarfile
import pytest

from runtime.images.layers import extract_layer, tar_directory
from tests.unit.test_layers import make_tar, member

pytestmark = pytest.mark.integration


def test_ownership_and_setuid_kept(tmp_path):
    dest = tmp_path / "dest"
    tar = make_tar(tmp_path / "layer.tar", [
        member("bin/su", data=b"su", mode=0o4755, uid=0, gid=0),
        member("home/u", tarfile.DIRTYPE, mode=0o700, uid=1234, gid=5678),
        member("home/u/link", tarfile.SYMTYPE, linkname="/nowhere", uid=1234, gid=5678),
    ])
    extract_layer(tar, dest)
    assert stat.S_IMODE(os.stat(dest / "bin/su").st_mode) == 0o4755
    st = os.stat(dest / "home/u")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    st = os.lstat(dest / "home/u/link")
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_oci_whiteouts_become_overlay_whiteouts(tmp_path):
    dest = tmp_path / "dest"
    tar = make_tar(tmp_path / "layer.tar", [
        member("etc", tarfile.DIRTYPE),
        member("etc/.wh.motd"),
        member("var/cache/.wh..wh..opq"),
        member(".wh.tmp"),
    ])
    extract_layer(tar, dest)
    for p in (dest / "etc/motd", dest / "tmp"):
        st = os.lstat(p)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.motd").exists()
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert list((dest / "var/cache").iterdir()) == []


def test_overlay_upper_whiteouts_become_wh_members(tmp_path):
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc/motd", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (upper / "var/cache").mkdir(parents=True)
    (upper / "var/cache/new").write_text("n")
    os.setxattr(upper / "var/cache", "trusted.overlay.opaque", b"y")
    tar_directory(upper, tmp_path / "u.tar", overlay_upper=True)
    with tarfile.open(tmp_path / "u.tar") as tf:
        assert tf.getnames() == ["etc", "etc/.wh.motd", "var", "var/cache", "var/cache/.wh..wh..opq",
                                 "var/cache/new"]
        assert tf.getmember("etc/.wh.motd").isreg() and tf.getmember("etc/.wh.motd").size == 0
    # And back: the layer recreates the overlay whiteout and the opaque directory.
    dest = tmp_path / "dest"
    extract_layer(tmp_path / "u.tar", dest)
    assert os.lstat(dest / "etc/motd").st_rdev == 0 and stat.S_ISCHR(os.lstat(dest / "etc/motd").st_mode)
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque") == b"y"
    assert not (dest / "null").exists()


def test_tar_directory_without_overlay_upper_skips_devices(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    os.mknod(src / "wh", stat.S_IFCHR, os.makedev(0, 0))
    tar_directory(src, tmp_path / "o.tar")
    with tarfile.open(tmp_path / "o.tar") as tf:
        assert tf.getnames() == ["f"]
