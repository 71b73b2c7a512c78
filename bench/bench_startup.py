#!/usr/bin/env python3
"""Start-up side by side (issue 24): netdiag, Docker and Podman doing the same cold commands in one
run, each engine on a lab host of its own, every row a fresh process timed round-robin.

    rows  py-floor     the interpreter netdiag runs on, doing nothing (`python -c pass`)
          nd-version   netdiag version                 (goal < 50 ms)
          nd-ps        netdiag ps, one container running (goal < 50 ms)
          nd-none      netdiag run --rm --network none busybox true
          nd-bridge    netdiag run --rm busybox true   (its default bridge)
          docker-*     the same with Docker (DockerLab: a private dockerd with its default networking)
          podman-*     the same with Podman where installed (PodmanLab: rootful podman 4.3, crun, netavark)
    goals nd-none <= 0.35x docker-none, nd-bridge <= 0.40x docker-bridge; the ratios to Podman are shown too.

`--before DIR` adds netdiag's four rows again (`before-*`) for another checkout of netdiag (a git
worktree of the revision before a change), run by the same interpreter with DIR first on
PYTHONPATH and on the same lab: before and after in one run.

`--importtime` adds `python -X importtime` profiles of netdiag's commands (run_bench.import_profile):
the top-level imports and their sum. A PYTHONDONTWRITEBYTECODE in the environment makes every
start compile netdiag's sources: the bench byte-compiles them first, as scripts/setup does.

    sudo .venv/bin/python bench/bench_startup.py [--runs N] [--warmup N] [--no-docker] [--no-podman]
                                                 [--before DIR] [--importtime] [--json FILE]

Nothing runs in the machine's root namespace: each engine is inside its lab (their nsenter command
lines are what is timed), and the labs are destroyed at the end, also on failure or Ctrl-C; what
they leave (namespaces, cgroups, mounts, processes, root-namespace changes) is reported and makes
the exit code 3.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import bench_network as bn  # noqa: E402  (Series, round_robin, fmt_table, verdict, loadavg)
import engines  # noqa: E402  (the engines' labs, signals)
import run_bench as rb  # noqa: E402  (import_profile, Interrupted)
from netdiag.worlds import DockerLab, Lab  # noqa: E402
from netdiag.worlds.podman import PodmanLab  # noqa: E402

GOAL_NONE, GOAL_BRIDGE, GOAL_CLI_MS = 0.35, 0.40, 50.0
ND_COMMANDS = {"nd-version": ["version"], "nd-ps": ["ps"], "nd-none": ["run", "--rm", "--network", "none", "busybox", "true"],
               "nd-bridge": ["run", "--rm", "busybox", "true"]}


def byte_compile(tree: Path) -> None:
    """What scripts/setup does: without .pyc files every cold start compiles netdiag's sources."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "netdiag", "runtime"], cwd=tree, check=True,
                   stdout=subprocess.DEVNULL)


def engine_rows(prefix: str, enter: list[str], cli: list[str], image: str, env: dict | None) -> list[bn.Series]:
    """docker-* or podman-* rows: the same three commands as netdiag's."""
    return [bn.Series(f"{prefix}-ps", enter + cli + ["ps"], env),
            bn.Series(f"{prefix}-none", enter + cli + ["run", "--rm", "--network", "none", image, "true"], env),
            bn.Series(f"{prefix}-bridge", enter + cli + ["run", "--rm", image, "true"], env)]


def ratio(med: dict, a: str, b: str) -> float | None:
    return round(med[a] / med[b], 3) if a in med and b in med else None


