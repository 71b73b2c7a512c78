"""The cgroup v2 device filter in the real kernel. netdiag uses cgroup v1 on this machine, so the
tests make throwaway cgroups in the v2 hierarchy (the host's mount, or cgroup2 mounted in a private
mount namespace), attach the filter, move a forked child in, and let it open and mknod devices;
the same probe outside the cgroup is the control. Every cgroup is removed, also on failure."""
import contextlib
import errno
import json
import os
import select
import signal
import stat
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from runtime.kernel import syscalls as sc
from runtime.containers import cgroups, devices_bpf, security
from runtime.errors import InvalidArgument, KernelError

pytestmark = pytest.mark.integration

KMSG = (1, 11)  # /dev/kmsg: a char device root can open, in no allow-list


def _v2_mount() -> Path | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"] and left.split()[3] == "/":
                return Path(left.split()[4])
    return None


def _in_child(fn, cgroup: Path | None = None, timeout: float = 30.0) -> dict:
    """fn() in a forked child, moved into `cgroup` before it starts when given; its dict, as JSON."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.close(go_w)
            if os.read(go_r, 1) == b"g":
                try:
                    out = fn()
                except BaseException as e:  # noqa: BLE001 - the parent says what went wrong
                    out = {"error": repr(e)}
                os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.close(go_r)
    data = b""
    try:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(pid))
        os.write(go_w, b"g")
        deadline = time.monotonic() + timeout
        while chunk := (os.read(r, 65536) if select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]
                        else None):
            data += chunk
    finally:
        os.close(go_w)
        os.close(r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # done or stuck: either way it must not outlive the test
        os.waitpid(pid, 0)
    assert data, "the child said nothing (timed out or died)"
    out = json.loads(data)
    assert "error" not in out, out["error"]
    return out


@contextlib.contextmanager
def _throwaway_cgroup(root: Path):
    cg = root / f"netdiag-devtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        yield cg
    finally:
        _remove(cg)


def _remove(cg: Path) -> None:
    deadline = time.monotonic() + 5
    while cg.exists():
        try:
            cg.rmdir()  # the kernel detaches and frees its programs with it
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            for pid in (cg / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.02)


def _with_private_cgroup2(fn) -> dict:
    """fn(mount point) in a child with its own mount namespace and cgroup2 mounted in it."""
    def inner():
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)  # nothing of this reaches the host
        mnt = tempfile.mkdtemp(prefix="netdiag-cgroup2-")
        try:
            sc.mount("cgroup2", mnt, "cgroup2", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
            try:
                return fn(Path(mnt))
            finally:
                sc.umount(mnt)
        finally:
            os.rmdir(mnt)
    return _in_child(inner)


def _attempt(fn) -> str:
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


def _open(path, flags=os.O_RDONLY):
    return lambda: os.close(os.open(path, flags))


def _read(path):
    def read():
        with open(path, "rb") as f:
            f.read(4)
    return read


def _mknod(path, kind, dev):
    return lambda: os.mknod(path, kind | 0o600, os.makedev(*dev))


def _probe(tmp: Path, block: tuple[int, int]) -> dict:
    """What a process may do with devices, from its cgroup (nodes made anew, named by its pid)."""
    blk, chr_ = tmp / f"blk-{os.getpid()}", tmp / f"kmsg-{os.getpid()}"
    return {
        "cgroup": next(x[3:] for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::")),
        "open /dev/null rw": _attempt(_open("/dev/null", os.O_RDWR)),
        "read /dev/zero": _attempt(_read("/dev/zero")),
        "mknod block": _attempt(_mknod(blk, stat.S_IFBLK, block)),
        "open block": _attempt(_open(blk)),
        "mknod kmsg": _attempt(_mknod(chr_, stat.S_IFCHR, KMSG)),
        "open kmsg": _attempt(_open(chr_)),
    }


@pytest.fixture
def block(tmp_path) -> tuple[int, int]:
    """major:minor of a block device of this machine that root can open here, through a node made
    in a temp dir (test_confinement's way of finding one)."""
    for name in sorted(os.listdir("/sys/block")):
        dev = tuple(int(x) for x in Path(f"/sys/block/{name}/dev").read_text().split(":"))
        node = tmp_path / f"try-{name}"
        if _attempt(_mknod(node, stat.S_IFBLK, dev)) == "ok" and _attempt(_open(node)) == "ok":
            return dev
    pytest.skip("no block device root can open on this machine")


def _default_rules_scenario(root: Path, tmp: Path, block) -> dict:
    with _throwaway_cgroup(root) as cg:
        assert devices_bpf.attach(cg, security.DEFAULT_DEVICES)
        first = devices_bpf.programs(cg)
        inside = _in_child(lambda: _probe(tmp, block), cg)
        devices_bpf.attach(cg, security.DEFAULT_DEVICES)  # again: replaces, does not stack
        again = devices_bpf.programs(cg)
        name = cg.name
    return {"name": name, "inside": inside, "first": first, "again": again,
            "outside": _in_child(lambda: _probe(tmp, block)), "left": (root / name).exists()}


@pytest.mark.parametrize("where", ["host-mount", "private-mount"])
def test_netdiags_default_rules_in_a_v2_cgroup(where, tmp_path, block):
    if where == "host-mount":
        root = _v2_mount() or pytest.skip("no cgroup2 mount on this host")
        got = _default_rules_scenario(root, tmp_path, block)
    else:
        got = _with_private_cgroup2(lambda mnt: _default_rules_scenario(mnt, tmp_path, block))
    assert got["inside"] == {
        "cgroup": "/" + got["name"],
        "open /dev/null rw": "ok", "read /dev/zero": "ok",  # Docker's list
        "mknod block": "ok", "mknod kmsg": "ok",  # Docker's 'm' rules: "c *:* m", "b *:* m"
        "open block": "EPERM", "open kmsg": "EPERM",  # the host's disk and devices outside the list
    }
    # the control: the same nodes open outside the cgroup
    assert got["outside"]["open block"] == "ok" and got["outside"]["open kmsg"] == "ok", got["outside"]
    assert len(got["first"]) == 1 and len(got["again"]) == 1 and got["first"] != got["again"]
    assert not got["left"]


def test_access_bits_read_write_mknod_are_told_apart(tmp_path):
    root = _v2_mount() or pytest.skip("no cgroup2 mount on this host")
    rules = ((False, "a *:* rwm"), (True, "c 1:3 r"), (True, "c 1:5 w"))

    def probe():
        return {"null r": _attempt(_open("/dev/null")), "null w": _attempt(_open("/dev/null", os.O_WRONLY)),
                "null rw": _attempt(_open("/dev/null", os.O_RDWR)), "zero r": _attempt(_open("/dev/zero")),
                "zero w": _attempt(_open("/dev/zero", os.O_WRONLY)),
                "mknod null": _attempt(_mknod(tmp_path / f"null-{os.getpid()}", stat.S_IFCHR, (1, 3)))}

    with _throwaway_cgroup(root) as cg:
        devices_bpf.attach(cg, rules)
        inside = _in_child(probe, cg)
    assert inside == {"null r": "ok", "null w": "EPERM", "null rw": "EPERM", "zero r": "EPERM", "zero w": "ok",
                      "mknod null": "EPERM"}
    assert set(_in_child(probe).values()) == {"ok"}  # the control


def test_allow_all_but_one_device(tmp_path, block):
    root = _v2_mount() or pytest.skip("no cgroup2 mount on this host")
    with _throwaway_cgroup(root) as cg:
        assert devices_bpf.attach(cg, ((True, "a *:* rwm"), (False, f"b {block[0]}:{block[1]} rwm")))
        inside = _in_child(lambda: _probe(tmp_path, block), cg)
    assert (inside["mknod block"], inside["open block"], inside["open kmsg"]) == ("EPERM", "ENOENT", "ok")


@pytest.fixture
def v2_as_netdiags(monkeypatch):
    """cgroups.py pointed at the host's cgroup2 mount, as on a v2-only host, under a parent of its own."""
    root = _v2_mount() or pytest.skip("no cgroup2 mount on this host")
    parent = f"netdiag-devtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(cgroups, "BASE", root)
    monkeypatch.setenv("NETDIAG_CGROUP_PARENT", parent)
    assert cgroups.is_v2()
    ids = []
    try:
        yield root / parent, ids
    finally:
        for cid in ids:
            cgroups.remove(cid)
        cgroups.remove_parent()
        assert not (root / parent).exists()


def test_cgroups_create_attaches_the_filter_on_v2_and_not_for_privileged(v2_as_netdiags, tmp_path, block):
    parent, ids = v2_as_netdiags
    ids += [uuid.uuid4().hex * 2, uuid.uuid4().hex * 2]
    default, privileged = ids
    cgroups.create(default, devices=security.devices({}))
    cgroups.create(privileged, devices=security.devices({"Privileged": True}))
    assert len(devices_bpf.programs(parent / default[:12])) == 1
    assert devices_bpf.programs(parent / privileged[:12]) == []
    confined = _in_child(lambda: _probe(tmp_path, block), parent / default[:12])
    free = _in_child(lambda: _probe(tmp_path, block), parent / privileged[:12])
    assert (confined["open block"], confined["open /dev/null rw"], confined["mknod block"]) == ("EPERM", "ok", "ok")
    assert (free["open block"], free["open kmsg"]) == ("ok", "ok")


def test_cgroups_create_leaves_no_cgroup_when_the_rules_cannot_be_enforced(v2_as_netdiags):
    parent, ids = v2_as_netdiags
    ids.append(uuid.uuid4().hex * 2)
    with pytest.raises(InvalidArgument, match="punch a hole"):
        cgroups.create(ids[0], devices=((False, "a *:* rwm"), (True, "c *:* m"), (False, "c 1:3 m")))
    assert not (parent / ids[0][:12]).exists()


def test_a_refused_program_reports_the_verifiers_words():
    with pytest.raises(KernelError) as e:
        devices_bpf.load(devices_bpf.assemble([devices_bpf.exit_()]))  # returns R0, never set
    assert "R0 !read_ok" in str(e.value) and e.value.exit_code == 3


def test_a_directory_outside_cgroup_v2_is_a_clear_error(tmp_path):
    with pytest.raises(KernelError, match="not a directory of the cgroup v2 hierarchy"):
        devices_bpf.attach(tmp_path, security.DEFAULT_DEVICES)
