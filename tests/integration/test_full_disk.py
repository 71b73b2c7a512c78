"""A full disk loses nothing: with NETDIAG_ROOT on a small tmpfs (mounted for the test at a temp
path and unmounted afterwards, also on failure), every command that stores something ends with one
clear error naming the state directory and its free space, keeps nothing half-written, and a
container whose output fills the disk keeps its monitor and its real exit code."""
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.labkit import World, wait_for

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _lab_on_tmpfs(tmp_path: Path, size: str):
    root = tmp_path / "ndroot"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "netdiag-fulltest", str(root)], check=True)
    w = World(state_dir=root)
    try:
        w.create()
        yield w
    finally:
        w.destroy()  # kills what the records name, empties the state dir (the mount point stays)
        if subprocess.run(["umount", str(root)]).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], check=True)
        root.rmdir()
    assert not w.leaks(), f"left behind: {w.leaks()}"


@pytest.fixture
def small(tmp_path):
    """A lab whose state directory is a 3 MB filesystem: too small for the built-in image."""
    with _lab_on_tmpfs(tmp_path, "3m") as w:
        yield w


@pytest.fixture
def roomy(tmp_path):
    """A lab whose state directory is a 32 MB filesystem holding the built-in image; tests fill
    the rest with a ballast file."""
    with _lab_on_tmpfs(tmp_path, "32m") as w:
        w.ok("run", "--rm", "--network", "none", "busybox", "true")
        yield w


def _free(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


def _fill(root: Path, leave: int, name: str = "ballast") -> Path:
    """A file taking all but `leave` bytes of the state directory's filesystem."""
    p = root / name
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(_free(root) - leave, 4096))
    finally:
        os.close(fd)
    return p


def _disk_full_error(p: subprocess.CompletedProcess, root: Path, what: str, fs_size: str, code: int = 1) -> None:
    """The one error a user must see: exit 1 (125 for `run`, like Docker), what failed, the state
    directory, its free space."""
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith(f"netdiag: error: Cannot {what}. "), p.stderr
    assert f"the state directory {root} (NETDIAG_ROOT) ran out of space" in p.stderr, p.stderr
    assert re.search(rf"leaves [\d.]+ (bytes|KB|MB) free of {re.escape(fs_size)}\.", p.stderr), p.stderr
    assert "set NETDIAG_ROOT to a larger filesystem" in p.stderr
    for blame in ("usable archive", "corrupt", "check the file"):  # never the input's fault
        assert blame not in p.stderr, p.stderr


def _stored(root: Path) -> list[str]:
    """Everything in the state directory beyond an empty image store and the lock files."""
    skip = {"images", "images/index.json", "images/oci-layout", "images/blobs", "images/blobs/sha256", "locks",
            "layers", "containers", "ballast"}
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if str(p.relative_to(root)) not in skip and not str(p.relative_to(root)).startswith("locks/"))


def _random_tar(path: Path, size: int) -> Path:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("big")
        info.size, info.mode = size, 0o644
        tf.addfile(info, io.BytesIO(os.urandom(size)))
    return path


