"""Killing the CLI anywhere in `run` leaves nothing prune cannot remove; prune touches only netdiag's
own objects. Image save/load/import round trips."""
import io
import json
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _cgroups(lab):
    out = set()
    for ctl in ("memory", "cpu", "pids"):
        d = Path("/sys/fs/cgroup") / ctl / lab.cgroup_parent
        if d.is_dir():
            out |= {p.name for p in d.iterdir() if p.is_dir()}
    return out


def test_killed_run_at_any_point_is_cleaned_by_prune(lab):
    lab.ok("images")  # make the busybox image outside the timed window
    lab.ok("run", "--rm", "busybox", "true")
    foreign = Path("/sys/fs/cgroup/memory") / f"{lab.cgroup_parent}-foreign"  # not netdiag's
    foreign.mkdir()
    try:
        for delay_ms in (5, 20, 40, 60, 80, 100, 130, 160, 200, 300):
            p = lab.popen("run", "-d", "busybox", "sleep", "30", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay_ms / 1000)
            p.send_signal(signal.SIGKILL)
            p.wait()
        time.sleep(0.3)
        lab.ok("system", "prune", "-f")
        # what survives is only fully running containers; each is real and removable
        running = [json.loads(x) for x in lab.ok("ps", "-a", "--format", "json").splitlines()]
        assert all(r["State"] == "running" for r in running), running
        for r in running:
            lab.ok("rm", "-f", r["ID"])
        assert lab.ok("ps", "-a", "-q") == ""
        assert not list((lab.root / "containers").iterdir())
        assert _cgroups(lab) == set()
        assert foreign.is_dir()  # not netdiag's: untouched
    finally:
        foreign.rmdir()


def test_prune_keeps_running_containers_and_removes_stopped_ones(lab):
    lab.ok("run", "-d", "--name", "keep", "busybox", "sleep", "30")
    lab.ok("run", "--name", "done", "busybox", "true")
    out = lab.ok("system", "prune", "-f")
    assert "Total reclaimed: 1" in out
    names = lab.ok("ps", "-a", "--format", "json")
    assert '"keep"' in names and '"done"' not in names


def test_save_load_round_trip_keeps_the_image_id(lab, tmp_path):
    lab.ok("images")
    img_id = json.loads(lab.ok("image", "inspect", "busybox"))[0]["Id"]
    archive = tmp_path / "bb.tar"
    lab.ok("save", "-o", str(archive), "busybox")
    with tarfile.open(archive) as tf:
        names = set(tf.getnames())
    assert {"oci-layout", "index.json"} <= names and any(n.startswith("blobs/sha256/") for n in names)
    lab.ok("rmi", "busybox")
    assert "Loaded image: busybox:latest" in lab.ok("load", "-i", str(archive))
    assert json.loads(lab.ok("image", "inspect", "busybox"))[0]["Id"] == img_id
    assert lab.ok("run", "--rm", "busybox", "echo", "back") == "back\n"


def test_corrupt_archive_is_refused(lab, tmp_path):
    lab.ok("images")
    archive = tmp_path / "bb.tar"
    lab.ok("save", "-o", str(archive), "busybox")
    bad = tmp_path / "bad.tar"
    with tarfile.open(archive) as src, tarfile.open(bad, "w") as dst:
        for m in src:
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name.startswith("blobs/") and m.size > 100000:
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    p = lab.run("load", "-i", str(bad))
    assert p.returncode != 0 and "corrupt" in p.stderr


def _rootfs_tar(path: Path, hostile: bool = False) -> None:
    with tarfile.open(path, "w") as tf:
        bb = tarfile.TarInfo("bin/busybox")
        data = Path("/bin/busybox").read_bytes()
        bb.size, bb.mode = len(data), 0o755
        tf.addfile(bb, io.BytesIO(data))
        sh = tarfile.TarInfo("bin/sh")
        sh.type, sh.linkname = tarfile.SYMTYPE, "/bin/busybox"
        tf.addfile(sh)
        msg = tarfile.TarInfo("hello.txt")
        msg.size = 3
        tf.addfile(msg, io.BytesIO(b"hi\n"))
        if hostile:
            evil = tarfile.TarInfo("../../escaped")
            evil.size = 1
            tf.addfile(evil, io.BytesIO(b"x"))


def test_import_rootfs_tar_with_change_and_refuse_hostile(lab, tmp_path):
    good = tmp_path / "root.tar"
    _rootfs_tar(good)
    lab.ok("import", "-c", "CMD [\"/bin/sh\", \"-c\", \"cat /hello.txt\"]", str(good), "mini:1")
    assert lab.ok("run", "--rm", "mini:1") == "hi\n"
    bad = tmp_path / "bad.tar"
    _rootfs_tar(bad, hostile=True)
    p = lab.run("import", str(bad), "evil")
    assert p.returncode != 0 and ".." in p.stderr
    assert not (tmp_path / "escaped").exists()
    assert "evil" not in lab.ok("images")


def test_images_say_when_an_image_was_made_in_dockers_words(lab):
    """The built-in busybox carries its binary's time (not 1970), shown like Docker: "3 months ago"."""
    lab.ok("run", "--rm", "busybox", "true")  # the built-in image is made on first use
    rows = [json.loads(line) for line in lab.ok("images", "--format", "json").splitlines()]
    busybox = next(r for r in rows if r["Repository"] == "busybox")
    assert not busybox["CreatedAt"].startswith("1970") and busybox["CreatedAt"].endswith(" +0000 UTC"), busybox
    assert busybox["CreatedSince"].endswith(" ago"), busybox
    assert busybox["CreatedSince"] in lab.ok("images")
