#!/usr/bin/env python3
"""Scale (issue 24): netdiag's everyday commands with N running containers in one lab.

    rows  run-none@0 / run-bridge@0     run -d --network none|benchnet busybox sleep, on an empty lab
          run-none@N / run-bridge@N     the same with N containers running (the "501st run -d")
          ps@N                          netdiag ps
          inspect-net@N                 netdiag network inspect benchnet (N endpoints)
          trace-static@N                netdiag trace A B --port 80 --snapshot FILE --json
    goals ps < 0.3 s; run@N <= 1.2x run@0 (none and bridge); network inspect < 0.3 s; static trace < 0.5 s.

The N containers are `busybox sleep 3600` on one user bridge network (benchnet); every run row's
container is removed again (untimed) so each timed run sees the same N. `--profile` adds a
cProfile of each command at N (top functions by cumulative time), run in the lab.

    sudo .venv/bin/python bench/bench_scale.py [--count N] [--runs N] [--warmup N] [--profile] [--json FILE]

Nothing runs in the machine's root namespace; the lab is destroyed at the end, also on an error or
Ctrl-C, and anything it left behind is reported (exit code 3).
"""
from __future__ import annotations

import argparse
import datetime
import json
import io
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import bench_network as bn  # noqa: E402  (Series, round_robin, fmt_table, verdict, loadavg, start_many)
import bench_startup as bs  # noqa: E402  (byte_compile)
import run_bench as rb  # noqa: E402  (Interrupted)
from nd_lab import NdLab  # noqa: E402
from netdiag.worlds import Lab  # noqa: E402

GOAL_PS_S, GOAL_RUN_RATIO, GOAL_INSPECT_S, GOAL_TRACE_S = 0.3, 1.2, 0.3, 0.5
_MAIN_PID = os.getpid()


def _on_signal(signum, _frame):
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise rb.Interrupted(f"interrupted by {signal.Signals(signum).name}")


def run_rows(ctx: NdLab, tag: str, env: dict, prefix: str = "") -> list[bn.Series]:
    """run -d on none and on benchnet; the container made is removed after each (untimed)."""
    def rm(cid: str) -> None:
        ctx.nd("rm", "-f", cid)
    return [bn.Series(f"{prefix}run-none@{tag}", ctx.argv("run", "-d", "--network", "none", "busybox", "sleep", "600"),
                      env, rm),
            bn.Series(f"{prefix}run-bridge@{tag}", ctx.argv("run", "-d", "--network", "benchnet", "busybox", "sleep", "600"),
                      env, rm)]


def rows_at(ctx: NdLab, tag: str, env: dict, trace_args: list[str], prefix: str = "") -> list[bn.Series]:
    rows = run_rows(ctx, tag, env, prefix) + [
        bn.Series(f"{prefix}ps@{tag}", ctx.argv("ps"), env),
        bn.Series(f"{prefix}inspect-net@{tag}", ctx.argv("network", "inspect", "benchnet"), env),
        bn.Series(f"{prefix}trace-static@{tag}", ctx.argv(*trace_args), env)]
    # trace exits 1 for "not delivered": that is a diagnosis, not a failure of the bench
    rows[-1].argv = ["sh", "-c", '"$@"; [ $? -le 1 ]', "sh", *rows[-1].argv]
    return rows


def profile(ctx: NdLab, argv: list[str], out: Path, top: int = 22) -> str:
    """cProfile of one cold `netdiag ARGV` in the lab, the top functions by cumulative time."""
    ctx.lab.run_in(None, [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "netdiag", *argv], env=ctx.lab.env,
                   timeout=300, stdin=bn.subprocess.DEVNULL)
    s = io.StringIO()
    pstats.Stats(str(out), stream=s).sort_stats("cumulative").print_stats(top)
    out.unlink()
    text = s.getvalue()
    return text[text.find("   ncalls"):]


def _goals(med: dict, tag: str, prefix: str = "") -> dict:
    """{goal: (met, share of the goal, text)} for the rows named PREFIX..."""
    goals = {}
    for kind in ("none", "bridge"):
        r = med[f"{prefix}run-{kind}@{tag}"] / med[f"{prefix}run-{kind}@0"]
        goals[f"run-{kind}"] = (r <= GOAL_RUN_RATIO, r / GOAL_RUN_RATIO,
                                f"{prefix}run -d {kind} @{tag} <= {GOAL_RUN_RATIO}x @0: {r:.2f}x")
    for key, goal_s in (("ps", GOAL_PS_S), ("inspect-net", GOAL_INSPECT_S), ("trace-static", GOAL_TRACE_S)):
        ms = med[f"{prefix}{key}@{tag}"]
        goals[key] = (ms <= goal_s * 1000, ms / (goal_s * 1000),
                      f"{prefix}{key} @{tag} < {goal_s * 1000:.0f} ms: {ms:.1f} ms")
    return goals