def _oci_archive(path: Path, layer_size: int, ref: str = "big:1") -> Path:
    """An OCI layout tar (what `netdiag save` writes) with one layer of `layer_size` random bytes."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        info = tarfile.TarInfo("big")
        info.size, info.mode = layer_size, 0o644
        tf.addfile(info, io.BytesIO(os.urandom(layer_size)))
    blobs = {}

    def blob(data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return d

    ld = blob(layer.getvalue())
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [ld]}}).encode()
    cd = blob(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld,
                                  "size": len(blobs[ld])}]}).encode()
    md = blob(man)
    index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": md, "size": len(man),
                        "annotations": {"org.opencontainers.image.ref.name": ref}}]}).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] + \
                [(f"blobs/sha256/{d[7:]}", b) for d, b in blobs.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_the_builtin_image_on_a_3mb_state_directory_fails_clearly_and_stores_nothing(small):
    p = small.run("run", "--rm", "--network", "none", "busybox", "true")
    _disk_full_error(p, small.root, "install the built-in busybox:latest image", "3.0 MB", code=125)
    assert _stored(small.root) == []
    assert _free(small.root) > 2_900_000  # the half-made layer and rootfs copy are gone
    assert "busybox" not in small.ok("images")


def test_import_and_load_on_a_3mb_state_directory_blame_the_disk_not_the_archive(small, tmp_path):
    root = small.root
    big = _random_tar(tmp_path / "big.tar", 4_000_000)  # the copy itself does not fit
    _disk_full_error(small.run("import", str(big), "big"), root, f"import {big}", "3.0 MB")
    assert _stored(root) == []
    half = _random_tar(tmp_path / "half.tar", 1_600_000)  # the copy fits, its extraction (the check) does not
    _disk_full_error(small.run("import", str(half), "half"), root, f"import {half}", "3.0 MB")
    assert _stored(root) == []
    gz = tmp_path / "half.tar.gz"
    gz.write_bytes(gzip.compress(half.read_bytes(), compresslevel=1))
    with open(gz, "rb") as f:  # from standard input, gzip-compressed: the gunzip's write fails
        p = subprocess.run([*_cli(), "import", "-", "half"], stdin=f, capture_output=True, text=True,
                           env=small.env, preexec_fn=small.enter(), timeout=60)
    _disk_full_error(p, root, "import standard input", "3.0 MB")
    assert _stored(root) == []

    for size in (4_000_000, 1_600_000):  # staging fails; staging fits but the layer check does not
        archive = _oci_archive(tmp_path / f"oci-{size}.tar", size)
        _disk_full_error(small.run("load", "-i", str(archive)), root, f"load {archive}", "3.0 MB")
        assert _stored(root) == []
    assert "big" not in small.ok("images")

    small.ok("import", str(_random_tar(tmp_path / "small.tar", 100_000)), "fits:1")  # the store is still sound
    assert "fits" in small.ok("images")
    small.ok("load", "-i", str(_oci_archive(tmp_path / "oci-small.tar", 100_000, "alsofits:1")))
    assert "alsofits" in small.ok("images")


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "netdiag"]


def test_build_on_a_3mb_state_directory_fails_clearly_and_caches_nothing_broken(small, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big").write_bytes(os.urandom(1_600_000))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big /big\n")
    _disk_full_error(small.run("build", "-t", "big", str(ctx)), small.root, "build the image", "3.0 MB")
    assert _stored(small.root) == []


def test_run_on_a_full_state_directory_fails_clearly_and_leaves_no_container(roomy):
    _fill(roomy.root, 24 * 1024)
    p = roomy.run("run", "-d", "--name", "web", "busybox", "sleep", "30")
    _disk_full_error(p, roomy.root, "create container web", "32.0 MB", code=125)
    assert roomy.ok("ps", "-a", "-q") == ""
    assert list((roomy.root / "containers").iterdir()) == []
    (roomy.root / "ballast").unlink()
    roomy.ok("run", "-d", "--name", "web", "busybox", "sleep", "30")  # room again: it works
    assert roomy.inspect("web")["State"]["Running"]


def _log_records(lab, name: str) -> list[dict]:
    """The container's json-file log, every line of which must be a whole record."""
    path = Path(lab.inspect(name)["LogPath"])
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_output_that_fills_the_disk_is_dropped_counted_and_the_real_exit_code_kept(roomy):
    _fill(roomy.root, 300 * 1024)
    n = 10000  # ~800 KB of log records: most cannot be written
    roomy.ok("run", "-d", "--name", "chat", "busybox", "sh", "-c",
             f"i=0; while [ $i -lt {n} ]; do echo line $i; i=$((i+1)); done; sleep 6; echo after; exit 3")
    time.sleep(3)  # the flood is long over, the container sleeps: now space comes back
    (roomy.root / "ballast").unlink()
    assert wait_for(lambda: roomy.inspect("chat")["State"]["Status"] == "exited", 15)
    st = roomy.inspect("chat")["State"]
    assert (st["ExitCode"], st["Error"], st["OOMKilled"]) == (3, "", False)  # not 137 "monitor died"
    assert "Exited (3)" in roomy.ok("ps", "-a")

    records = _log_records(roomy, "chat")  # json.loads above: no half-written record
    # Walk the log: each gap is exactly where a notice stands, saying how many lines it lost (a
    # record may still fit in the log's last page while the disk is full, so there can be several)
    expected, notices = 0, 0
    for r in records[:-1]:
        if r["stream"] == "stderr":
            assert re.fullmatch(r"netdiag: \d+ line\(s\) of output were dropped: the log could not be written "
                                r"\(No space left on device\)\n", r["log"]), r
            expected += int(r["log"].split()[1])
            notices += 1
        else:
            assert r["log"] == f"line {expected}\n", (r, expected)
            expected += 1
    assert records[-1]["log"] == "after\n"
    assert expected == n and notices >= 1  # every line was either logged or counted where it was lost
    dropped = sum(int(r["log"].split()[1]) for r in records if r["stream"] == "stderr")
    assert dropped == st["LogLinesDropped"] > 0


