"""`netdiag build` end to end: real RUN containers, layers, the build cache, failures that leave
nothing behind. Each test has its own NETDIAG_ROOT and cgroup parent."""
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

REPO = Path(__file__).resolve().parents[2]


class Nd:
    """The CLI inside a lab (a namespace playing the host): builds, RUN containers and the runs that
    check the images never touch the machine's own network namespace."""

    def __init__(self, lab):
        self.lab, self.root = lab, lab.root

    def run(self, *args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.lab.netdiag(*args, input=input, timeout=timeout, cwd=REPO)

    def ok(self, *args: str, **kw) -> str:
        p = self.run(*args, **kw)
        assert p.returncode == 0, f"netdiag {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    def blobs(self) -> set[str]:
        d = self.root / "images/blobs/sha256"
        return {p.name for p in d.iterdir()} if d.is_dir() else set()

    def no_containers(self) -> bool:
        return self.ok("ps", "-a", "-q") == "" and not any((self.root / "containers").glob("*"))


@pytest.fixture
def nd(lab):
    """A private netdiag root and cgroup parent in a lab; the lab removes everything afterwards."""
    yield Nd(lab)


def context(tmp_path: Path, dockerfile: str, files: dict | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


FULL = """\
FROM busybox
ARG WHO=world
ENV GREETING=hello APP_HOME=/app
WORKDIR /app
COPY app.txt conf/ ./
RUN echo hi > /built && mkdir /app/data && echo "$GREETING $WHO" > /app/greeting
EXPOSE 8080 53/udp
HEALTHCHECK --interval=5s --retries=2 CMD test -f /built
LABEL org.example.team=net version=1
USER nobody
CMD ["cat", "/built"]
"""


def test_build_then_run_and_inspect(nd, tmp_path):
    ctx = context(tmp_path, FULL, {"app.txt": "app\n", "conf/settings.ini": "x=1\n"})
    out = nd.ok("build", "-t", "lab/web:1.0", "--build-arg", "WHO=lab", str(ctx))
    assert "Step 6/11 : RUN echo hi" in out and "Successfully tagged lab/web:1.0" in out
    assert nd.ok("run", "--rm", "lab/web:1.0", "cat", "/built") == "hi\n"
    assert nd.ok("run", "--rm", "lab/web:1.0") == "hi\n"        # the CMD
    listing = nd.ok("run", "--rm", "lab/web:1.0", "sh", "-c", "pwd; ls /app; cat /app/greeting; id -u")
    assert listing.split("\n") == ["/app", "app.txt", "data", "greeting", "settings.ini", "hello lab", "65534", ""]

    img = json.loads(nd.ok("image", "inspect", "lab/web:1.0"))[0]
    cfg = img["Config"]
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                          "GREETING=hello", "APP_HOME=/app"]
    assert cfg["WorkingDir"] == "/app" and cfg["User"] == "nobody" and cfg["Cmd"] == ["cat", "/built"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /built"], "Interval": 5 * 10**9,
                                  "Timeout": 30 * 10**9, "StartPeriod": 0, "Retries": 2}
    assert cfg["Labels"] == {"org.example.team": "net", "version": "1"}
    assert len(img["RootFS"]["Layers"]) == 3                  # busybox + COPY + RUN
    history = img["History"]
    assert [h["created_by"] for h in history[1:]] == FULL.splitlines()[2:]  # FROM/ARG make no entry
    assert sum(not h.get("empty_layer") for h in history) == 3
    assert nd.no_containers()


def test_unchanged_rebuild_is_all_cache_and_the_same_image(nd, tmp_path):
    ctx = context(tmp_path, FULL, {"app.txt": "app\n", "conf/settings.ini": "x=1\n"})
    first = nd.ok("build", "-q", "-t", "web", str(ctx)).strip()
    blobs = nd.blobs()
    out = nd.ok("build", "-t", "web", str(ctx))
    assert out.count(" ---> Using cache") == 2 and "Running in" not in out
    assert f"Successfully built {first.split(':')[1][:12]}" in out
    assert nd.blobs() == blobs                                # not a single new blob
    assert nd.ok("build", "-q", "-t", "web", str(ctx)).strip() == first


def test_changed_copy_source_rebuilds_from_that_step_on(nd, tmp_path):
    dockerfile = "FROM busybox\nRUN echo base > /base\nCOPY f.txt /f.txt\nRUN cp /f.txt /g.txt\n"
    ctx = context(tmp_path, dockerfile, {"f.txt": "one\n", "other.txt": "x\n"})
    nd.ok("build", "-t", "chain", str(ctx))
    (ctx / "other.txt").write_text("unrelated\n")
    assert nd.ok("build", "-t", "chain", str(ctx)).count("Using cache") == 3
    (ctx / "f.txt").write_text("two\n")
    out = nd.ok("build", "-t", "chain", str(ctx))
    steps = out.split("Step ")[1:]
    assert "Using cache" in steps[1]                            # RUN before the COPY
    assert "Using cache" not in steps[2] and "Using cache" not in steps[3]
    assert "Running in" in steps[3]
    assert nd.ok("run", "--rm", "chain", "cat", "/g.txt") == "two\n"
    no_cache = nd.ok("build", "--no-cache", "-t", "chain", str(ctx))
    assert "Using cache" not in no_cache and no_cache.count("Running in") == 2


def test_failing_run_names_the_line_and_leaves_nothing(nd, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nRUN echo ok > /ok\nRUN echo doomed && exit 3\nCMD sh\n")
    p = nd.run("build", "-t", "broken", str(ctx))
    assert p.returncode != 0
    assert "Dockerfile line 3" in p.stderr and "returned a non-zero code: 3" in p.stderr
    assert "doomed" in p.stdout                                 # the command's own output is shown
    assert nd.no_containers()
    assert "broken" not in nd.ok("images")
    assert not list(nd.root.glob(".build-*"))                   # no temp dirs left


def test_copy_from_outside_the_context_is_refused(nd, tmp_path):
    (tmp_path / "outside.txt").write_text("secret\n")
    ctx = context(tmp_path, "FROM busybox\nCOPY ../outside.txt /x\n")
    p = nd.run("build", "-t", "escape", str(ctx))
    assert p.returncode != 0 and "line 2: COPY may not read outside the build context" in p.stderr
    (ctx / "link").symlink_to(tmp_path / "outside.txt")
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN true\nADD link /x\n")
    p = nd.run("build", "-t", "escape", str(ctx))
    assert p.returncode != 0 and "line 3: ADD may not read outside the build context" in p.stderr
    assert "escape" not in nd.ok("images") and nd.no_containers()


@pytest.mark.parametrize("dockerfile,message", [
    ("FROM busybox\nRUN true\nFETCH http://x\n", 'line 3: unknown instruction "FETCH"'),
    ("FROM no-such-image\n", "line 1: base image 'no-such-image' not found"),
    ("FROM busybox\nCOPY missing.txt /\n", "line 2: COPY source 'missing.txt' not found"),
    ("FROM busybox\nADD https://example.com/x.tgz /\n", "line 2: ADD from a URL"),
])
def test_build_errors_name_the_line(nd, tmp_path, dockerfile, message):
    p = nd.run("build", "-t", "bad", str(context(tmp_path, dockerfile)))
    assert p.returncode != 0 and message in p.stderr, p.stderr
    assert "bad" not in nd.ok("images")


def test_missing_dockerfile_and_context(nd, tmp_path):
    p = nd.run("build", "-t", "x", str(tmp_path / "nowhere"))
    assert p.returncode != 0 and "is not a directory" in p.stderr
    (tmp_path / "empty").mkdir()
    p = nd.run("build", "-t", "x", str(tmp_path / "empty"))
    assert p.returncode == 2 and "Cannot read the Dockerfile" in p.stderr
    p = nd.run("build", "-t", "x", "-f", "/dev/zero", str(tmp_path / "empty"))  # refused before a byte is read
    assert p.returncode == 2 and "Is a device, not a regular file" in p.stderr and "Traceback" not in p.stderr


def test_run_deleting_a_lower_file_makes_a_whiteout(nd, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nCOPY doomed.txt /etc/doomed.txt\nRUN rm /etc/doomed.txt /linuxrc\n",
                  {"doomed.txt": "bye\n"})
    nd.ok("build", "-t", "gone", str(ctx))
    out = nd.ok("run", "--rm", "gone", "sh", "-c", "ls /etc/doomed.txt /linuxrc 2>&1; ls /etc")
    assert "No such file" in out and "doomed" not in out.split("\n", 2)[-1]
    img = json.loads(nd.ok("image", "inspect", "gone"))[0]
    top = nd.root / "images/blobs/sha256" / img["RootFS"]["Layers"][-1].split(":")[1]
    with tarfile.open(top) as tf:
        names = tf.getnames()
    assert {"etc/.wh.doomed.txt", ".wh.linuxrc"} <= set(names)
    assert not {"etc/hostname", "etc/hosts", "etc/resolv.conf", "proc", "sys", "dev"} & set(names)


def test_add_tar_chown_and_symlinked_destinations(nd, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nRUN mkdir -p /usr/lib && ln -s usr/lib /lib\n"
                            "ADD bundle.tgz /opt/\nCOPY --chown=nobody:nogroup tool /lib/\nCOPY tool /tmp/\n",
                  {"src/d/e.txt": "extracted\n", "tool": "#!/bin/sh\n"})
    with tarfile.open(ctx / "bundle.tgz", "w:gz") as tf:
        tf.add(ctx / "src/d", arcname="d")
    nd.ok("build", "-t", "extras", str(ctx))
    out = nd.ok("run", "--rm", "extras", "sh", "-c",
                "cat /opt/d/e.txt; stat -c '%U:%G %n' /usr/lib/tool; stat -c '%a' /tmp; readlink /lib")
    assert out == "extracted\nnobody:nogroup /usr/lib/tool\n1777\nusr/lib\n"
