#!/usr/bin/env python3
"""How long a training scenario takes to start, to grade and to stop.

Goals: the largest scenario starts in under 10 s; `check` grades in under 5 s. For every scenario
of the library, round-robin, as a cold CLI each time (`NETDIAG_ROOT` a temp dir of the bench):

| row | command | what it tells |
| --- | --- | --- |
| `start` | `netdiag scenario start N` | lab, world, faults, load balancers settled: what a learner waits for |
| `check` | `netdiag scenario check N` (broken: exit 1) | the grader: `netdiag check` of the scenario's checks in its world |
| `stop` | `netdiag scenario stop N` | everything removed |
| `by-hand` | the world's own `netdiag network create` / `run -d` / `network connect` commands, run one by one in a bare lab (reference; not for a world of several hosts) | what the same containers and networks cost without the scenario layer (no faults, no HAProxy, no settling) |
| `lab` | a bare lab created and destroyed (reference) | the floor every scenario pays for a host of its own |

Prints per scenario the medians and `start / (by-hand + lab)`, then the largest start and the
slowest check against their budgets.

    sudo .venv/bin/python bench/bench_scenario.py [--runs N] [--only 11,12] [--json FILE]

Nothing changes in the root network namespace (compared before and after); every world is removed,
also on failure or Ctrl-C. Exit codes: 0 ok (goals met or not: see the verdict), 1 error,
2 not root, 3 something left behind or changed, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import run_bench as rb  # noqa: E402  (log, Interrupted)
from bench_health import on_signal, root_state  # noqa: E402
from netdiag.worlds import Lab# noqa: E402
from netdiag.scenario import library  # noqa: E402
from netdiag.scenario.session import container_argv  # noqa: E402

START_BUDGET, CHECK_BUDGET = 10.0, 5.0


def timed(argv: list[str], env: dict, ok: tuple[int, ...], **kw) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, **kw)
    wall = time.perf_counter() - t0
    if p.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv[2:])} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-400:]}")
    return wall


def by_hand(spec: dict) -> list[list[str]]:
    """The world's own netdiag commands (what the scenario layer adds is left out)."""
    world = spec["world"]
    cmds = []
    for n in world.get("networks", []):
        argv = ["network", "create"] + (["--subnet", n["subnet"]] if n.get("subnet") else []) + \
               [x for k, v in (n.get("options") or {}).items() for x in ("-o", f"{k}={v}")] + [n["name"]]
        cmds.append(argv)
    for c in world.get("containers", []):
        if "${" in json.dumps(c):
            continue
        cmds.append(container_argv(c)[1:])
        cmds += [["network", "connect", net, c["name"]] for net in c.get("connect", [])]
    cmds += [step["run"][1:] for step in spec.get("faults", []) if step["run"][0] == "netdiag"]  # worlds made by a fault
    for lb in world.get("haproxy", []):
        cmds.append(["run", "-d", "--name", lb["name"], "--network", lb["network"], "busybox", "sleep", "3600"])
    return cmds