def measure(args, labs: dict) -> dict:
    nd_lab: Lab = labs["netdiag"]
    nd_enter = ["nsenter", f"--net={nd_lab.namespace()}", "--"]
    nd_bin = str(Path(sys.executable).with_name("netdiag"))
    rows = [bn.Series("py-floor", nd_enter + [sys.executable, "-c", "pass"], nd_lab.env)]
    rows += [bn.Series(name, nd_enter + [nd_bin, *argv], nd_lab.env) for name, argv in ND_COMMANDS.items()]
    if args.before:
        env = {**nd_lab.env, "PYTHONPATH": str(Path(args.before).resolve())}
        rows += [bn.Series(name.replace("nd-", "before-"), nd_enter + [nd_bin, *argv], env) for name, argv in ND_COMMANDS.items()]
    nd_lab.netdiag("run", "-d", "--network", "none", "--name", "idle", "busybox", "sleep", "3600", check=True)
    if "docker" in labs:
        dk: DockerLab = labs["docker"]
        dk.docker("run", "-d", "--network", "none", "--name", "idle", dk.image, "sleep", "3600")
        rows += engine_rows("docker", ["nsenter", f"--net={dk.namespace()}", "--"], dk.engine.docker(), dk.image,
                            dk.engine.cli_env())
    if "podman" in labs:
        pm: PodmanLab = labs["podman"]
        pm.podman("run", "-d", "--network", "none", "--name", "idle", pm.image, "sleep", "3600")
        keeper = pm.podman_host.keeper_pid()
        rows += engine_rows("podman", ["nsenter", f"--net=/proc/{keeper}/ns/net", f"--mount=/proc/{keeper}/ns/mnt", "--"],
                            ["podman"], pm.image, pm.env)
    load0 = bn.loadavg()
    stats = bn.round_robin(rows, args.runs, args.warmup)
    med = {k: v["median_ms"] for k, v in stats.items()}
    ratios = {f"{nd}/{eng}-{kind}": ratio(med, nd, f"{eng}-{kind}")
              for eng in ("docker", "podman") for kind, nd in (("none", "nd-none"), ("bridge", "nd-bridge"), ("ps", "nd-ps"))}
    ratios.update({f"{nd}/{nd.replace('nd-', 'before-')}": ratio(med, nd, nd.replace("nd-", "before-")) for nd in ND_COMMANDS})
    ratios = {k: v for k, v in ratios.items() if v is not None}
    # the fastest runs, as a second reading: on a loaded machine a median is mostly the scheduler's
    low = {k: v["min_ms"] for k, v in stats.items()}
    min_ratios = {k: round(low[a] / low[b], 3) for k in ratios for a, b in [k.split("/")]}
    print(f"\n== start-up, {args.runs} rounds after {args.warmup} warm-up(s), load {load0[0]} -> {bn.loadavg()[0]}")
    print(bn.fmt_table(stats))
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}x (fastest runs: {min_ratios[k]:.2f}x)")
    goals = {
        "version": (med["nd-version"] < GOAL_CLI_MS, f"netdiag version < {GOAL_CLI_MS:.0f} ms: {med['nd-version']:.1f} ms "
                    f"(the interpreter alone: {med['py-floor']:.1f} ms)"),
        "ps": (med["nd-ps"] < GOAL_CLI_MS, f"netdiag ps < {GOAL_CLI_MS:.0f} ms: {med['nd-ps']:.1f} ms"),
    }
    for key, kind, goal in (("none", "none", GOAL_NONE), ("bridge", "bridge", GOAL_BRIDGE)):
        r = ratios.get(f"nd-{kind}/docker-{kind}")
        goals[key] = (None if r is None else r <= goal, f"run --rm {kind} <= {goal}x Docker's: " +
                      ("no Docker" if r is None else f"{med[f'nd-{kind}']:.1f} vs {med[f'docker-{kind}']:.1f} ms = {r:.2f}x"))
    words = {k: bn.verdict(met, text) for k, (met, text) in goals.items()}
    return {"stats": stats, "ratios": ratios, "min_ratios": min_ratios, "load": [load0, bn.loadavg()], "goals": {k: {"rule": goals[k][1], "verdict": words[k]} for k in goals}}


def importtime(labs: dict) -> dict:
    nd_lab: Lab = labs["netdiag"]
    out = {}
    print("\n== python -X importtime (median of 3 sums; top-level imports, best of 3)")
    for name, argv in ND_COMMANDS.items():
        prof = rb.import_profile(argv, nd_lab.env, nd_lab.name, top=8)
        out[name] = prof
        print(f"  netdiag {' '.join(argv)}: {prof['total_ms']:.0f} ms importing; "
              + ", ".join(f"{r['module']} {r['cumulative_ms']:.1f}" for r in prof["top"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="timed rounds (default 15)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per row first (default 2)")
    ap.add_argument("--no-docker", action="store_true", help="skip Docker")
    ap.add_argument("--no-podman", action="store_true", help="skip Podman")
    ap.add_argument("--before", metavar="DIR", help="also time the netdiag checkout in DIR (before-* rows)")
    ap.add_argument("--importtime", action="store_true", help="also profile netdiag's imports per command")
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 1:
        ap.error("--runs and --warmup must be at least 1")
    if os.geteuid() != 0:
        print("bench_startup: needs root (labs: namespaces, cgroups, engines)", file=sys.stderr)
        return 2
    engines.unwind_on_signals()
    labs: dict = {}
    report: dict = {"engines": {}}
    rc = 0
    try:
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            bn.log("note: PYTHONDONTWRITEBYTECODE is set: byte-compiling netdiag and runtime first (as scripts/setup does)")
        for tree in (REPO, *([Path(args.before)] if args.before else [])):
            byte_compile(tree)
        report["engines"] = engines.open_labs(labs, args.no_docker, args.no_podman)
        bn.log(f"engines: {report['engines']}")
        report.update(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      machine={"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
                      runs=args.runs, warmup=args.warmup)
        report["startup"] = measure(args, labs)
        if args.importtime:
            report["imports"] = importtime(labs)
    except rb.Interrupted as e:
        bn.log(f"bench_startup: {e}; cleaning up")
        rc = 130
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError) as e:
        bn.log(f"bench_startup: error: {type(e).__name__}: {e}")
        rc = 1
    finally:
        engines.hold_signals()
        left = engines.close_labs(labs)
        for s in engines.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
    if left:
        bn.log("bench_startup: LEFT BEHIND: " + "; ".join(left))
        rc = rc or 3
    else:
        bn.log("cleanup: every lab, engine, namespace, cgroup and mount gone; the root namespace unchanged")
    if args.json and "startup" in report:
        report["left_behind"] = left
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        bn.log(f"wrote {args.json}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
