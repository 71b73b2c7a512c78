"""`load` of the layout `docker save` wrote before Docker 25 (manifest.json, <hex>.json configs,
<id>/layer.tar): the same checks as an OCI layout, all before anything is stored. On a private
NETDIAG_ROOT, without namespaces."""
import hashlib
import json
import tarfile
from pathlib import Path

from runtime.images import archive, store
from tests.ocikit import Archive, digest, entry, tar_bytes
from tests.unit.test_archive_validation import SMALL, _load, _state, assert_refused_storing_nothing, root  # noqa: F401 - root is a fixture

OTHER = tar_bytes([entry("srv", tarfile.DIRTYPE), entry("srv/page", data=b"page\n")])
EMPTY = tar_bytes([])


class Legacy:
    """A `docker save` archive of Docker 20.10, member for member: `<v1 id>/{VERSION,json,layer.tar}`,
    a layer.tar repeated within the archive is a symlink to the first, as Docker writes it."""

    def __init__(self):
        self.members: dict[str, tuple] = {}  # path -> (TarInfo, data)
        self.manifest: list[dict] = []
        self.first: dict[str, str] = {}  # diff id -> path of its layer.tar

    def image(self, layers: list[bytes], tags=("old:1",), *, diff_ids=None, config_edit=None) -> str:
        """Add an image; its config's sha256 hex (the image id Docker shows)."""
        config = {"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
                  "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids or [digest(x) for x in layers]}}
        if config_edit:
            config_edit(config)
        cfg = json.dumps(config).encode()
        cfg_hex = hashlib.sha256(cfg).hexdigest()
        self._add(entry(f"{cfg_hex}.json", data=cfg))
        paths, parent = [], ""
        for data in layers:
            v1 = hashlib.sha256((parent + digest(data)).encode()).hexdigest()
            parent = v1
            self._add(entry(f"{v1}/", tarfile.DIRTYPE))
            self._add(entry(f"{v1}/VERSION", data=b"1.0"))
            self._add(entry(f"{v1}/json", data=json.dumps({"id": v1}).encode()))
            if digest(data) in self.first:
                self._add(entry(f"{v1}/layer.tar", tarfile.SYMTYPE, linkname="../" + self.first[digest(data)]))
            else:
                self._add(entry(f"{v1}/layer.tar", data=data))
                self.first[digest(data)] = f"{v1}/layer.tar"
            paths.append(f"{v1}/layer.tar")
        self.manifest.append({"Config": f"{cfg_hex}.json", "RepoTags": list(tags) or None, "Layers": paths})
        return cfg_hex

    def _add(self, member) -> None:
        self.members.setdefault(member[0].name, member)

    def write(self, path: Path, *, manifest: bytes | None = None, replace: dict | None = None, extra=()) -> Path:
        members = dict(self.members)
        for name, data in (replace or {}).items():
            members[name] = entry(name, data=data)
        doc = manifest if manifest is not None else json.dumps(self.manifest).encode()
        repos = {t.split(":")[0]: {t.split(":")[1]: "x"} for m in self.manifest for t in m["RepoTags"] or ()}
        tail = [entry("manifest.json", data=doc), entry("repositories", data=json.dumps(repos).encode())]
        Path(path).write_bytes(tar_bytes([*members.values(), *tail, *extra]))
        return Path(path)


def test_a_docker_20_archive_loads_with_dockers_image_id_and_the_same_one_every_time(root, tmp_path):
    a = Legacy()
    cfg_hex = a.image([SMALL, EMPTY, OTHER, EMPTY], ("old:1", "docker.io/library/also:2"))
    path = a.write(tmp_path / "old.tar")
    assert _load(path) == ["Loaded image: old:1", "Loaded image: also:2"]
    img = store.get("old:1")
    assert img.id == "sha256:" + cfg_hex == store.get("also:2").id
    assert img.layers == [digest(x) for x in (SMALL, EMPTY, OTHER, EMPTY)]  # the repeated layer via its symlink
    assert (store.layer_dir(img.layers[0]) / "etc/motd").read_text() == "hi\n"
    assert (root / "layers" / digest(OTHER)[7:] / "srv/page").read_text() == "page\n"  # extracted at load
    assert store.get("old:1").run_config["Cmd"] == ["sh"]
    before = _state(root)
    assert _load(path) == ["Loaded image: old:1", "Loaded image: also:2"]
    assert store.get("old:1").id == img.id and store.get("old:1").manifest_digest == img.manifest_digest
    assert _state(root) == before and not list(root.glob(".scratch-*"))


def test_an_untagged_image_loads_by_id(root, tmp_path):
    a = Legacy()
    cfg_hex = a.image([SMALL], ())
    assert _load(a.write(tmp_path / "untagged.tar")) == [f"Loaded image ID: sha256:{cfg_hex}"]
    assert store.get(cfg_hex[:12]).id == "sha256:" + cfg_hex


def test_docker_25s_archive_loads_by_its_index_or_by_manifest_json_alone(root, tmp_path):
    """Docker 25+ writes an OCI layout plus a manifest.json naming blobs/sha256/...: either is enough."""
    oci_archive = Archive()
    man = oci_archive.image([SMALL], "new:1")
    config = json.loads(oci_archive.blobs[man])["config"]["digest"]
    legacy = json.dumps([{"Config": f"blobs/sha256/{config[7:]}", "RepoTags": ["new:2"],
                          "Layers": [f"blobs/sha256/{digest(SMALL)[7:]}"]}]).encode()
    members = [("blobs/sha256/" + d[7:], b) for d, b in oci_archive.blobs.items()]
    with_index = [*members, ("index.json", json.dumps({"schemaVersion": 2, "manifests": oci_archive.index}).encode()),
                  ("manifest.json", legacy)]
    (tmp_path / "both.tar").write_bytes(tar_bytes([entry(n, data=b) for n, b in with_index]))
    assert _load(tmp_path / "both.tar") == ["Loaded image: new:1"]  # the index wins
    (tmp_path / "manifest-only.tar").write_bytes(tar_bytes([entry(n, data=b) for n, b in [*members, ("manifest.json", legacy)]]))
    assert _load(tmp_path / "manifest-only.tar") == ["Loaded image: new:2"]
    assert store.get("new:1").id == store.get("new:2").id == config


def _broken(tmp_path) -> dict:
    """name -> (archive path, words the error must contain)."""
    out = {}
    a = Legacy()
    cfg_hex = a.image([SMALL, OTHER])
    first_layer = a.manifest[0]["Layers"][0]

    out["layer changed"] = (a.write(tmp_path / "changed.tar", replace={first_layer: SMALL[:-1] + b"\x01"}),
                            [f"layer #1 '{first_layer}' does not match the config's diff_id", digest(SMALL)[:20]])
    swapped = Legacy()
    swapped.image([SMALL, OTHER], diff_ids=[digest(OTHER), digest(SMALL)])
    out["layers in the wrong order"] = (swapped.write(tmp_path / "swapped.tar"), ["does not match the config's diff_id"])
    fewer = Legacy()
    fewer.image([SMALL], diff_ids=[digest(SMALL), digest(OTHER)])
    out["config with more layers"] = (fewer.write(tmp_path / "fewer.tar"), ["describes 2 layers, manifest.json names 1"])
    no_rootfs = Legacy()
    no_rootfs.image([SMALL], config_edit=lambda c: c.pop("rootfs"))
    out["config without diff_ids"] = (no_rootfs.write(tmp_path / "norootfs.tar"), ["no rootfs.diff_ids"])
    out["config not its digest"] = (a.write(tmp_path / "cfg.tar", replace={f"{cfg_hex}.json": b'{"rootfs": {}}'}),
                                    [f"'{cfg_hex}.json' is corrupt", "does not match the digest in its name"])
    man = [dict(a.manifest[0], Layers=[first_layer, "nothere/layer.tar"])]
    out["missing layer"] = (a.write(tmp_path / "missing.tar", manifest=json.dumps(man).encode()),
                            ["manifest.json image #1: its layer #2 names 'nothere/layer.tar', which is not in the archive"])
    man = [dict(a.manifest[0], Config="0" * 64 + ".json")]
    out["missing config"] = (a.write(tmp_path / "nocfg.tar", manifest=json.dumps(man).encode()), ["its Config names", "not in the archive"])
    man = [dict(a.manifest[0], Layers=["../../etc/passwd", a.manifest[0]["Layers"][1]])]
    out["manifest names a path outside"] = (a.write(tmp_path / "outside.tar", manifest=json.dumps(man).encode()),
                                            ["image #1: its layer #1 names '../../etc/passwd', which points outside the archive's root"])
    out["member outside"] = (a.write(tmp_path / "member.tar", extra=[entry("../escaped", data=b"x")]),
                             ["member '../escaped' points outside the archive's root"])
    out["absolute member"] = (a.write(tmp_path / "abs.tar", extra=[entry("/etc/cron.d/x", data=b"x")]), ["points outside"])
    evil = Legacy()
    evil.image([SMALL])
    evil.members[evil.manifest[0]["Layers"][0]] = entry(evil.manifest[0]["Layers"][0], tarfile.SYMTYPE, linkname="../../../etc/shadow")
    out["layer links outside"] = (evil.write(tmp_path / "link.tar"), ["links outside the archive's root"])
    hostile = Legacy()
    hostile.image([SMALL, tar_bytes([entry("../../escaped", data=b"x")])])
    out["hostile layer"] = (hostile.write(tmp_path / "hostile.tar"), ["contains '..'"])
    out["huge manifest"] = (a.write(tmp_path / "huge.tar", manifest=b"[" + b" " * (5 << 20) + b"]"),
                            ["manifest.json is larger than 4 MiB"])
    out["deep manifest"] = (a.write(tmp_path / "deep.tar", manifest=b"[" * 100_000 + b"]" * 100_000),
                            ["manifest.json is nested more than 64 levels deep"])
    out["manifest not a list"] = (a.write(tmp_path / "obj.tar", manifest=b"{}"), ["not a list of images"])
    man = [dict(a.manifest[0], RepoTags=["Not A Name"])]
    out["bad tag"] = (a.write(tmp_path / "tag.tar", manifest=json.dumps(man).encode()), ["anifest.json names an invalid image", "Not A Name"])
    dup = a.manifest[0]["Layers"][1]
    out["member twice"] = (a.write(tmp_path / "twice.tar", extra=[entry(dup, data=b"other")]), [f"'{dup}' appears twice"])
    return out


def test_each_broken_docker_archive_is_refused_clearly_and_nothing_is_stored(root, tmp_path):
    assert_refused_storing_nothing(root, _broken(tmp_path))
    assert not (tmp_path.parent / "escaped").exists()


def test_a_gzipped_docker_archive_loads_from_a_pipe(root, tmp_path):
    """`docker save web | gzip | ssh host netdiag load`: read once, front to back, never seeked."""
    import gzip
    import io

    a = Legacy()
    a.image([SMALL, OTHER])
    data = gzip.compress(a.write(tmp_path / "p.tar").read_bytes())

    class Pipe(io.RawIOBase):
        def __init__(self):
            self.data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            chunk = self.data.read(min(len(b), 4096))
            b[:len(chunk)] = chunk
            return len(chunk)

    assert archive.load(io.BufferedReader(Pipe()), "-") == ["Loaded image: old:1"]
    assert store.get("old:1").layers == [digest(SMALL), digest(OTHER)]


def test_a_repeated_layer_is_one_overlay_lowerdir_at_its_topmost_place():
    """overlayfs refuses a lowerdir given twice (ELOOP): an image repeating a layer must still run."""
    from runtime.containers.rootfs import top_first_once

    a, b, c = Path("/l/a"), Path("/l/b"), Path("/l/c")
    assert top_first_once([a, b, c, b]) == [b, c, a]
    assert top_first_once([a, b, c]) == [c, b, a]
