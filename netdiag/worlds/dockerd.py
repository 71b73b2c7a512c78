"""A real Docker engine inside a lab: a dockerd of its own (Debian's docker.io) started in a
network namespace, every state directory private under one work directory, and everything it
started removed again: containerd and its shims, mounts, cgroups, and the host paths dockerd
creates on its own. One starter for docker.py's DockerLab (the tests' and the fault worlds'), a
scenario's world with `docker: true`, and the benches (bench/run_bench.py).

    engine = Dockerd.installed(netns, work, cgroup_parent)   # Docker's default networking
    engine.start()
    ...
    left = Dockerd.installed(netns, work, cgroup_parent).remove()   # from any process

`remove()` needs no memory of the process that started the engine: it finds dockerd by its
pidfile (checked to be that engine's) and every other process by the work directory on its
command line or in its environment; what the host looked like before the first start is kept in
the work directory (`engine.json`).

dockerd joins only the network namespace, before it execs (runtime.kernel.ns, as `nsenter --net`
would): `ip netns exec` would remount /sys and hide the cgroup mounts dockerd needs. The work
directory must be short: containerd's sockets live under it (`work_dir()` picks one).
May import nothing of netdiag or runtime but runtime.kernel's ns and tools and worlds.leftovers
(the tests and benches import it).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from .leftovers import Tracked, _quiet, end_processes, mounts_under, pids_mentioning, proc_stat, remove_cgroup_tree, \
    unmount_under

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SOCKET_MAX = 107  # sun_path holds 108 bytes with its NUL
# the longest socket path dockerd makes below its work directory (containerd's, under the exec root)
_LONGEST_SOCKET = "exec/containerd/containerd.sock.ttrpc"
# Paths outside --data-root/--exec-root that dockerd/containerd 20.10 create on their own (shim
# sockets in /run/containerd/s, /run/docker/plugins, the trust key /etc/docker/key.json).
HOST_PATHS = ("/etc/docker/key.json", "/etc/docker", "/run/containerd", "/run/docker",
              "/var/lib/docker", "/var/lib/containerd")
NO_NETWORKING = ["--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                 "--ip-masq=false", "--userland-proxy=false"]


# ----------------------------------------------------------------------------- finding things

def find_dockerd() -> str | None:
    from runtime.kernel import tools

    return tools.find("dockerd")


def find_docker_cli(dockerd: str) -> str | None:
    """Prefer the CLI shipped beside dockerd (same release), else whatever is on PATH."""
    beside = Path(dockerd).with_name("docker")
    if os.access(beside, os.X_OK):
        return str(beside)
    from runtime.kernel import tools

    return tools.find("docker")


def work_dir(preferred: Path, tag: str) -> Path:
    """`preferred`, or /tmp/nddock-TAG when containerd's sockets would not fit below it. The same
    answer in every process, so a later one finds the engine again."""
    if len(str(Path(preferred) / _LONGEST_SOCKET)) <= SOCKET_MAX:
        return Path(preferred)
    return Path("/tmp") / f"nddock-{tag}"


def client_env(work: Path) -> dict:
    """What points the docker CLI (and netdiag) at the engine of `work`."""
    return {"DOCKER_HOST": f"unix://{Path(work) / 'docker.sock'}", "DOCKER_CONFIG": str(Path(work) / "client")}


def other_engines() -> list[int]:
    """dockerd/containerd processes running now (any engine's: call it after ours are gone)."""
    from runtime.kernel.procs import pids_named

    return pids_named(lambda comm: comm in ("dockerd", "containerd") or comm.startswith("containerd-shim"))


def remove_created(before: set[str]) -> list[str]:
    """Remove the HOST_PATHS that did not exist before our dockerd; returns those that stay."""
    left = []
    for p in HOST_PATHS:
        if p in before or not os.path.lexists(p):
            continue
        if mounts_under(Path(p)):
            left.append(f"{p} (mounts under it)")
            continue
        if p == "/etc/docker" and any(Path(p).iterdir()):
            continue  # something else lives there now: not ours to delete
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            Path(p).unlink(missing_ok=True)
        if os.path.lexists(p):
            left.append(p)
    return left


def make_busybox_rootfs(dest: Path) -> None:
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.isfile(p)), None)
    if not busybox:
        raise RuntimeError("no /bin/busybox to build the image from")
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for rel in applets:
        link = dest / rel
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    for d in ("etc", "tmp", "proc", "sys", "dev", "root"):
        (dest / d).mkdir(exist_ok=True)