def measure(args, ctx: NdLab, work: Path) -> dict:
    n = args.count
    ctx.nd("network", "create", "benchnet")
    load0 = bn.loadavg()
    bn.log(f"[1/3] run -d on an empty lab ({args.runs} rounds)")
    before_env = {**ctx.lab.env, "PYTHONPATH": str(Path(args.before).resolve())} if args.before else None
    first = bn.round_robin(run_rows(ctx, "0", ctx.lab.env) +
                           (run_rows(ctx, "0", before_env, "before-") if before_env else []), args.runs, args.warmup)
    bn.log(f"[2/3] starting {n} containers on benchnet")
    t0 = time.perf_counter()
    ids, stopped = bn.start_many(ctx, n, "sc")
    grow_s = time.perf_counter() - t0
    reached = len(ids)
    a, b = ctx.inspect(ids[0]), ctx.inspect(ids[1])
    snap = work / "snap.json"
    ctx.nd("snapshot", "-o", str(snap))
    bn.log(f"[3/3] the commands with {reached} running")
    tag = str(reached)
    trace_args = ["trace", a["Name"].lstrip("/"), b["Name"].lstrip("/"), "--port", "80", "--snapshot", str(snap), "--json"]
    rows = rows_at(ctx, tag, ctx.lab.env, trace_args)
    if before_env:
        rows += rows_at(ctx, tag, before_env, trace_args, "before-")
    at_n = bn.round_robin(rows, args.runs, args.warmup)
    stats = {**first, **at_n}
    med = {k: v["median_ms"] for k, v in stats.items()}
    load1 = bn.loadavg()
    print(f"\n== scale: {reached} containers running (wanted {n}; started in {grow_s:.0f} s); "
          f"{args.runs} rounds after {args.warmup} warm-up(s); load {load0[0]} -> {load1[0]}")
    print(bn.fmt_table(stats))
    if stopped:
        print(f"  NOTE: {stopped}")
    goals = _goals(med, tag)
    if before_env:
        goals.update({f"{k} (before)": _goals(med, tag, "before-")[k] for k in goals})
    words = {}
    for k, (met, ratio, text) in goals.items():
        words[k] = bn.verdict(met, f"{text} ({ratio:.2f} of the goal)")
    profiles = {}
    if args.profile:
        for name, argv in (("ps", ["ps"]), ("inspect-net", ["network", "inspect", "benchnet"]),
                           ("trace-static", trace_args),
                           ("run-bridge", ["run", "-d", "--network", "benchnet", "busybox", "sleep", "600"])):
            profiles[name] = profile(ctx, argv, work / "prof.out")
            print(f"\n-- cProfile: netdiag {' '.join(argv)}\n{profiles[name]}")
    snap.unlink()
    return {"count": n, "reached": reached, "grow_seconds": round(grow_s, 1), "stopped_early": stopped,
            "stats": stats, "load": [load0, load1], "profiles": profiles,
            "goals": {k: {"rule": goals[k][2], "of_goal": round(goals[k][1], 3), "verdict": words[k]} for k in goals}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=500, help="containers to run (default 500)")
    ap.add_argument("--runs", type=int, default=7, help="timed rounds (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per row first (default 2)")
    ap.add_argument("--before", metavar="DIR", help="also time the netdiag checkout in DIR (before-* rows), same lab")
    ap.add_argument("--profile", action="store_true", help="also cProfile each command at N")
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    args = ap.parse_args(argv)
    if args.count < 2 or args.runs < 1 or args.warmup < 1:
        ap.error("--count must be at least 2, --runs and --warmup at least 1")
    if os.geteuid() != 0:
        print("bench_scale: needs root (a lab: namespaces, cgroups)", file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    lab, report, rc, left = None, {}, 0, []
    work = Path(tempfile.mkdtemp(prefix="ndscale-"))
    try:
        for tree in (REPO, *([Path(args.before)] if args.before else [])):
            bs.byte_compile(tree)  # without .pyc files (PYTHONDONTWRITEBYTECODE) every command compiles netdiag
            # the snapshot schema's compiled validator, kept with the bytecode where netdiag keeps it (as scripts/setup does)
            bn.subprocess.run([sys.executable, "-c", "from netdiag.schemas import _fast; _fast('snapshot')"], cwd=tree,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, check=True)
        lab = Lab().create()
        ctx = NdLab(lab, str(Path(sys.executable).with_name("netdiag")))
        report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                  "scale": measure(args, ctx, work)}
    except rb.Interrupted as e:
        bn.log(f"bench_scale: {e}; cleaning up")
        rc = 130
    except (RuntimeError, OSError, bn.subprocess.SubprocessError, KeyError, IndexError) as e:
        bn.log(f"bench_scale: error: {type(e).__name__}: {e}")
        rc = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second ^C must not cut the clean-up short
        if lab is not None:
            bn.log("destroying the lab (it kills every container in it)")
            try:
                lab.destroy()
            except Exception as e:  # noqa: BLE001 - the leak check below still has to run
                left.append(f"destroy failed: {e}")
            left += lab.leaks()
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
    if left:
        bn.log("bench_scale: LEFT BEHIND: " + "; ".join(left))
        rc = rc or 3
    else:
        bn.log("cleanup: the lab, its containers, namespaces, cgroups and mounts gone")
    if args.json and report:
        report["left_behind"] = left
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
