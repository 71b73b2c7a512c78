"""runtime/fsroot.py: paths inside a root resolve inside it, whatever its symlinks say, through
openat2(RESOLVE_IN_ROOT) and through the fallback walk alike."""
import errno
import os

import pytest

from runtime import bounded, fsroot


@pytest.fixture(params=["openat2", "walk"])
def mode(request, monkeypatch):
    monkeypatch.setattr(fsroot, "_openat2_ok", None if request.param == "openat2" else False)
    if request.param == "openat2":  # the kernel must really have it, or this case proves nothing
        fd = os.open("/", os.O_PATH)
        try:
            os.close(fsroot._openat2(fd, "tmp", os.O_PATH))
        except OSError as e:
            pytest.skip(f"no openat2 here ({e.strerror})")
        finally:
            os.close(fd)
    return request.param


@pytest.fixture
def tree(tmp_path):
    """root/ (the image) and host/ beside it (must stay untouched)."""
    root, host = tmp_path / "root", tmp_path / "host"
    (root / "real" / "sub").mkdir(parents=True)
    host.mkdir()
    (host / "secret").write_text("host\n")
    return root, host


def _where(root, fd) -> str:
    """What an O_PATH descriptor names, relative to root ('.' for the root itself)."""
    target = os.readlink(fsroot.fd_path(fd))
    os.close(fd)
    return os.path.relpath(target, root)


def _open(root, path, **kw):
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        return fsroot.open_in_root(rfd, path, **kw)
    finally:
        os.close(rfd)


@pytest.mark.parametrize("link", ["HOST", "../../HOST", "../../../../../../HOST/../host"])
def test_links_out_of_the_root_resolve_inside_it(mode, tree, link):
    root, host = tree
    target = link.replace("HOST", str(host)) if link.startswith("HOST") else link.replace("HOST", str(host).lstrip("/"))
    os.symlink(target, root / "etc")
    fd = _open(root, "/etc/hosts/..", mkdir_mode=0o755)  # /etc/hosts made as a directory, then its parent
    where = _where(root, fd)
    assert not where.startswith("..")  # inside the root
    assert os.listdir(host) == ["secret"]  # nothing made on the host


def test_missing_directories_are_made_inside_the_root_through_a_dangling_link(mode, tree):
    root, host = tree
    os.symlink(str(host / "dev"), root / "dev")  # dangling, and absolute: means <root>/<host>/dev
    fd = _open(root, "/dev/pts", mkdir_mode=0o755)
    assert _where(root, fd) == os.path.join(str(host).lstrip("/"), "dev", "pts")
    assert not (host / "dev").exists()


def test_dotdot_stops_at_the_root_and_links_chain(mode, tree):
    root, _ = tree
    os.symlink("real", root / "a")
    os.symlink("/a/sub", root / "b")
    assert _where(root, _open(root, "/b")) == "real/sub"
    assert _where(root, _open(root, "../../../b/../../..")) == "."
    assert _where(root, _open(root, "b", follow_last=False)) == "b"  # the link itself


def test_loops_not_directories_and_missing_paths_fail(mode, tree):
    root, _ = tree
    os.symlink("loop", root / "loop")
    (root / "file").write_text("x")
    with pytest.raises(OSError) as e:
        _open(root, "/loop/x", mkdir_mode=0o755)
    assert e.value.errno == errno.ELOOP
    with pytest.raises(NotADirectoryError):
        _open(root, "/file/x", mkdir_mode=0o755)
    with pytest.raises(FileNotFoundError):
        _open(root, "/nothing/here")


def test_resolve_over_a_lookup_never_leaves_the_root():
    links = {("etc",): "/host/etc", ("host", "etc"): "../../../../real", ("bin",): "usr/bin"}
    look = links.get
    assert fsroot.resolve("/etc/passwd", look) == ("real", "passwd")
    assert fsroot.resolve("/bin/sh", look) == ("usr", "bin", "sh")
    assert fsroot.resolve("/bin", look, follow_last=False) == ("bin",)
    with pytest.raises(OSError):
        fsroot.resolve("/x", {("x",): "/x"}.get)


def test_a_file_of_a_container_is_read_inside_its_root_and_bounded(mode, tmp_path):
    """What netdiag reads of a container (resolv.conf, hosts): a link to the host's /etc/hostname
    gives the container's own, a FIFO is refused without blocking, a huge file is refused."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("inside\n")
    os.symlink("/etc/hostname", root / "etc" / "resolv.conf")
    os.symlink("../../../../../../etc/hostname", root / "etc" / "hosts")
    os.mkfifo(root / "etc" / "fifo")
    (root / "etc" / "big").write_bytes(b"#" * 5000)
    assert fsroot.read_in_root(str(root), "/etc/resolv.conf", 100) == b"inside\n"
    assert fsroot.read_in_root(str(root), "/etc/hosts", 100) == b"inside\n"
    for path, says in (("/etc/fifo", "is a FIFO"), ("/etc/big", "larger than"), ("/etc", "is a directory"),
                       ("/etc/none", "No such file")):
        with pytest.raises(bounded.Refused, match=says):
            fsroot.read_in_root(str(root), path, 4096)
