"""Hostile images, corrupt records and bad archives, tried the way a hostile user would, with the
real CLI in a lab: nothing reaches the host, one bad record breaks only its object, and a bad
archive is refused whole, naming the file, before anything is stored."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.ocikit import Archive, busybox_root, digest, entry, tar_bytes

pytestmark = pytest.mark.integration


def _tree(d: Path) -> dict:
    """What a host directory holds (names, types, link targets, contents)."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        out[rel] = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


def _import(lab, tmp_path: Path, name: str, members) -> None:
    tar = tmp_path / f"{name}.tar"
    tar.write_bytes(tar_bytes(members))
    lab.ok("import", str(tar), name)


def _host_dir(tmp_path: Path) -> Path:
    """A host directory a hostile image points at: a file and a symlink named resolv.conf."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("host file\n")
    os.symlink("keep", host / "resolv.conf")
    return host


def _no_containers(lab) -> bool:
    return lab.ok("ps", "-a", "-q") == "" and not list((lab.root / "containers").iterdir())


# ---------------------------------------------------------------------------- hostile images

@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_an_image_whose_etc_links_to_a_host_dir_changes_nothing_on_the_host(lab, tmp_path, kind):
    host = _host_dir(tmp_path)
    before = _tree(host)
    link = str(host) if kind == "absolute" else "../" * 12 + str(host).lstrip("/")
    _import(lab, tmp_path, "evil-etc", busybox_root(entry("etc", tarfile.SYMTYPE, linkname=link)))
    out = lab.ok("run", "--rm", "--hostname", "boxed", "evil-etc", "sh", "-c",
                 "cat /etc/hostname; grep -c localhost /etc/hosts; readlink /etc")
    assert out.split("\n")[:3] == ["boxed", "2", link]  # the binds are there, inside the root
    assert _tree(host) == before  # the host's symlink and files are as they were, nothing added


@pytest.mark.parametrize("mount_point", ["proc", "sys"])
@pytest.mark.parametrize("kind", ["symlink to the host", "symlink inside", "file"])
def test_proc_or_sys_that_is_no_directory_is_refused_like_runc(lab, tmp_path, mount_point, kind):
    host = _host_dir(tmp_path)
    before = _tree(host)
    others = [entry(d, tarfile.DIRTYPE) for d in ("proc", "sys", "dev", "inside") if d != mount_point]
    bad = {"symlink to the host": entry(mount_point, tarfile.SYMTYPE, linkname=str(host)),
           "symlink inside": entry(mount_point, tarfile.SYMTYPE, linkname="/inside"),
           "file": entry(mount_point, data=b"not a directory")}[kind]
    _import(lab, tmp_path, "evil-mnt", busybox_root(*others, bad, proc=False))
    p = lab.run("run", "--rm", "evil-mnt", "true")
    assert p.returncode == 125, p.stderr
    what = "a symlink" if kind.startswith("symlink") else "not a directory"
    assert f"/{mount_point} is {what}" in p.stderr and "ordinary directory" in p.stderr, p.stderr
    assert p.stderr.count("as an empty directory") == 1  # the fix, said once
    assert "Traceback" not in p.stderr
    assert _tree(host) == before and _no_containers(lab)


@pytest.mark.parametrize("path, members, says", [
    ("/etc", [entry("etc", data=b"x")], "has a file there, not a directory"),
    ("/dev", [entry("dev", data=b"x")], "has a file there, not a directory"),
    ("/etc/hosts", [entry("etc", tarfile.DIRTYPE), entry("etc/hosts", tarfile.DIRTYPE)], "has a directory there"),
    ("/etc", [entry("etc", tarfile.SYMTYPE, linkname="/proc/sys/kernel")], "send it into /proc or /sys"),
    ("/dev", [entry("dev", tarfile.SYMTYPE, linkname="../proc/sys")], "send it into /proc or /sys"),
], ids=["etc file", "dev file", "hosts directory", "etc into proc", "dev into proc"])
def test_a_mount_target_of_the_wrong_kind_is_a_clear_error(lab, tmp_path, path, members, says):
    proc_sys = [entry("proc", tarfile.DIRTYPE), entry("sys", tarfile.DIRTYPE)]
    _import(lab, tmp_path, "odd", busybox_root(*proc_sys, *members, proc=False))
    p = lab.run("run", "--rm", "odd", "true")
    assert p.returncode == 125 and f"Cannot prepare {path} in the container's root" in p.stderr and says in p.stderr, p.stderr
    assert _no_containers(lab)


def test_an_init_error_says_its_fix_once(lab):
    """The init's error crossed two layers (init -> monitor -> CLI), each adding a fix."""
    p = lab.run("run", "--rm", "--entrypoint", "", "busybox")
    assert p.returncode == 125 and "No command specified" in p.stderr
    assert p.stderr.count(". ") + p.stderr.count(".\n") == 3, p.stderr  # what, why, one fix
    assert "netdiag image inspect" not in p.stderr  # the generic fix is only for errors without one


