"""Pure runtime logic: validation, references, the image store on a temp root, logs, lifecycle config."""
import json

import pytest

from runtime import validate
from runtime.errors import Conflict, InvalidArgument, KernelError, NotFound
from runtime.images import refs


@pytest.mark.parametrize("text,value", [("6m", 6 * 2**20), ("64M", 64 * 2**20), ("1g", 2**30), ("1.5g", int(1.5 * 2**30)),
                                        ("7000000", 7000000), ("10mb", 10 * 2**20)])
def test_memory_sizes(text, value):
    assert validate.memory_bytes(text) == value


@pytest.mark.parametrize("text", ["lots", "-1m", "5m", "1x", "", "99999999999999999999t", "8388608t"])
def test_bad_memory_sizes(text):
    with pytest.raises(InvalidArgument) as e:
        validate.memory_bytes(text)
    assert "--memory" in str(e.value) or "too small" in str(e.value)


def test_the_largest_memory_size_is_exact():
    assert validate.memory_bytes("8388607t") == 8388607 * 2**40  # under 2**63, no float rounding


@pytest.mark.parametrize("name,ok", [("web1", True), ("a.b-c_d", True), ("-x", False), ("bad name", False),
                                     ("/web", True), ("x" * 129, False), ("", False), ("a", False), ("/a", False),
                                     ("ab", True), ("0.", True), ("_a", False)])
def test_container_names(name, ok):  # Docker's rule: ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$ (so at least 2 characters)
    if ok:
        assert validate.container_name(name) == name.removeprefix("/")
    else:
        with pytest.raises(InvalidArgument):
            validate.container_name(name)


def test_a_one_character_name_is_refused_in_dockers_words():
    with pytest.raises(InvalidArgument) as e:
        validate.container_name("a")
    assert str(e.value).startswith("Invalid container name (a), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed.")


def test_cpus_and_pids():
    assert validate.nano_cpus("0.5") == 500_000_000
    for bad in ("0", "abc", "-1", "5000"):
        with pytest.raises(InvalidArgument):
            validate.nano_cpus(bad)
    assert validate.pids_limit(-1) == -1
    with pytest.raises(InvalidArgument):
        validate.pids_limit(0)


@pytest.mark.parametrize("ref,want", [("busybox", ("busybox", "latest")), ("lab/web:1.0", ("lab/web", "1.0")),
                                      ("localhost:5000/x", ("localhost:5000/x", "latest")),
                                      ("docker.io/library/busybox:1", ("busybox", "1"))])
def test_refs(ref, want):
    assert refs.parse_ref(ref) == want


@pytest.mark.parametrize("ref", ["Upper", "a:", "a:-x", "a//b", "-a"])
def test_bad_refs(ref):
    with pytest.raises(InvalidArgument):
        refs.parse_ref(ref)


def test_require_root_says_what_to_do(monkeypatch):
    from runtime.kernel import syscalls

    monkeypatch.setattr(syscalls.os, "geteuid", lambda: 1000)
    with pytest.raises(KernelError) as e:
        syscalls.require_root("run a container")
    assert "as root" in str(e.value) and e.value.exit_code == 3


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDIAG_ROOT", str(tmp_path / "nd"))
    return tmp_path / "nd"


def _image(tmp_path, name, content=b"x"):
    from runtime.images import layers, store

    src = tmp_path / f"src-{name}-{content.hex()}"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "f").write_bytes(content)
    tar = tmp_path / f"{name}-{content.hex()}.tar"
    layers.tar_directory(src, tar)
    digest = store.put_layer_file(tar)
    return store.commit({"config": {"Cmd": ["sh"]}}, [digest], name)


def test_store_commit_get_prefix_and_remove(root, tmp_path):
    from runtime.images import store

    a = _image(tmp_path, "a:1", b"aaa")
    b = _image(tmp_path, "b:1", b"bbb")
    assert store.get("a:1").id == a.id and store.get(a.id[7:19]).id == a.id
    assert (root / "images" / "oci-layout").exists()
    index = json.loads((root / "images" / "index.json").read_text())
    assert {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]} == {"a:1", "b:1"}
    assert (store.layer_dir(a.layers[0]) / "etc" / "f").read_bytes() == b"aaa"
    with pytest.raises(Conflict):
        store.remove("a:1", users=["web"])
    store.remove("a:1")
    with pytest.raises(NotFound):
        store.get("a:1")
    assert not store.blob_path(a.layers[0]).exists() and not store.blob_path(a.id).exists()
    assert store.blob_path(b.layers[0]).exists()


def test_shared_layers_survive_removal_of_one_tag(root, tmp_path):
    from runtime.images import store

    a = _image(tmp_path, "a:1", b"same")
    b = _image(tmp_path, "b:1", b"same")
    assert a.layers == b.layers
    store.remove("a:1")
    assert store.blob_path(b.layers[0]).exists()
    assert store.get("b:1").id == b.id


