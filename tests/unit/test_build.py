"""The image builder's pure parts: config instructions, context escapes, cache keys, the layered
view of an image, COPY staging and the RUN diff clean-up. No root, no containers."""
import os
import stat
from pathlib import Path

import pytest

from runtime.errors import BuildError, InvalidArgument
from runtime.build import copy_step
from runtime.build.builder import _read_dockerfile, apply_config_instruction, cache_key, copy_cache_extra, state_id
from runtime.build.dockerfile import parse
from runtime.build.image_view import ImageView
from runtime.build.run_step import container_config, drop_runtime_stubs


def ins(line: str):
    return parse("FROM scratch\n" + line)[1]


def applied(*lines, cfg=None, cmd_set=False):
    cfg = {} if cfg is None else cfg
    for line in lines:
        apply_config_instruction(cfg, ins(line), cmd_set=cmd_set)
    return cfg


# ---------------------------------------------------------------- apply_config_instruction

def test_env_replaces_in_place_and_appends():
    cfg = applied("ENV B=2 A=x", cfg={"Env": ["PATH=/bin", "A=1"]})
    assert cfg["Env"] == ["PATH=/bin", "A=x", "B=2"]
    assert applied('ENV C "with space"')["Env"] == ["C=with space"]


@pytest.mark.parametrize("lines,expect", [
    (["WORKDIR /a", "WORKDIR b", "WORKDIR ../c/./d"], "/a/c/d"),
    (["WORKDIR rel"], "/rel"),
    (["WORKDIR /a/", "WORKDIR /x//y/"], "/x/y"),
])
def test_workdir_resolves_relative_paths_against_the_previous(lines, expect):
    assert applied(*lines)["WorkingDir"] == expect


def test_expose_cmd_label_user():
    cfg = applied("EXPOSE 80 53/udp", "EXPOSE 8000-8001", "CMD echo hi", "LABEL a=b c=d", "LABEL a=z",
                  "USER nobody")
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["Labels"] == {"a": "z", "c": "d"}
    assert cfg["User"] == "nobody"
    assert applied("USER 1000:1000")["User"] == "1000:1000"
    assert applied('CMD ["sleep", "1"]')["Cmd"] == ["sleep", "1"]


def test_entrypoint_resets_an_inherited_cmd_but_keeps_one_set_in_this_file():
    inherited = applied('ENTRYPOINT ["/entry"]', cfg={"Cmd": ["sh"]})
    assert inherited == {"Cmd": None, "Entrypoint": ["/entry"]}
    kept = applied('ENTRYPOINT top -b', cfg={"Cmd": ["-n", "1"]}, cmd_set=True)
    assert kept == {"Cmd": ["-n", "1"], "Entrypoint": ["/bin/sh", "-c", "top -b"]}