def test_dev_as_a_symlink_is_followed_inside_the_root_like_runc(lab, tmp_path):
    host = _host_dir(tmp_path)
    before = _tree(host)
    members = busybox_root(entry("altdev", tarfile.DIRTYPE), proc=False) + [
        entry("proc", tarfile.DIRTYPE), entry("sys", tarfile.DIRTYPE),
        entry("dev", tarfile.SYMTYPE, linkname="/altdev"), entry("etc", tarfile.SYMTYPE, linkname=str(host))]
    _import(lab, tmp_path, "evil-dev", members)
    out = lab.ok("run", "--rm", "evil-dev", "sh", "-c", "test -c /altdev/null && test -c /dev/null && "
                 "test -d /dev/pts && test -d /proc/self && readlink /dev && echo fine")
    assert out.split() == ["/altdev", "fine"]
    assert _tree(host) == before


def test_copy_through_a_symlinked_destination_stays_inside_the_image(lab, tmp_path):
    host = _host_dir(tmp_path)
    before = _tree(host)
    _import(lab, tmp_path, "evil-base", busybox_root(entry("dst", tarfile.SYMTYPE, linkname=str(host)),
                                                     entry("up", tarfile.SYMTYPE, linkname="../../../..")))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("copied\n")
    (ctx / "Dockerfile").write_text("FROM evil-base\nCOPY f /dst/\nCOPY f /up/tmp/g\nCOPY f /dst/keep\n")
    lab.ok("build", "-q", "-t", "copied", str(ctx), timeout=120)
    assert _tree(host) == before
    inside = str(host)
    out = lab.ok("run", "--rm", "copied", "sh", "-c", f"cat {inside}/f {inside}/keep /tmp/g; readlink /dst")
    assert out.split("\n")[:4] == ["copied", "copied", "copied", inside]


# ---------------------------------------------------------------------------- corrupt records

def _container_dir(lab, short_id: str) -> Path:
    return next(p for p in (lab.root / "containers").iterdir() if p.name.startswith(short_id))


def _ps(lab) -> dict:
    return {r["ID"]: r for r in map(json.loads, lab.ok("ps", "-a", "--format", "json").splitlines())}


CORRUPT = {"config truncated": ("config.json", b'{"Name": "vic'), "config empty": ("config.json", b""),
           "config not an object": ("config.json", b"[1, 2]"), "state truncated": ("state.json", b'{"Status": "exi'),
           "state not an object": ("state.json", b'"exited"')}


