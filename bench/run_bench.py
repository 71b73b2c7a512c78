#!/usr/bin/env python3
"""Cold-CLI container start: `netdiag run --rm --network none busybox true` against
`unshare --fork --pid --mount --uts --ipc --net true` (the kernel's floor) and, where a Docker
engine is installed, `docker run --rm --network none` on a private dockerd. Goal: netdiag's median
at most 0.35x Docker's (issue 24; it was 0.5x).

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
import functools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from netdiag.worlds import leftovers  # noqa: E402  (the private dockerd's clean-up helpers)
from netdiag.worlds.dockerd import Dockerd, find_docker_cli, find_dockerd, remove_created  # noqa: E402,F401  (re-exported)
from netdiag.worlds.leftovers import (  # noqa: E402,F401  (re-exported: the other benches use them from here)
    Tracked, mounts_under, pids_mentioning, remove_cgroup_tree, unmount_under)

GOAL_RATIO = 0.35  # issue 24 (it was 0.5); bench_startup.py measures the same beside Docker's bridge and Podman
CONFINEMENT_GOAL = 1.10  # Docker's default confinement may cost at most 10% of a `run --rm`


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
    from netdiag.worlds import fresh_sysctls

    subprocess.run(["ip", "netns", "add", name], check=True)
    fresh_sysctls(f"/run/netns/{name}")  # a lab's explicit sysctls, not the machine's (netdiag/worlds/host.py)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def netns_del(name: str) -> None:
    if Path("/run/netns", name).exists():
        subprocess.run(["ip", "netns", "del", name], check=False)


def netns_listed(name: str) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(line.split()[0] == name for line in out.splitlines() if line.strip())


# ----------------------------------------------------------------------------- mounts, processes, cgroups, docker
# The private dockerd and its clean-up helpers live in netdiag/worlds (dockerd.py, leftovers.py; scenarios and the tests
# start engines too); the other benches reach them through this module.

end_processes = functools.partial(leftovers.end_processes, log=log)


class PrivateDockerd(Dockerd):
    """The worlds' Docker engine (netdiag/worlds/dockerd.py) without networking (--bridge none,
    iptables off) unless a subclass sets `networking`, reporting on stderr."""

    networking = False

    def __init__(self, *args, **kw):
        kw.setdefault("log", log)
        super().__init__(*args, **kw)


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
    steps = [  # the engine first: dockerd, containerd, shims, its mounts, cgroup and host paths
        ("dockerd", lambda: left.extend(dockerd.remove()) if dockerd is not None else None),
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