def reference(spec: dict, env: dict) -> tuple[float, float]:
    """(lab create + destroy, the world by hand) in seconds."""
    lab = Lab(name=f"ndbs-{os.getpid()}")
    t0 = time.perf_counter()
    lab.create()
    made = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        for argv in by_hand(spec):
            p = lab.netdiag(*argv, env={**lab.env, "PATH": env["PATH"]}, timeout=120)
            if p.returncode:
                raise RuntimeError(f"by hand: netdiag {' '.join(argv)}: {p.stderr.strip()[-300:]}")
        world = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        lab.destroy()
        made += time.perf_counter() - t0
        if lab.leaks():
            raise RuntimeError(f"reference lab left {lab.leaks()}")
    return made, world


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed rounds (3)")
    ap.add_argument("--only", help="comma-separated scenario numbers (default: all)")
    ap.add_argument("--json", metavar="FILE", help="write the samples and stats as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs >= 1")
    if os.geteuid() != 0:
        print("bench_scenario: needs root (network namespaces, cgroups)", file=sys.stderr)
        return 2
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    names = library.names()
    if args.only:
        wanted = {int(x) for x in args.only.split(",")}
        names = [n for n in names if int(n[:2]) in wanted]
    root = tempfile.mkdtemp(prefix="ndbs-")
    env = {**os.environ, "NETDIAG_ROOT": root, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    nd = [sys.executable, "-m", "netdiag"]
    before = root_state()
    rows = ("start", "check", "stop", "lab", "by-hand")
    samples = {n: {r: [] for r in rows} for n in names}
    rc, left = 0, []
    try:
        for i in range(args.runs):
            for n in names:
                s = samples[n]
                spec = library.load(n).spec
                s["start"].append(timed(nd + ["scenario", "start", n], env, (0,)))
                try:
                    s["check"].append(timed(nd + ["scenario", "check", n], env, (1,)))
                finally:
                    s["stop"].append(timed(nd + ["scenario", "stop", n], env, (0,)))
                if "cluster" not in spec["world"]:  # a cluster world has no by-hand reference here
                    lab, world = reference(spec, env)
                    s["lab"].append(lab)
                    s["by-hand"].append(world)
            rb.log(f"round {i + 1}/{args.runs} done")
        report = {"runs": args.runs, "load": os.getloadavg(), "budgets": {"start": START_BUDGET, "check": CHECK_BUDGET},
                  "scenarios": {}}
        print(f"\n{'scenario':<28} {'start':>7} {'check':>7} {'stop':>6} {'lab':>6} {'by-hand':>8} {'start/(lab+by-hand)':>20}")
        for n in names:
            med = {r: statistics.median(samples[n][r]) if samples[n][r] else None for r in rows}
            ratio = med["start"] / (med["lab"] + med["by-hand"]) if med["lab"] is not None else None
            report["scenarios"][n] = {"median": med, "ratio": ratio, "samples": samples[n]}

            def f(x, width):
                return f"{x:>{width}.2f}" if x is not None else f"{'-':>{width}}"
            print(f"{n:<28} {f(med['start'], 7)} {f(med['check'], 7)} {f(med['stop'], 6)} {f(med['lab'], 6)} "
                  f"{f(med['by-hand'], 8)} {f(ratio, 19)}{'x' if ratio else ' '}")
        slowest_start = max(names, key=lambda n: max(samples[n]["start"]))
        slowest_check = max(names, key=lambda n: max(samples[n]["check"]))
        st, ck = max(samples[slowest_start]["start"]), max(samples[slowest_check]["check"])
        report["met"] = {"start": st < START_BUDGET, "check": ck < CHECK_BUDGET}
        print(f"\nslowest start: {slowest_start} {st:.2f} s = {st / START_BUDGET:.2f}x of {START_BUDGET:g} s "
              f"({'MET' if report['met']['start'] else 'NOT MET'})")
        print(f"slowest check: {slowest_check} {ck:.2f} s = {ck / CHECK_BUDGET:.2f}x of {CHECK_BUDGET:g} s "
              f"({'MET' if report['met']['check'] else 'NOT MET'})")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    except rb.Interrupted as e:
        rb.log(str(e))
        rc = 130
    except Exception as e:  # noqa: BLE001 - report, then clean up
        rb.log(f"error: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        subprocess.run(nd + ["scenario", "stop", "--all"], env=env, capture_output=True, timeout=300)
        leftover = [p for p in Path(root).rglob("*") if p.is_file() and p.suffix == ".json" and "scenarios" in p.parts]
        left += [str(p) for p in leftover]
        if root_state() != before:
            left.append("the root network namespace changed during the run")
        if left:
            print(f"LEFT BEHIND: {left}", file=sys.stderr)
            rc = 3
        subprocess.run(["rm", "-rf", root])
    return rc


if __name__ == "__main__":
    sys.exit(main())