@pytest.mark.parametrize("case", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_container_record_breaks_only_that_container(lab, case):
    which, content = case
    lab.ok("run", "-d", "--name", "other", "busybox", "sleep", "60")
    victims = []
    for name in ("victim", "victim2"):
        lab.ok("run", "--name", name, "busybox", "true")
        vid = next(i for i, r in _ps(lab).items() if r["Names"] == name)
        (_container_dir(lab, vid) / which).write_bytes(content)
        victims.append(vid)

    rows = _ps(lab)
    for vid in victims:
        assert rows[vid]["State"] == "dead" and which in rows[vid]["Error"], rows[vid]
    assert [r["State"] for r in rows.values() if r["Names"] == "other"] == ["running"]
    table = lab.run("ps", "-a")
    assert table.returncode == 0 and victims[0] in table.stdout and f"rm -f {victims[0]}" in table.stderr
    state = json.loads(lab.ok("inspect", victims[0]))[0]["State"]
    assert state["Status"] == "dead" and state["Dead"] and which in state["Error"]
    assert json.loads(lab.ok("inspect", "other"))[0]["State"]["Running"]
    assert lab.ok("run", "--rm", "busybox", "echo", "ok") == "ok\n"
    p = lab.run("start", victims[0])
    assert p.returncode == 1 and "rm -f" in p.stderr and "Traceback" not in p.stderr

    assert lab.ok("rm", "-f", victims[0]).strip() == victims[0]
    out = lab.ok("system", "prune", "-f")
    assert victims[1] in out
    assert set(_ps(lab)) == {next(i for i, r in _ps(lab).items() if r["Names"] == "other")}
    lab.ok("rm", "-f", "other")
    assert _no_containers(lab)


@pytest.mark.parametrize("content", [b'{"Name": "back", "Id', b"", b"[]"], ids=["truncated", "empty", "array"])
def test_a_corrupt_network_record_breaks_only_that_network(lab, content):
    net_id = lab.ok("network", "create", "back").strip()
    lab.ok("network", "create", "front")
    device = f"br-{net_id[:12]}"
    assert lab.in_lab("ip", "link", "show", device).returncode == 0
    (lab.root / "networks" / f"{net_id}.json").write_bytes(content)

    rows = {r["ID"]: r for r in map(json.loads, lab.ok("network", "ls", "--format", "json").splitlines())}
    assert rows[net_id[:12]]["Driver"] == "unreadable" and "front" in {r["Name"] for r in rows.values()}
    assert f"{net_id}.json" in json.loads(lab.ok("network", "inspect", net_id[:12]))[0]["Error"]
    assert lab.ok("run", "--rm", "busybox", "echo", "ok") == "ok\n"
    assert lab.ok("run", "--rm", "--network", "front", "busybox", "echo", "ok") == "ok\n"
    p = lab.run("run", "--rm", "--network", "back", "busybox", "true")
    assert p.returncode == 125 and "Traceback" not in p.stderr

    out = lab.ok("system", "prune", "-f")
    assert net_id[:12] in out
    assert not (lab.root / "networks" / f"{net_id}.json").exists()
    assert lab.in_lab("ip", "link", "show", device).returncode != 0  # its bridge went with it
    assert net_id[:12] not in lab.ok("network", "ls")


# ---------------------------------------------------------------------------- bad archives

def _store(lab) -> tuple:
    """The image store as files: blob names, the index's bytes, extracted layers (None: no such dir)."""
    def names(d: Path):
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else None

    images = lab.root / "images"
    return names(images / "blobs/sha256"), (images / "index.json").read_bytes(), names(lab.root / "layers")


SMALL = tar_bytes([entry("etc", tarfile.DIRTYPE), entry("etc/motd", data=b"hi\n")])


def _archives(tmp_path: Path) -> dict:
    """name -> (path, exit code, words the error must hold)."""
    a = Archive()
    a.image([SMALL])
    layer = digest(SMALL)
    no_layers = Archive()
    no_layers.image([SMALL], manifest_edit=lambda m: m.pop("layers"))
    out = {"bad index JSON": (a.write(tmp_path / "idx.tar", index=b"{oops"), ["index.json", "not valid JSON"]),
           "manifest without layers": (no_layers.write(tmp_path / "nolayers.tar"), ["no list of layers"]),
           "missing blob": (a.write(tmp_path / "missing.tar", drop=(layer,)), [layer, "missing"]),
           "digest mismatch": (a.write(tmp_path / "flip.tar", replace={layer: SMALL[:-1] + b"\x01"}),
                               [layer[7:], "does not match its digest"]),
           "deep index": (a.write(tmp_path / "deep.tar", index=b"[" * 100_000 + b"]" * 100_000),
                          ["index.json is nested more than 64 levels deep"])}
    huge = Archive()  # a layer claiming 10**18 bytes ('images' showed 1e+09GB)
    huge.image([SMALL], manifest_edit=lambda m: m["layers"][0].update(size=10**18))
    out["layer of 10**18 bytes"] = (huge.write(tmp_path / "huge.tar"), ["invalid size 1000000000000000000"])
    for name, member, says in (("dotdot", entry("../../escaped", data=b"x"), "contains '..'"),
                               ("absolute", entry("/escaped", data=b"x"), "absolute path"),
                               ("device", entry("dev/mem", tarfile.CHRTYPE, dev=(1, 1)), "device node")):
        h = Archive()
        h.image([SMALL, tar_bytes([member])])
        out[f"hostile layer: {name}"] = (h.write(tmp_path / f"{name}.tar"), [says, "refused"])
    return out


def test_each_malformed_archive_is_refused_whole_naming_the_file(lab, tmp_path):
    lab.ok("image", "inspect", "busybox")  # the store holds something that must stay as it is
    before = _store(lab)
    for name, (path, words) in _archives(tmp_path).items():
        p = lab.run("load", "-i", str(path))
        assert p.returncode == 2, (name, p.stderr)
        assert str(path) in p.stderr and all(w in p.stderr for w in words), (name, p.stderr)
        assert "Traceback" not in p.stderr and ".scratch" not in p.stderr
        assert _store(lab) == before, name
    assert not list(lab.root.glob(".scratch-*"))
    assert "hostile" not in lab.ok("images")
    bad = tmp_path / "rootfs.tar"
    bad.write_bytes(tar_bytes([entry("bin", tarfile.DIRTYPE), entry("bin/../../x", data=b"x")]))
    p = lab.run("import", str(bad), "evil")
    assert p.returncode == 2 and str(bad) in p.stderr and "contains '..'" in p.stderr and ".scratch" not in p.stderr
    assert _store(lab) == before and not (tmp_path / "x").exists()


def test_ctrl_c_during_load_leaves_nothing_stored(lab, tmp_path):
    lab.ok("image", "inspect", "busybox")  # the store holds something that must stay as it is
    before = _store(lab)
    a = Archive()
    a.image([tar_bytes(busybox_root())], "half:1")
    data = a.write(tmp_path / "big.tar").read_bytes()
    p = lab.popen("load", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(data[: len(data) // 2])
        p.stdin.flush()
        deadline = time.monotonic() + 20
        while not any(d.is_dir() and any(d.rglob("*")) for d in lab.root.glob(".scratch-load-*")):
            assert time.monotonic() < deadline, "load never started staging"
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) == 130
    finally:
        p.kill()
        p.communicate()
    assert _store(lab) == before and not list(lab.root.glob(".scratch-*"))
    assert "half" not in lab.ok("images")


def test_prune_removes_unreferenced_blobs_and_keeps_referenced_ones(lab, tmp_path):
    lab.ok("run", "--rm", "busybox", "true")
    bb = json.loads(lab.ok("image", "inspect", "busybox"))[0]
    untagged = Archive()
    untagged.image([SMALL], None)
    lab.ok("load", "-i", str(untagged.write(tmp_path / "untagged.tar")))
    assert "<none>" in lab.ok("images")
    orphans = []
    for content in (b"orphan one", b"orphan two"):
        d = digest(content)
        (lab.root / "images/blobs/sha256" / d[7:]).write_bytes(content)
        (lab.root / "layers" / d[7:]).mkdir()
        orphans.append(d)
    leftover = lab.root / ".scratch-load-999999999-1-x"  # a killed load's staging (no such process)
    leftover.mkdir()

    out = lab.ok("image", "prune", "-f")
    assert "Total reclaimed space" in out and "deleted: sha256:" in out
    blobs = {p.name for p in (lab.root / "images/blobs/sha256").iterdir()}
    assert not {o[7:] for o in orphans} & blobs
    assert not any((lab.root / "layers" / o[7:]).exists() for o in orphans)
    assert {bb["Id"][7:], bb["Manifest"][7:], *(ly[7:] for ly in bb["RootFS"]["Layers"])} <= blobs
    assert not leftover.exists() and "<none>" not in lab.ok("images")
    assert lab.ok("run", "--rm", "busybox", "echo", "still") == "still\n"

    d = digest(b"orphan three")
    (lab.root / "images/blobs/sha256" / d[7:]).write_bytes(b"orphan three")
    lab.ok("system", "prune", "-f")
    assert not (lab.root / "images/blobs/sha256" / d[7:]).exists()
    assert lab.ok("run", "--rm", "busybox", "echo", "again") == "again\n"


def test_a_containers_resolver_files_never_lead_to_the_hosts_files_or_hang(tmp_path):
    """netdiag reads a container's resolv.conf and hosts through /proc/PID/root, where the kernel
    resolves an absolute link against netdiag's own root: a process in a root whose resolv.conf
    links to a host file (here one with a secret marker) and whose hosts is a FIFO."""
    secret = tmp_path / "host-secret"
    secret.write_text("nameserver 10.9.9.9 # SECRETMARKER\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(secret), root / "etc" / "resolv.conf")
    os.mkfifo(root / "etc" / "hosts")
    code = f"""
import os, signal, time
from netdiag.health import resolve
pid = os.fork()
if pid == 0:
    os.chroot({str(root)!r})
    time.sleep(30)
    os._exit(0)
try:
    time.sleep(0.3)
    assert "SECRETMARKER" in open(f"/proc/{{pid}}/root/etc/resolv.conf").read()  # what a plain open does
    print(resolve._read(f"/proc/{{pid}}/root/etc/resolv.conf"), resolve._read(f"/proc/{{pid}}/root/etc/hosts"))
finally:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                       cwd=Path(__file__).parents[2])
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["None", "None"]  # the link stays inside the root (nothing there); the FIFO is refused
