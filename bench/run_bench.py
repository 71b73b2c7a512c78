#!/usr/bin/env python3
"""Cold-CLI container start: `netdiag run --rm --network none busybox true` against
`unshare --fork --pid --mount --uts --ipc --net true` (the kernel's floor) and, where a Docker
engine is installed, `docker run --rm --network none` on a private dockerd. Goal: netdiag's median
at most 0.5x Docker's.

Every command is a fresh process (time.perf_counter around subprocess.run), run inside a throwaway
network namespace made for this bench. Nothing in the root network namespace is touched: the
private dockerd runs inside that namespace with --bridge none and iptables off, and everything
(netns, dockerd and its children, mounts, cgroups, temp dirs) is removed at the end, also on
failure or Ctrl-C.

    .venv/bin/python bench/run_bench.py [--runs N] [--warmup N] [--docker auto|yes|no] [--json FILE]
                                        [--importtime]

Needs root (namespaces, cgroups, dockerd).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CGROUP_BASE = Path("/sys/fs/cgroup")
GOAL_RATIO = 0.5
CONFINEMENT_GOAL = 1.10  # Docker's default confinement may cost at most 10% of a `run --rm`
DOCKERD_START_TIMEOUT = 30.0
DOCKERD_STOP_TIMEOUT = 15.0


class Interrupted(Exception):
    """Raised from a signal handler so that every `finally` runs (SIGINT, SIGTERM, SIGHUP)."""


def _on_signal(signum, _frame):
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- measuring

def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(samples)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def run_once(argv: list[str], env: dict | None = None) -> float:
    """Run argv to completion; returns wall time in ms. Raises on a non-zero exit."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t0) * 1000
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).decode(errors="replace").strip()[-800:]
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {tail}")
    return dt


class Bench:
    def __init__(self, name: str, argv: list[str], env: dict | None = None):
        self.name, self.argv, self.env = name, argv, env
        self.samples: list[float] = []
        self.first_ms: float | None = None  # the very first run (may include one-time setup)

    def warm(self, n: int) -> None:
        for i in range(n):
            dt = run_once(self.argv, self.env)
            if i == 0:
                self.first_ms = dt

    def timed(self) -> None:
        self.samples.append(run_once(self.argv, self.env))

    def stats(self) -> dict:
        return {
            "command": self.argv,
            "runs": len(self.samples),
            "median_ms": round(statistics.median(self.samples), 2),
            "p90_ms": round(percentile(self.samples, 90), 2),
            "min_ms": round(min(self.samples), 2),
            "max_ms": round(max(self.samples), 2),
            "first_run_ms": round(self.first_ms, 2) if self.first_ms is not None else None,
            "samples_ms": [round(s, 2) for s in self.samples],
        }


# ----------------------------------------------------------------------------- network namespace

def netns_add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def netns_del(name: str) -> None:
    if Path("/run/netns", name).exists():
        subprocess.run(["ip", "netns", "del", name], check=False)


def netns_listed(name: str) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(line.split()[0] == name for line in out.splitlines() if line.strip())


# ----------------------------------------------------------------------------- mounts, processes, cgroups