# a container that exits when told, so it exits after the disk is full however loaded the machine is;
# /tmp/ready (a new stamp each start) says its trap is set
_EXIT_ON_USR1 = "trap 'exit {code}' USR1; date +%s%N > /tmp/ready; while :; do sleep 0.1; done"


def _ready(lab, name: str, not_stamp: str = "") -> str:
    """Wait until the container's trap is set (a stamp other than not_stamp); the stamp."""
    got = {}

    def stamp():
        p = lab.run("exec", name, "cat", "/tmp/ready")
        got["s"] = p.stdout.strip()
        return p.returncode == 0 and got["s"] and got["s"] != not_stamp
    assert wait_for(stamp, 20), f"{name} never set its trap"
    return got["s"]


def test_the_exit_record_lands_on_a_completely_full_disk(roomy):
    roomy.ok("run", "-d", "--name", "full", "busybox", "sh", "-c", _EXIT_ON_USR1.format(code=3))
    _ready(roomy, "full")
    _fill(roomy.root, 0)
    assert _free(roomy.root) < 4096
    roomy.ok("kill", "-s", "USR1", "full")  # it exits now that the disk is full, not after a guessed delay
    assert wait_for(lambda: roomy.inspect("full")["State"]["Status"] == "exited", 10)
    st = roomy.inspect("full")["State"]
    assert (st["ExitCode"], st["Error"]) == (3, "")  # written into the record's pre-allocated spare

    # A hostile user deletes the spare: `start` refuses (no room for the exit record) and changes nothing
    cid = roomy.inspect("full")["Id"]
    (roomy.root / "containers" / cid / ".state.json.spare").unlink()
    _fill(roomy.root, 0, "ballast2")
    p = roomy.run("start", "full")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "Cannot start container full" in p.stderr and f"state directory {roomy.root}" in p.stderr, p.stderr
    assert roomy.inspect("full")["State"]["ExitCode"] == 3


def test_without_its_spare_the_exit_code_still_survives_and_ps_says_the_record_failed(roomy):
    roomy.ok("run", "-d", "--name", "nospare", "busybox", "sh", "-c", _EXIT_ON_USR1.format(code=4))
    first = _ready(roomy, "nospare")
    cid = roomy.inspect("nospare")["Id"]
    (roomy.root / "containers" / cid / ".state.json.spare").unlink()
    _fill(roomy.root, 0)
    roomy.ok("kill", "-s", "USR1", "nospare")
    assert wait_for(lambda: roomy.inspect("nospare")["State"]["Status"] == "exited", 10)
    st = roomy.inspect("nospare")["State"]
    assert st["ExitCode"] == 4
    assert "could not write the exit record" in st["Error"] and "full" in st["Error"]
    assert "Exited (4)" in roomy.ok("ps", "-a")
    (roomy.root / "ballast").unlink()
    roomy.ok("start", "nospare")  # room again: a fresh start forgets the old marker
    _ready(roomy, "nospare", not_stamp=first)
    roomy.ok("kill", "-s", "USR1", "nospare")
    assert wait_for(lambda: roomy.inspect("nospare")["State"]["Status"] == "exited", 10)
    assert (roomy.inspect("nospare")["State"]["ExitCode"], roomy.inspect("nospare")["State"]["Error"]) == (4, "")