def test_retag_moves_the_tag(root, tmp_path):
    from runtime.images import store

    old = _image(tmp_path, "app", b"v1")
    new = _image(tmp_path, "app", b"v2")
    assert store.get("app").id == new.id
    assert not store.blob_path(old.layers[0]).exists()  # nothing else needed the old layer


def test_log_writer_splits_lines_and_streams(tmp_path):
    from runtime.containers.stdio import LogWriter, read_log

    w = LogWriter(tmp_path / "log")
    w.write("stdout", b"one\ntw")
    w.write("stderr", b"err\n")
    w.write("stdout", b"o\n")
    w.write("stdout", b"tail")
    records, offset = read_log(tmp_path / "log")
    assert [(r["stream"], r["log"]) for r in records] == [("stdout", "one\n"), ("stderr", "err\n"), ("stdout", "two\n")]
    w.close()
    more, _ = read_log(tmp_path / "log", offset)
    assert [(r["stream"], r["log"]) for r in more] == [("stdout", "tail")]


class _Img:
    id = "sha256:" + "0" * 64
    run_config = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Entrypoint": None, "WorkingDir": "/app"}


def test_build_config_merges_image_and_flags():
    from runtime.containers.lifecycle import build_config

    cfg = build_config(_Img(), "img", ["echo", "hi"], env=["A=2", "B=3"], memory="64m")
    assert cfg["Config"]["Env"] == ["PATH=/bin", "A=2", "B=3"]
    assert (cfg["Path"], cfg["Args"]) == ("echo", ["hi"])
    assert cfg["Config"]["WorkingDir"] == "/app" and cfg["HostConfig"]["Memory"] == 64 * 2**20
    assert build_config(_Img(), "img", [])["Path"] == "sh"
    with pytest.raises(InvalidArgument):
        build_config(_Img(), "img", [], network="bridge2")
    with pytest.raises(InvalidArgument):
        build_config(_Img(), "img", [], network="none", publish=["80:80"])


def test_status_lines():
    from runtime.containers import container_records

    c = container_records.Container("x" * 64, {"Name": "n", "Created": container_records.now_iso()}, {"Status": "exited", "ExitCode": 3, "FinishedAt": container_records.now_iso()})
    assert container_records.status_line(c).startswith("Exited (3)")
    assert container_records.human_duration(1) == "1 second" and container_records.human_duration(90) == "About a minute"
    # Docker's words past a day (go-units HumanDuration): what `images` shows for an old image
    day = 86400
    assert [container_records.human_duration(d * day) for d in (1, 3, 20, 90, 1000)] == \
        ["24 hours", "3 days", "2 weeks", "3 months", "2 years"]


def test_generated_names_never_run_out():
    from runtime.containers import container_records

    used = {f"{a}_{n}" for a in container_records._ADJ for n in container_records._NOUN}  # every plain name is taken
    names = set()
    for _ in range(200):
        name = container_records._free_name(used | names)
        assert name not in used and name not in names
        names.add(name)


@pytest.mark.parametrize("text,seconds", [("5", 5.0), ("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("0.5", 0.5), ("2h", 7200.0)])
def test_durations_like_docker(text, seconds):
    from runtime import validate

    assert validate.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "1s2", "-1s", "0"])
def test_bad_durations_are_clear_errors(text):
    from runtime import validate

    with pytest.raises(InvalidArgument):
        validate.duration(text, "--health-interval")


def test_inspect_shows_published_ports_as_dockers_port_bindings():
    from runtime.containers.inspect import docker_host_config
    from runtime.networks import ports

    host = {"NetworkMode": "bridge", "Publish": [ports.parse("127.0.0.1:8080:80"), ports.parse("53/udp"),
                                                  ports.parse("9000-9001:9000-9001")]}
    out = docker_host_config(host)
    assert "Publish" not in out and out["NetworkMode"] == "bridge"
    assert out["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                                   "53/udp": [{"HostIp": "", "HostPort": ""}],
                                   "9000/tcp": [{"HostIp": "", "HostPort": "9000"}],
                                   "9001/tcp": [{"HostIp": "", "HostPort": "9001"}]}


def test_record_timestamps_read_without_datetime_agree_with_datetime():
    import datetime
    import random

    from runtime.containers.container_records import now_iso, parse_iso

    rng = random.Random(24)
    for t in [0.0, 951782400.5, 4102444799.999999] + [rng.uniform(0, 4e9) for _ in range(2000)]:  # 2000-02-29, 2099-12-31
        ts = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        assert abs(parse_iso(ts) - datetime.datetime.fromisoformat(ts[:-1] + "+00:00").timestamp()) < 1e-6, ts
    assert now_iso().endswith("Z") and len(now_iso()) == 27
    assert parse_iso("2026-12-07T23:40:36Z") == datetime.datetime(2026, 12, 7, 23, 40, 36, tzinfo=datetime.timezone.utc).timestamp()