def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below prefix, deepest first (from /proc/self/mountinfo)."""
    found = []
    pre = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == pre or mp.startswith(pre + "/"):
                found.append(mp)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def unmount_under(prefix: Path) -> None:
    for _ in range(3):
        mps = mounts_under(prefix)
        if not mps:
            return
        for mp in mps:
            if subprocess.run(["umount", "-R", mp], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True)


def pids_mentioning(needle: str) -> list[int]:
    """PIDs whose command line or environment mentions needle (our unique temp dir, e.g. in
    NETDIAG_ROOT): only processes this bench started."""
    out = []
    raw = needle.encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if raw in (d / "cmdline").read_bytes() or raw in (d / "environ").read_bytes():
                out.append(int(d.name))
        except OSError:
            pass
    return out


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of pid, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[19])


class Tracked:
    """Processes we started, remembered by (pid, start time) so a reused pid is never touched."""

    def __init__(self):
        self.procs: dict[int, int] = {}

    def add(self, pids) -> None:
        for pid in pids:
            st = proc_stat(pid)
            if st and pid not in self.procs:
                self.procs[pid] = st[1]

    def _mine(self, pid: int) -> tuple[str, int] | None:
        st = proc_stat(pid)
        return st if st and st[1] == self.procs[pid] else None

    def running(self) -> list[int]:
        return [p for p in self.procs if (st := self._mine(p)) and st[0] != "Z"]

    def zombies(self) -> list[int]:
        return [p for p in self.procs if (st := self._mine(p)) and st[0] == "Z"]

    def signal_all(self, sig: int) -> None:
        for pid in self.running():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def end_processes(work: Path, tracked: Tracked, timeout: float = 10.0) -> None:
    """Wait for every process we started (dockerd's containerd and shims, netdiag's monitors) to
    end; SIGKILL what is still running after timeout; then give their parents a moment to reap."""
    deadline = time.monotonic() + timeout
    while True:
        tracked.add(pids_mentioning(str(work)))
        if not tracked.running():
            break
        if time.monotonic() > deadline:
            log(f"cleanup: SIGKILL to stragglers {tracked.running()}")
            tracked.signal_all(signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.1)
    end = time.monotonic() + 5  # orphans are reaped by PID 1, not by us
    while tracked.zombies() and time.monotonic() < end:
        time.sleep(0.1)


# ----------------------------------------------------------------------------- root network namespace guard

def root_netns_snapshot() -> str:
    """Links, addresses, routes and rules of the root netns: they must be the same at the end."""
    out = []
    for argv in (["ip", "-o", "link", "show"], ["ip", "-o", "addr", "show"], ["ip", "route", "show", "table", "all"],
                 ["ip", "-6", "route", "show", "table", "all"], ["ip", "rule", "show"]):
        p = subprocess.run(argv, capture_output=True, text=True)
        # link counters/state flicker is not a change we made: keep names and flags only
        out.append("\n".join(sorted(" ".join(line.split()[:3]) if argv[2] == "link" else line
                                     for line in p.stdout.splitlines())))
    return "\n".join(out)


def cgroup_hierarchies() -> list[Path]:
    if (CGROUP_BASE / "cgroup.controllers").exists():  # v2 only
        return [CGROUP_BASE]
    return [d for d in CGROUP_BASE.iterdir() if d.is_dir() and (d / "cgroup.procs").exists()]


def remove_cgroup_tree(name: str) -> list[str]:
    """rmdir /sys/fs/cgroup/<hier>/<name> bottom-up in every hierarchy; returns what is left."""
    left = []
    for h in cgroup_hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        for _ in range(50):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in dirs + [top]:
                try:
                    d.rmdir()
                except OSError:
                    pass
            if not top.exists():
                break
            time.sleep(0.1)
        if top.exists():
            left.append(str(top))
    return left


# ----------------------------------------------------------------------------- docker

def find_dockerd() -> str | None:
    return shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None)


def find_docker_cli(dockerd: str) -> str | None:
    """Prefer the CLI shipped beside dockerd (same release), else whatever is on PATH."""
    beside = Path(dockerd).with_name("docker")
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("docker")


def install_docker() -> None:
    """apt-get install docker.io, with services kept from starting (no dockerd in the root netns)."""
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\n# written by netdiag bench/run_bench.py while installing docker.io\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "docker.io"]
        log("docker: installing docker.io (apt-get install -y --no-install-recommends docker.io)")
        if subprocess.run(cmd, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(cmd, env=env, check=True)
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


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


# Paths outside --data-root/--exec-root that dockerd/containerd 20.10 create on their own
# (shim sockets in /run/containerd/s, /run/docker/plugins, the trust key /etc/docker/key.json).
HOST_PATHS = ("/etc/docker/key.json", "/etc/docker", "/run/containerd", "/run/docker",
              "/var/lib/docker", "/var/lib/containerd")


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


NO_NETWORKING = ["--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
                 "--ip-masq=false", "--userland-proxy=false"]


class PrivateDockerd:
    """A dockerd of our own inside a network namespace (entered with nsenter: `ip netns exec` would
    remount /sys and hide the cgroup mounts dockerd needs), all its state in temp dirs. Without
    `networking` it makes no bridge and touches no firewall; with it, Docker's defaults (docker0,
    iptables, forwarding, masquerade, userland proxy), all inside that namespace. The one starter
    the benches and the tests (tests/dockerkit.py) share."""

    networking = False

    def __init__(self, dockerd: str, cli: str, netns: str, work: Path, cgroup_parent: str):
        self.dockerd, self.cli, self.netns, self.work = dockerd, cli, netns, work
        self.cgroup_parent = cgroup_parent
        self.data, self.exec_root = work / "data", work / "exec"
        self.sock, self.pidfile, self.logfile = work / "docker.sock", work / "docker.pid", work / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.server_version = self.client_version = ""
        self.host_paths_before = {p for p in HOST_PATHS if os.path.lexists(p)}

    def docker(self, *args: str) -> list[str]:
        return [self.cli, "-H", f"unix://{self.sock}", *args]

    def cli_env(self) -> dict:
        return dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=str(self.work / "client"))

    def start(self) -> None:
        """Start it (again, after a stop: its state stays) and wait until it answers."""
        if os.path.exists("/run/containerd/containerd.sock"):
            log("docker: note: a system containerd socket exists; dockerd 20.10 would use it instead of its own")
        if self.proc is None:
            self.host_paths_before = {p for p in HOST_PATHS if os.path.lexists(p)}
        for d in (self.data, self.exec_root):
            d.mkdir(parents=True, exist_ok=True)
        cfg = self.work / "daemon.json"
        cfg.write_text("{}\n")  # do not pick up the host's /etc/docker/daemon.json
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", "--", self.dockerd,
                "--config-file", str(cfg), "--data-root", str(self.data), "--exec-root", str(self.exec_root),
                "-H", f"unix://{self.sock}", "--pidfile", str(self.pidfile)] + ([] if self.networking else NO_NETWORKING) + \
               ["--cgroup-parent", f"/{self.cgroup_parent}", "--log-level", "warn"]
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=self.cli_env())
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if self._ping():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"dockerd socket {self.sock} not answering after {DOCKERD_START_TIMEOUT:.0f}s: "
                               f"{self.log_tail()}")
        v = subprocess.run(self.docker("version", "--format", "{{.Server.Version}} {{.Client.Version}}"),
                           capture_output=True, text=True, env=self.cli_env())
        self.server_version, _, self.client_version = v.stdout.strip().partition(" ")

    def _ping(self) -> bool:
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
        rootfs = self.work / "rootfs"
        make_busybox_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(self.docker("import", "-", tag), stdin=tar.stdout, capture_output=True, text=True)
        tar.stdout.close()
        tar.wait()
        if tar.returncode != 0 or imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr.strip()[-400:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nsenter execs dockerd: this pid is dockerd
            try:
                self.proc.wait(DOCKERD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log("docker: dockerd ignored SIGTERM, sending SIGKILL")
                self.proc.kill()
                self.proc.wait(5)
        # Its containerd and shims are waited for (and killed if need be) by end_processes().


# ----------------------------------------------------------------------------- import profile

def import_profile(cmd_tail: list[str], env: dict, netns: str, repeat: int = 3, top: int = 12) -> dict:
    """`python -X importtime -m netdiag ...`, `repeat` times: the top-level imports by cumulative
    time (the fastest of the repeats for each), and their total. Top-level entries do not overlap,
    so their sum is the time spent importing."""
    argv = ["nsenter", f"--net=/run/netns/{netns}", "--", sys.executable, "-X", "importtime", "-m", "netdiag",
            *cmd_tail]
    best: dict[str, tuple[int, int]] = {}
    totals = []
    for _ in range(repeat):
        p = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=REPO)
        total = 0
        for line in p.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = line[len("import time:"):].split("|", 2)
            depth = (len(name) - len(name.lstrip()) - 1) // 2  # "| " then two spaces per nesting level
            if depth != 0:
                continue
            cum, mod = int(cum_us), name.strip()
            total += cum
            if mod not in best or cum < best[mod][0]:
                best[mod] = (cum, int(self_us))
        totals.append(total)
    rows = sorted(((c, s_, n) for n, (c, s_) in best.items()), reverse=True)[:top]
    return {"total_ms": round(statistics.median(totals) / 1000, 1),
            "top": [{"module": n, "cumulative_ms": round(c / 1000, 1), "self_ms": round(s_ / 1000, 1)}
                    for c, s_, n in rows]}


# ----------------------------------------------------------------------------- report

def fmt_table(benches: list[Bench]) -> str:
    lines = [f"{'command':<13} {'runs':>5} {'median ms':>10} {'p90 ms':>9} {'min ms':>8} {'first ms':>9}"]
    for b in benches:
        s = b.stats()
        first = f"{s['first_run_ms']:.1f}" if s["first_run_ms"] is not None else "-"
        lines.append(f"{b.name:<13} {s['runs']:>5} {s['median_ms']:>10.1f} {s['p90_ms']:>9.1f} "
                     f"{s['min_ms']:>8.1f} {first:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per command (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs per command (default 3)")
    ap.add_argument("--docker", choices=("auto", "yes", "no"), default="auto",
                    help="auto: use Docker if dockerd is installed; yes: install docker.io if missing; no: skip")
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    ap.add_argument("--importtime", action="store_true",
                    help="also print the top imports of one `python -X importtime -m netdiag run ...`")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 1:
        ap.error("--runs and --warmup must be at least 1")
    if os.geteuid() != 0:
        print("run_bench: needs root (network namespaces, cgroups, dockerd)", file=sys.stderr)
        return 2

    tag = f"ndbench-{os.getpid()}"
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    netns = tag
    nd_cgroup = tag
    dk_cgroup = f"{tag}-docker"
    nd_root = work / "netdiag-root"
    dockerd: PrivateDockerd | None = None
    docker_status: dict = {"used": False}
    report: dict = {}
    benches: list[Bench] = []
    rc = 0
    root_before = None
    try:
        root_before = root_netns_snapshot()
        netns_add(netns)
        enter = ["nsenter", f"--net=/run/netns/{netns}", "--"]
        nd_env = dict(os.environ, NETDIAG_ROOT=str(nd_root), NETDIAG_CGROUP_PARENT=nd_cgroup)
        netdiag_bin = str(Path(sys.executable).with_name("netdiag"))
        if not os.access(netdiag_bin, os.X_OK):
            netdiag_bin = shutil.which("netdiag") or ""
        if not netdiag_bin:
            raise RuntimeError("no netdiag executable beside this Python or on PATH (pip install -e .)")
        nd_tail = ["run", "--rm", "--network", "none", "busybox", "true"]
        benches.append(Bench("netdiag", enter + [netdiag_bin, *nd_tail], nd_env))
        # the same container without confinement (no capability drop, seccomp, masks or device
        # list): the cost of Docker's default confinement is netdiag / nd-privileged
        benches.append(Bench("nd-privileged", enter + [netdiag_bin, "run", "--rm", "--privileged", *nd_tail[2:]], nd_env))
        benches.append(Bench("unshare", enter + ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc",
                                                 "--net", "true"]))

        # --- docker, if wanted and possible
        if args.docker != "no":
            dockerd_bin = find_dockerd()
            if dockerd_bin is None and args.docker == "yes":
                try:
                    install_docker()
                except (subprocess.CalledProcessError, OSError) as e:
                    docker_status.update(reason=f"installing docker.io failed: {e}")
                dockerd_bin = find_dockerd()
            if dockerd_bin is None:
                docker_status.setdefault("reason", "dockerd not installed (use --docker yes to install docker.io)")
            else:
                cli = find_docker_cli(dockerd_bin)
                if cli is None:
                    docker_status["reason"] = "no docker CLI found"
                else:
                    dockerd = PrivateDockerd(dockerd_bin, cli, netns, work / "docker", dk_cgroup)
                    try:
                        log(f"docker: starting a private dockerd in netns {netns}")
                        dockerd.start()
                        dockerd.import_busybox("bbox:bench")
                        benches.append(Bench("docker", enter + dockerd.docker(
                            "run", "--rm", "--network", "none", "bbox:bench", "true")))
                        docker_status.update(used=True, dockerd=dockerd_bin, cli=cli,
                                             server_version=dockerd.server_version)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        docker_status["reason"] = str(e)
        else:
            docker_status["reason"] = "skipped (--docker no)"

        # Not a container: netdiag's CLI start alone (interpreter, imports, argument parsing), to
        # tell how much of the `run` time is the CLI and how much the container.
        benches.append(Bench("nd-version", enter + [netdiag_bin, "version"], nd_env))

        # --- measure: warm-ups per command, then the timed runs round-robin so drift hits all alike
        for b in benches:
            log(f"{b.name}: {args.warmup} warm-up run(s)")
            b.warm(args.warmup)
        log(f"timing {args.runs} round(s) of {', '.join(b.name for b in benches)}")
        for _ in range(args.runs):
            for b in benches:
                b.timed()

        by = {b.name: b.stats() for b in benches}
        nd, us = by["netdiag"]["median_ms"], by["unshare"]["median_ms"]
        ratios = {"netdiag/unshare": round(nd / us, 2),
                  "cli_start/netdiag": round(by["nd-version"]["median_ms"] / nd, 2),
                  "confined/privileged": round(nd / by["nd-privileged"]["median_ms"], 3)}
        if "docker" in by:
            ratios["netdiag/docker"] = round(nd / by["docker"]["median_ms"], 3)

        print()
        print(f"cold-CLI container start, {args.runs} timed runs each after {args.warmup} warm-up(s), "
              f"{os.cpu_count()} CPUs, kernel {platform.release()}")
        print(fmt_table(benches))
        print()
        cli = by["nd-version"]["median_ms"]
        print(f"netdiag/unshare (median): {ratios['netdiag/unshare']:.2f}x")
        print(f"confinement: netdiag/nd-privileged (median): {ratios['confined/privileged']:.3f}x "
              f"(goal <= {CONFINEMENT_GOAL}x: {'MET' if ratios['confined/privileged'] <= CONFINEMENT_GOAL else 'NOT MET'})")
        print(f"netdiag's CLI start alone (`netdiag version`): {cli:.1f} ms = {100 * cli / nd:.0f}% of its run median")
        if "docker" in by:
            print(f"netdiag/docker  (median): {ratios['netdiag/docker']:.2f}x   "
                  f"(docker {dockerd.server_version}, private dockerd in netns)")
            met = nd <= GOAL_RATIO * by["docker"]["median_ms"]
            print(f"verdict: {'MET' if met else 'NOT MET'} - goal netdiag median <= {GOAL_RATIO} x docker median: "
                  f"{nd:.1f} ms vs {GOAL_RATIO * by['docker']['median_ms']:.1f} ms")
        else:
            met = None
            print(f"docker: unavailable ({docker_status.get('reason', 'unknown')})")
            print(f"verdict: n/a - goal (netdiag <= {GOAL_RATIO} x docker) needs Docker")

        profile = None
        if args.importtime:
            profile = import_profile(nd_tail, nd_env, netns)
            print()
            print(f"`python -X importtime -m netdiag run ...`: {profile['total_ms']:.0f} ms importing "
                  f"(median of 3; importtime itself adds some); top-level imports, cumulative, best of 3:")
            for row in profile["top"]:
                print(f"  {row['cumulative_ms']:8.1f} ms  {row['module']}")

        report = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
            "runs": args.runs, "warmup": args.warmup,
            "results": by, "ratios": ratios,
            "docker": docker_status,
            "goal": {"rule": f"netdiag median <= {GOAL_RATIO} x docker median", "met": met},
            "imports": profile,
        }
    except Interrupted as e:
        log(f"run_bench: {e}; cleaning up")
        rc = 130
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        log(f"run_bench: error: {e}")
        rc = 1
    finally:
        # A second ^C must not cut the cleanup short.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        leftovers = cleanup(work, netns, dockerd, [nd_cgroup, dk_cgroup], root_before)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        if leftovers:
            log("run_bench: LEFT BEHIND: " + "; ".join(leftovers))
            rc = rc or 3
        else:
            log(f"cleanup: netns {netns}, mounts, processes, cgroups and {work} all gone")

    if report and args.json:
        report["cleanup_ok"] = not leftovers
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return rc


def cleanup(work: Path, netns: str, dockerd: PrivateDockerd | None, cgroups: list[str],
            root_before: str | None) -> list[str]:
    """Undo everything; returns a description of whatever could not be removed."""
    left = []
    tracked = Tracked()
    tracked.add(pids_mentioning(str(work)))  # dockerd, its containerd and shims, netdiag monitors
    steps = [
        ("dockerd", lambda: dockerd and dockerd.stop()),
        ("processes", lambda: end_processes(work, tracked)),
        ("mounts", lambda: unmount_under(work)),
        ("netns", lambda: netns_del(netns)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as e:  # keep going: every later step still has to run
            left.append(f"{name} cleanup failed: {e}")
    for cg in cgroups:
        left += [f"cgroup {d}" for d in remove_cgroup_tree(cg)]
    if not mounts_under(work):
        shutil.rmtree(work, ignore_errors=True)
    if dockerd is not None:
        left += [f"path {p}" for p in remove_created(dockerd.host_paths_before)]
    if work.exists():
        left.append(f"dir {work}")
    left += [f"mount {m}" for m in mounts_under(work)]
    if netns_listed(netns):
        left.append(f"netns {netns}")
    with open("/proc/mounts") as f:
        if any(f"/run/netns/{netns} " in line for line in f):
            left.append(f"mount /run/netns/{netns}")
    running = sorted(set(tracked.running()) | set(pids_mentioning(str(work))))
    if running:
        left.append(f"processes {running}")
    if tracked.zombies():
        left.append(f"zombies awaiting reaping by their parent {tracked.zombies()}")
    if root_before is not None and root_netns_snapshot() != root_before:
        left.append("the root network namespace's links/addresses/routes/rules CHANGED during the run")
    return left


if __name__ == "__main__":
    sys.exit(main())
