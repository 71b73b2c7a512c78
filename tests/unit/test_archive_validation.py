"""`load` and `import` check a whole archive before storing anything; `prune` removes the blobs
nothing refers to. On a private NETDIAG_ROOT, without namespaces."""
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from runtime.errors import InvalidArgument
from runtime.images import archive, oci, store
from tests.ocikit import Archive, busybox_root, digest, entry, tar_bytes


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path / "nd"))
    return tmp_path / "nd"


def _state(root: Path) -> dict:
    """Everything in the state root (names and bytes), for 'nothing was stored' checks."""
    out = {}
    for p in sorted(root.rglob("*")) if root.exists() else ():
        rel = str(p.relative_to(root))
        if rel.startswith("locks"):
            continue
        out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


SMALL = tar_bytes([entry("etc", tarfile.DIRTYPE), entry("etc/motd", data=b"hi\n")])


def _good(tmp_path, ref="ok:1") -> tuple[Archive, Path]:
    a = Archive()
    a.image([SMALL], ref)
    return a, a.write(tmp_path / "good.tar")


def _load(path: Path):
    with open(path, "rb") as f:
        return archive.load(f, str(path))


# ------------------------------------------------------------------------------ pure checks

def test_index_takes_dockers_full_name_over_the_bare_tag():
    d = digest(b"m")
    notes = {"io.containerd.image.name": "docker.io/library/hello-world:latest", oci.REF_ANNOTATION: "latest"}
    assert oci.index(json.dumps({"manifests": [{"digest": d, "annotations": notes}]}).encode()) == [(d, "hello-world:latest")]
    notes = {"io.containerd.image.name": "docker.io/lab/web:1"}
    assert oci.index(json.dumps({"manifests": [{"digest": d, "annotations": notes}]}).encode()) == [(d, "lab/web:1")]
    assert oci.index(json.dumps({"manifests": [{"digest": d}]}).encode()) == [(d, None)]