# ----------------------------------------------------------------------------- the engine

class Dockerd:
    """A dockerd of our own inside network namespace `netns` (a name under /run/netns), all its
    state in `work`, its containers under the cgroup `cgroup_parent`. With `networking` (the
    default) Docker's defaults: docker0, iptables (FORWARD policy drop, DOCKER-USER), forwarding,
    masquerade, the userland proxy, all inside that namespace; without, no bridge and no firewall."""

    networking = True

    def __init__(self, dockerd: str, cli: str | None, netns: str, work: Path, cgroup_parent: str,
                 log: Callable[[str], None] = _quiet):
        self.dockerd, self.cli, self.netns, self.work = dockerd, cli, netns, Path(work)
        self.cgroup_parent, self.log = cgroup_parent, log
        self.data, self.exec_root = self.work / "data", self.work / "exec"
        self.sock, self.pidfile, self.logfile = self.work / "docker.sock", self.work / "docker.pid", self.work / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.server_version = self.client_version = ""
        self.host_paths_before = {p for p in HOST_PATHS if os.path.lexists(p)}

    @classmethod
    def installed(cls, netns: str, work: Path, cgroup_parent: str, **kw) -> "Dockerd":
        """With the host's dockerd and docker CLI; RuntimeError when Docker is not installed."""
        dockerd = find_dockerd()
        if dockerd is None:
            raise RuntimeError("dockerd is not installed (Debian: apt-get install docker.io; scripts/setup does it)")
        return cls(dockerd, find_docker_cli(dockerd), netns, work, cgroup_parent, **kw)

    def docker(self, *args: str) -> list[str]:
        """argv of the docker CLI against this engine."""
        return [self.cli or "docker", "-H", f"unix://{self.sock}", *args]

    def cli_env(self) -> dict:
        return {**os.environ, **client_env(self.work)}

    # -- life ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start it (again, after a stop: its state stays) and wait until it answers."""
        if os.path.exists("/run/containerd/containerd.sock"):
            self.log("docker: note: a system containerd socket exists; dockerd 20.10 would use it instead of its own")
        for d in (self.data, self.exec_root):
            d.mkdir(parents=True, exist_ok=True)
        if self._saved() is None:  # the first start: remember what the host had before it
            self.host_paths_before = {p for p in HOST_PATHS if os.path.lexists(p)}
            (self.work / "engine.json").write_text(json.dumps(
                {"netns": self.netns, "cgroup_parent": self.cgroup_parent, "host_paths_before": sorted(self.host_paths_before)}))
        cfg = self.work / "daemon.json"
        cfg.write_text("{}\n")  # do not pick up the host's /etc/docker/daemon.json
        from runtime.kernel.ns import Namespace

        argv = [self.dockerd, "--config-file", str(cfg), "--data-root", str(self.data), "--exec-root", str(self.exec_root),
                "-H", f"unix://{self.sock}", "--pidfile", str(self.pidfile)] + ([] if self.networking else NO_NETWORKING) + \
               ["--cgroup-parent", f"/{self.cgroup_parent}", "--log-level", "warn"]
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=self.cli_env(),
                                         preexec_fn=Namespace.named(self.netns).preexec())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if self.ping():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"dockerd socket {self.sock} not answering after {START_TIMEOUT:.0f}s: {self.log_tail()}")
        if self.cli:
            v = subprocess.run(self.docker("version", "--format", "{{.Server.Version}} {{.Client.Version}}"),
                               capture_output=True, text=True, env=self.cli_env(), timeout=30)
            self.server_version, _, self.client_version = v.stdout.strip().partition(" ")

    def ping(self) -> bool:
        if not self.sock.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(str(self.sock))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in s.recv(256)
        except OSError:
            return False

    def pid(self) -> int | None:
        """dockerd's pid while it runs: the process we started, or the one its pidfile names (when its
        command line is this engine's), or a dockerd whose command line mentions the work dir."""
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        candidates = []
        try:
            candidates.append(int(self.pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
        candidates += pids_mentioning(str(self.work))
        for pid in candidates:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "dockerd" and str(self.pidfile).encode() in cmd and (proc_stat(pid) or ("Z",))[0] != "Z":
                return pid
        return None

    def stop(self) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL after STOP_TIMEOUT); its state stays for a restart.
        Its containerd and shims are waited for by remove() (end_processes)."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # the pid we started is dockerd's (it joined the namespace, then exec'd)
        if self.proc is not None:
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.log("docker: dockerd ignored SIGTERM, sending SIGKILL")
                self.proc.kill()
                self.proc.wait(5)
            return
        tracked = Tracked()
        tracked.add([pid])
        deadline = time.monotonic() + STOP_TIMEOUT
        while tracked.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if tracked.running():
            self.log("docker: dockerd ignored SIGTERM, sending SIGKILL")
            tracked.signal_all(signal.SIGKILL)

    def remove(self, keep_host_paths: bool = False) -> list[str]:
        """Remove the containers, stop dockerd and everything it started, unmount, remove its cgroups,
        the work directory and the host paths it created (unless another engine runs now, or
        keep_host_paths). Works from any process. Returns what could not be removed."""
        left: list[str] = []
        tracked = Tracked()
        tracked.add(pids_mentioning(str(self.work)))
        saved = self._saved() or {}
        before = set(saved.get("host_paths_before", self.host_paths_before))
        if self.pid() is not None and self.cli and self.ping():
            try:  # SIGKILL the containers now rather than wait out dockerd's 15 s shutdown timeout
                ids = subprocess.run(self.docker("ps", "-aq"), env=self.cli_env(), capture_output=True, text=True,
                                     timeout=20).stdout.split()
                if ids:
                    subprocess.run(self.docker("rm", "-f", *ids), env=self.cli_env(), capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                left.append("docker rm -f timed out")
        steps = [("dockerd", self.stop),
                 ("processes", lambda: end_processes(self.work, tracked, log=self.log)),  # containerd, shims, proxies
                 ("mounts", lambda: unmount_under(self.work))]
        for name, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - every later step still has to run
                left.append(f"{name} clean-up failed: {e}")
        left += [f"cgroup {d}" for d in remove_cgroup_tree(self.cgroup_parent)]
        if not mounts_under(self.work):
            shutil.rmtree(self.work, ignore_errors=True)
        if not keep_host_paths and not other_engines():  # another engine may be using /run/containerd now
            left += [f"path {p}" for p in remove_created(before)]
        left += [f"mount {m}" for m in mounts_under(self.work)]
        if self.work.exists():
            left.append(f"dir {self.work}")
        running = sorted(set(tracked.running()) | set(pids_mentioning(str(self.work))))
        if running:
            left.append(f"processes {running}")
        return left

    def _saved(self) -> dict | None:
        try:
            return json.loads((self.work / "engine.json").read_text())
        except (OSError, ValueError):
            return None

    # -- using it -----------------------------------------------------------------------------------
    def log_tail(self, n: int = 3) -> str:
        """The last error lines of dockerd's log (or its last lines), short enough for one line."""
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errors = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln or "failed" in ln.lower()]
        tail = " | ".join((errors or lines)[-n:]) or "(empty log)"
        return tail if len(tail) <= 500 else tail[:500] + "..."

    def import_busybox(self, tag: str) -> None:
        """An image `tag` made of the host's static busybox (no registry needed)."""
        rootfs = self.work / "rootfs"
        make_busybox_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(self.docker("import", "-", tag), stdin=tar.stdout, env=self.cli_env(), capture_output=True,
                             text=True, timeout=60)
        tar.stdout.close()
        tar.wait()
        if tar.returncode != 0 or imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr.strip()[-400:]}")