def test_healthcheck_in_docker_units_and_none():
    cfg = applied("HEALTHCHECK --interval=5s --retries=2 CMD curl -f http://x/ || exit 1")
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f http://x/ || exit 1"], "Interval": 5 * 10**9,
                                  "Timeout": 30 * 10**9, "StartPeriod": 0, "Retries": 2}
    assert applied('HEALTHCHECK CMD ["true"]')["Healthcheck"]["Test"] == ["CMD", "true"]
    assert applied("HEALTHCHECK NONE")["Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize("line", ["RUN true", "COPY a /b", "ARG X=1"])
def test_file_instructions_are_not_config(line):
    with pytest.raises(BuildError):
        apply_config_instruction({}, ins(line))


# ---------------------------------------------------------------- the build context

@pytest.fixture
def ctx(tmp_path):
    c = tmp_path / "ctx"
    (c / "sub").mkdir(parents=True)
    (c / "a.txt").write_text("a\n")
    (c / "b.txt").write_text("b\n")
    (c / "sub" / "inner").write_text("inner\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    (c / "link-in").symlink_to("a.txt")
    (c / "link-out").symlink_to(tmp_path / "outside.txt")
    (c / "dir-out").symlink_to(tmp_path)
    return c


@pytest.mark.parametrize("rel", ["../outside.txt", "sub/../../outside.txt", "..", "link-out", "dir-out/outside.txt",
                                 "/../outside.txt"])
def test_sources_outside_the_context_are_refused(ctx, rel):
    with pytest.raises(BuildError) as e:
        copy_step.inside_context(ctx, rel, "COPY", "Dockerfile line 3")
    assert "Dockerfile line 3: COPY may not read outside the build context" in str(e.value)


@pytest.mark.parametrize("rel,real", [("a.txt", "a.txt"), ("/a.txt", "a.txt"), ("sub/../a.txt", "a.txt"),
                                      ("link-in", "a.txt"), (".", ""), ("sub", "sub")])
def test_sources_inside_the_context(ctx, rel, real):
    assert copy_step.inside_context(ctx, rel) == Path(os.path.realpath(ctx / real))


def test_glob_sources_and_their_names(ctx):
    srcs = copy_step.resolve_sources(ctx, "COPY", ("*.txt", "link-in"), "Dockerfile line 2")
    assert [(s.name, s.path.name) for s in srcs] == [("a.txt", "a.txt"), ("b.txt", "b.txt"), ("link-in", "a.txt")]
    with pytest.raises(BuildError, match="line 2: COPY may not read outside"):
        copy_step.resolve_sources(ctx, "COPY", ("link-*",), "Dockerfile line 2")
    with pytest.raises(BuildError, match="line 2: COPY source 'nope' not found"):
        copy_step.resolve_sources(ctx, "COPY", ("nope",), "Dockerfile line 2")
    with pytest.raises(BuildError, match="matches no file"):
        copy_step.resolve_sources(ctx, "COPY", ("*.md",), "Dockerfile line 2")
    with pytest.raises(BuildError, match="URL"):
        copy_step.resolve_sources(ctx, "ADD", ("https://example.com/x.tgz",), "Dockerfile line 2")


# ---------------------------------------------------------------- cache keys

def copy_key(ctx, line, state="s0"):
    i = ins(line)
    _, extra = copy_cache_extra(ctx, i, "Dockerfile line 2")
    return cache_key(state, i, extra)


def test_copy_cache_key_follows_the_sources_only(ctx):
    key = copy_key(ctx, "COPY a.txt sub /dst/")
    (ctx / "b.txt").write_text("unrelated change\n")
    (ctx / "new-file").write_text("x")
    assert copy_key(ctx, "COPY a.txt sub /dst/") == key
    os.utime(ctx / "a.txt", (1, 1))  # mtimes do not count, as in Docker
    assert copy_key(ctx, "COPY a.txt sub /dst/") == key

    (ctx / "a.txt").write_text("changed\n")
    changed = copy_key(ctx, "COPY a.txt sub /dst/")
    assert changed != key
    (ctx / "sub" / "inner").chmod(0o755)
    assert copy_key(ctx, "COPY a.txt sub /dst/") != changed
    (ctx / "sub" / "added").write_text("")
    assert len({key, changed, copy_key(ctx, "COPY a.txt sub /dst/")}) == 3


def test_cache_key_depends_on_state_instruction_and_args(ctx):
    base = copy_key(ctx, "COPY a.txt /dst/")
    assert copy_key(ctx, "COPY a.txt /dst/", state="s1") != base
    assert copy_key(ctx, "COPY a.txt /other/") != base
    run = ins("RUN echo $V")
    assert cache_key("s", run, {"args": {"V": "1"}}) != cache_key("s", run, {"args": {"V": "2"}})
    assert state_id(["sha256:" + "a" * 64], {"Env": ["A=1"]}) != state_id(["sha256:" + "a" * 64], {"Env": ["A=2"]})


# ---------------------------------------------------------------- the layered view and COPY staging

@pytest.fixture
def image(tmp_path):
    """Two layers: bin -> usr/bin, a sticky /tmp, an /etc/passwd; the upper one replaces /opt."""
    low, high = tmp_path / "l0", tmp_path / "l1"
    for d in ("usr/bin", "tmp", "etc", "opt/old"):
        (low / d).mkdir(parents=True)
    (low / "tmp").chmod(0o1777)
    (low / "bin").symlink_to("usr/bin")
    (low / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (low / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    (high / "opt").mkdir(parents=True)
    (high / "opt/new").write_text("n")
    (high / "lib").symlink_to("/usr/lib")
    return ImageView([low, high])


def test_view_resolves_symlinks_inside_the_image(image):
    assert image.resolve("/bin/tool") == ("usr", "bin", "tool")
    assert image.resolve("/lib/../../../etc/passwd") == ("etc", "passwd")
    assert image.resolve("/lib/x") == ("usr", "lib", "x")
    assert image.is_dir(("usr", "bin")) and image.is_dir(image.resolve("/bin"))
    assert image.lstat(("opt", "old")) is not None and image.lstat(("nope",)) is None
    assert "app:x:1000" in image.read_text("/etc/passwd")


def stage(tmp_path, image, line, ctx, workdir="/"):
    i = ins(line)
    root = tmp_path / "stage"
    root.mkdir(parents=True, exist_ok=True)
    srcs = copy_step.resolve_sources(ctx, i.cmd, i.args[0], "Dockerfile line 2")
    st = copy_step.Stager(root, image, None)
    target, into = st.dest_paths(i.cmd, i.args[1], workdir, len(srcs), "Dockerfile line 2")
    for s in srcs:
        st.add(i.cmd, s, target, into, tmp_path, "Dockerfile line 2")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")), root


def test_copy_destinations(tmp_path, image, ctx):
    assert stage(tmp_path, image, "COPY a.txt /bin/", ctx)[0] == ["usr", "usr/bin", "usr/bin/a.txt"]
    root = stage(tmp_path, image, "COPY a.txt /tmp/renamed", ctx)[1]
    assert (root / "tmp/renamed").read_text() == "a\n"
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777   # the image's /tmp is kept as it is


def test_copy_dir_contents_into_workdir_and_existing_dirs(tmp_path, image, ctx):
    assert stage(tmp_path, image, "COPY sub .", ctx, workdir="/app")[0] == ["app", "app/inner"]
    assert stage(tmp_path / "2", image, "COPY a.txt /opt", ctx)[0] == ["opt", "opt/a.txt"]  # /opt is a dir
    with pytest.raises(BuildError, match="must be a directory and end with a /"):
        stage(tmp_path / "3", image, "COPY *.txt /file", ctx)


def test_chown_names_come_from_the_image(image):
    assert copy_step.parse_chown("app", image, "w") == (1000, 1000)
    assert copy_step.parse_chown("app:staff", image, "w") == (1000, 50)
    assert copy_step.parse_chown("7:8", image, "w") == (7, 8)
    with pytest.raises(BuildError, match="unable to find user 'ghost'"):
        copy_step.parse_chown("ghost", image, "w")


# ---------------------------------------------------------------- RUN

def test_run_container_config_keeps_env_over_args():
    cfg = container_config(["/bin/sh", "-c", "true"], {"Env": ["A=env"], "User": "nobody", "WorkingDir": "/w"},
                           {"A": "arg", "B": "arg"}, "sha256:" + "0" * 64, "busybox")
    assert cfg["Config"]["Env"] == ["A=env", "B=arg"]
    assert (cfg["Path"], cfg["Args"]) == ("/bin/sh", ["-c", "true"])
    assert cfg["Config"]["Labels"] == {"netdiag.build": "1"} and cfg["HostConfig"]["NetworkMode"] == "host"


def test_runtime_stubs_are_dropped_from_the_diff(tmp_path):
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "proc").mkdir()
    (lower / "etc/hosts").write_text("127.0.0.1 localhost\n")
    upper = tmp_path / "upper"
    for d in ("etc", "proc", "sys", "dev", "made"):
        (upper / d).mkdir(parents=True)
    (upper / "etc/hostname").touch()
    (upper / "etc/resolv.conf").write_text("nameserver 1.1.1.1\n")  # not empty: the command wrote it
    drop_runtime_stubs(upper, ImageView([lower]))
    assert sorted(p.name for p in upper.iterdir()) == ["etc", "made", "proc"]
    assert [p.name for p in (upper / "etc").iterdir()] == ["resolv.conf"]


def test_a_dockerfile_that_is_no_file_or_too_large_is_bad_input(tmp_path):
    (tmp_path / "Huge").write_text("RUN true\n" * 200_000)
    (tmp_path / "Latin1").write_bytes(b"FROM busybox\nLABEL a=\xe9\n")
    for name, says in (("/dev/zero", "Is a device, not a regular file"), ("Huge", "larger than 1 MiB"),
                       ("Latin1", "Line 2: not UTF-8 text"), ("Missing", "No such file or directory")):
        with pytest.raises(InvalidArgument, match="Cannot read the Dockerfile") as e:
            _read_dockerfile(tmp_path, name if name.startswith("/") else str(tmp_path / name))
        assert says.lower() in str(e.value).lower() and e.value.exit_code == 2