@pytest.mark.parametrize("data, says", [
    (b"{nope", "not valid JSON"), (b'{"manifests": null}', "lists no manifests"), (b"[]", "not a JSON object"), (b'{"manifests": []}', "lists no manifests"),
    (b'{"manifests": [{"digest": "sha256:12"}]}', "not a sha256 digest"),
    (json.dumps({"manifests": [{"digest": digest(b"x"), "mediaType": oci.INDEX_TYPE}]}).encode(), "nested image index"),
    (json.dumps({"manifests": [{"digest": digest(b"x"), "annotations": {oci.REF_ANNOTATION: 7}}]}).encode(), "not a string"),
    (b'{"manifests": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "index.json is nested more than 64 levels deep"),
    (json.dumps({"manifests": [{"digest": "sha256:" + "0" * 5_000_000}]}).encode(), r"'sha256:0+\.\.\. \(5000007 characters\) is not"),
])
def test_index_problems_are_named(data, says):
    with pytest.raises(oci.Malformed, match=says):
        oci.index(data)


def _manifest(**changes) -> bytes:
    m = {"schemaVersion": 2, "config": {"digest": digest(b"c")}, "layers": [{"digest": digest(b"l"), "size": 1}]}
    m.update(changes)
    return json.dumps({k: v for k, v in m.items() if v is not None}).encode()


@pytest.mark.parametrize("data, says", [
    (_manifest(layers=None), "no list of layers"), (_manifest(config=None), "names no config"),
    (_manifest(schemaVersion=1), "schemaVersion"), (_manifest(config={"digest": "md5:x"}), "not a sha256 digest"),
    (_manifest(layers=[{"digest": digest(b"l"), "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}]), "uncompressed"),
    (_manifest(layers=[{"digest": digest(b"l"), "size": -1}]), "invalid size"),
    (_manifest(layers=[{"digest": digest(b"l"), "size": 10**18}]), "invalid size 1000000000000000000 \\(more than 1 TiB\\)"),
    (_manifest(layers=[{"digest": digest(b"l"), "size": 1.5}]), "invalid size 1.5"),
])
def test_manifest_problems_are_named(data, says):
    with pytest.raises(oci.Malformed, match=says):
        oci.manifest(data)


@pytest.mark.parametrize("cfg, says", [
    ({"rootfs": {"diff_ids": [digest(b"other")]}}, "diff_ids do not match"),
    ({"config": {"Env": "PATH=/bin"}}, "config.Env is not a list"), ({"config": {"Cmd": [1]}}, "config.Cmd"),
    ({"config": {"WorkingDir": 3}}, "config.WorkingDir"), ({"config": []}, "'config' is not an object"),
])
def test_config_problems_are_named(cfg, says):
    with pytest.raises(oci.Malformed, match=says):
        oci.config(json.dumps(cfg).encode(), [digest(b"l")])


# ------------------------------------------------------------------------------ load

def test_a_good_archive_loads_with_its_layers_checked_and_extracted(root, tmp_path):
    a, path = _good(tmp_path)
    assert _load(path) == ["Loaded image: ok:1"]
    img = store.get("ok:1")
    assert (store.layer_dir(img.layers[0]) / "etc/motd").read_text() == "hi\n"
    assert (root / "layers" / img.layers[0].split(":")[1]).is_dir()  # extracted at load, not at run
    assert not list(root.glob(".scratch-*"))


def _broken_archives(tmp_path) -> dict:
    """name -> (archive path, words the error must contain)."""
    out = {}
    a, _ = _good(tmp_path)
    out["bad index JSON"] = (a.write(tmp_path / "idx.tar", index=b'{"manifests": ['), ["index.json", "not valid JSON"])
    b = Archive()
    b.image([SMALL], manifest_edit=lambda m: m.pop("layers"))
    out["manifest without layers"] = (b.write(tmp_path / "nolayers.tar"), ["no list of layers"])
    c = Archive()
    c.image([SMALL], manifest_edit=lambda m: m.pop("config"))
    out["manifest without config"] = (c.write(tmp_path / "nocfg.tar"), ["names no config"])
    layer = digest(SMALL)
    out["missing layer blob"] = (a.write(tmp_path / "missing.tar", drop=(layer,)), [layer, "missing"])
    man = json.loads(a.blobs[a.index[0]["digest"]])
    out["missing config blob"] = (a.write(tmp_path / "nocfgblob.tar", drop=(man["config"]["digest"],)), ["missing"])
    out["digest mismatch"] = (a.write(tmp_path / "flip.tar", replace={layer: SMALL[:-1] + b"\x01"}),
                              [f"blobs/sha256/{layer[7:]}", "does not match its digest"])
    for name, member, says in (("dotdot", entry("../escaped", data=b"x"), "contains '..'"),
                               ("absolute", entry("/etc/escaped", data=b"x"), "absolute path"),
                               ("device", entry("dev/sda", tarfile.BLKTYPE, dev=(8, 0)), "device node"),
                               ("through a symlink", None, "through the symlink")):
        members = [member] if member else [entry("etc", tarfile.SYMTYPE, linkname="/etc"), entry("etc/escaped", data=b"x")]
        h = Archive()
        h.image([SMALL, tar_bytes(members)])
        out[f"hostile layer: {name}"] = (h.write(tmp_path / f"hostile-{len(out)}.tar"), [says, "Layer "])
    lie = Archive()
    lie.image([SMALL], manifest_edit=lambda m: m["layers"][0].update(size=len(SMALL) + 1))
    out["layer size lie"] = (lie.write(tmp_path / "lie.tar"), [f"has {len(SMALL) + 1} bytes, its blob has {len(SMALL)}"])
    out["deep index"] = (a.write(tmp_path / "deep.tar", index=b"[" * 100_000 + b"]" * 100_000), ["index.json", "nested more than 64"])
    out["not a tar"] = ((tmp_path / "junk.tar"), ["not a readable tar archive"])
    (tmp_path / "junk.tar").write_bytes(b"\x00garbage" * 200)
    out["truncated tar"] = (tmp_path / "short.tar", ["not a readable tar archive"])
    (tmp_path / "short.tar").write_bytes(a.write(tmp_path / "full.tar").read_bytes()[:1536 + 20])  # inside index.json
    out["no index"] = (tmp_path / "noindex.tar", ["neither index.json nor manifest.json"])
    (tmp_path / "noindex.tar").write_bytes(tar_bytes([entry("repositories", data=b"{}")]))
    return out


def test_each_malformed_archive_is_bad_input_named_and_nothing_is_stored(root, tmp_path):
    assert_refused_storing_nothing(root, _broken_archives(tmp_path))


def assert_refused_storing_nothing(root: Path, archives: dict) -> None:
    """Each of `archives` (name -> (path, words)) is bad input naming the file, with those words,
    and leaves the store (which has busybox in it) exactly as it was."""
    store.get("busybox")
    before = _state(root)
    for name, (path, words) in archives.items():
        with pytest.raises(InvalidArgument) as e:
            _load(path)
        msg = str(e.value)
        assert e.value.exit_code == 2, name
        assert str(path) in msg and all(w in msg for w in words), (name, msg)
        assert _state(root) == before, name
        assert not list(root.glob(".scratch-*")), name


def test_ctrl_c_while_loading_leaves_nothing(root, tmp_path):
    store.get("busybox")
    before = _state(root)
    a = Archive()
    a.image([SMALL, tar_bytes(busybox_root())])
    data = a.write(tmp_path / "big.tar").read_bytes()

    class Interrupted(io.RawIOBase):
        pos = 0

        def readable(self):
            return True

        def readinto(self, b):
            if self.pos > len(data) // 2:
                raise KeyboardInterrupt
            n = min(len(b), 65536, len(data) - self.pos)
            b[:n] = data[self.pos:self.pos + n]
            self.pos += n
            return n

    with pytest.raises(KeyboardInterrupt):
        archive.load(io.BufferedReader(Interrupted()), "big.tar")
    assert _state(root) == before and not list(root.glob(".scratch-*"))


@pytest.mark.parametrize("member, says", [
    (entry("../../escaped", data=b"x"), "contains '..'"), (entry("/abs", data=b"x"), "absolute path"),
    (entry("dev/null", tarfile.CHRTYPE, dev=(1, 3)), "device node"),
])
def test_import_of_a_hostile_tar_names_the_file_and_stores_nothing(root, tmp_path, member, says):
    store.get("busybox")
    before = _state(root)
    bad = tmp_path / "rootfs.tar"
    bad.write_bytes(tar_bytes([entry("etc", tarfile.DIRTYPE), member]))
    with pytest.raises(InvalidArgument) as e, open(bad, "rb") as f:
        archive.import_rootfs(f, "evil", name=str(bad))
    assert e.value.exit_code == 2 and str(bad) in str(e.value) and says in str(e.value)
    assert "/.scratch" not in str(e.value)  # the user's file, not a temp path
    assert _state(root) == before and not (tmp_path / "escaped").exists()


# ------------------------------------------------------------------------------ prune

def _orphan(root: Path, content: bytes) -> str:
    d = digest(content)
    (root / "images/blobs/sha256" / d[7:]).write_bytes(content)
    (root / "layers" / d[7:]).mkdir(parents=True)
    return d


def test_prune_removes_exactly_the_unreferenced_blobs(root, tmp_path, monkeypatch):
    bb = store.get("busybox")
    a, path = _good(tmp_path)
    _load(path)
    ok = store.get("ok:1")
    orphan = _orphan(root, b"orphan")
    cached = _orphan(root, b"kept by the build cache")
    (root / "build-cache").mkdir()
    (root / "build-cache" / "k.json").write_text(json.dumps({"layer": cached, "blobs": [cached], "created": "x"}))
    (root / "build-cache" / "junk.json").write_text("{")  # a corrupt cache entry keeps nothing, breaks nothing
    dead = root / ".scratch-load-999999999-1-abc"
    dead.mkdir()
    mine = store.state.scratch_dir("build")
    live_dir = mine.__enter__()
    stale_tmp = root / "images/blobs/sha256" / ".deadbeef.999999999.tmp"
    stale_tmp.write_bytes(b"half")
    store.remove("ok:1")  # removal deletes its own blobs at once...
    assert not store.blob_path(ok.manifest_digest).exists()

    lines, freed = store.prune()
    assert freed == len(b"orphan") + len(b"half")
    assert not store.blob_path(orphan).exists() and not (root / "layers" / orphan[7:]).exists()
    assert store.blob_path(cached).exists() and (root / "layers" / cached[7:]).exists()
    for d in (bb.manifest_digest, bb.id, *bb.layers):
        assert store.blob_path(d).exists()
    assert not dead.exists() and live_dir.exists() and not stale_tmp.exists()
    mine.__exit__(None, None, None)
    assert store.get("busybox").id == bb.id


def test_image_prune_removes_untagged_images_unless_a_container_uses_them(root, tmp_path):
    from runtime.containers import model

    a = Archive()
    kept = a.image([SMALL], None)
    gone = a.image([tar_bytes([entry("other", data=b"2")])], None)
    _load(a.write(tmp_path / "untagged.tar"))
    kept_id = json.loads(a.blobs[kept])["config"]["digest"]
    gone_id = json.loads(a.blobs[gone])["config"]["digest"]
    model.create_record({"Image": kept_id, "Config": {}, "HostConfig": {}}, "user")
    lines, _ = store.prune("dangling")
    assert f"deleted: {gone_id}" in lines and not any(kept_id in line for line in lines)
    ids = {i.id for i in store.list_images()}
    assert kept_id in ids and gone_id not in ids and store.get("busybox")
    assert not store.blob_path(gone).exists() and store.blob_path(kept).exists()
    lines, _ = store.prune("all")  # busybox goes too (no container uses it); the used one stays
    assert {i.id for i in store.list_images()} == {kept_id}


def test_a_damaged_image_is_an_error_naming_it_and_can_be_removed(root, tmp_path):
    a, path = _good(tmp_path)
    _load(path)
    img = store.get("ok:1")
    store.blob_path(img.id).write_bytes(b"{broken")
    assert [i.broken for i in store.list_images() if "ok:1" in i.tags][0]
    with pytest.raises(Exception) as e:
        store.get("ok:1")
    assert "damaged" in str(e.value) and "netdiag rmi ok:1" in str(e.value)
    store.get("busybox")  # the others still work
    store.remove("ok:1")
    assert all("ok:1" not in i.tags for i in store.list_images())


def test_layer_errors_name_the_layer_not_a_temp_path(tmp_path):
    from runtime.errors import UnsafeArchive
    from runtime.images.layers import extract_layer

    t = tmp_path / "x.tar"
    t.write_bytes(tar_bytes([entry("../x", data=b"1")]))
    with pytest.raises(UnsafeArchive) as e:
        extract_layer(t, tmp_path / "d", "layer 0123456789ab")
    assert str(e.value).startswith("layer 0123456789ab: member '../x' refused") and str(t) not in str(e.value)
    assert os.listdir(tmp_path) == ["x.tar"]


def test_rmi_force_keeps_what_a_container_still_has_mounted_until_it_is_gone(root, tmp_path):
    from runtime.containers import model

    a, path = _good(tmp_path)
    _load(path)
    img = store.get("ok:1")
    c = model.create_record({"Image": img.id, "Config": {}, "HostConfig": {}}, "user")
    store.remove("ok:1", users=["user"], force=True)
    assert store.blob_path(img.id).exists() and store.blob_path(img.layers[0]).exists()
    assert (root / "layers" / img.layers[0][7:]).is_dir()  # a running container's lowerdir
    store.prune()
    assert store.blob_path(img.layers[0]).exists()
    model.delete_record(c)
    store.prune()
    assert not store.blob_path(img.layers[0]).exists() and not (root / "layers" / img.layers[0][7:]).exists()
