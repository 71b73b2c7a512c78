#!/usr/bin/env python3
"""Before and after a change, in one run: `run`, `trace` (static and live), `snapshot` and
`check` of two revisions of netdiag, measured alternately so the machine's drift hits both.

Each revision is checked out into a temporary git worktree with its own virtualenv, and its own
benches run it (`bench/run_bench.py`, `bench/bench_observe.py`, `bench/bench_check.py` of that
revision: each bench builds its world with the code it measures). Rounds alternate
before, after, before, after ... and the report gives each figure's median over the rounds and the
ratio after/before (below 1: the change made it faster). Each tree is warmed up first (untimed),
and the rounds go before-after, after-before, ... so neither side always runs first.

    .venv/bin/python bench/bench_versions.py [--before REV] [--after REV] [--rounds N]
                                             [--containers N] [--json FILE]

Needs root (the benches do). The worktrees and virtualenvs are removed at the end, also on failure.
The benches themselves leave nothing behind (each checks that and fails if it did).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# figure name -> (bench, path into its JSON); every figure is a median in milliseconds
FIGURES = {
    "run --rm --network none (cold CLI)": ("run", ("results", "netdiag", "median_ms")),
    "CLI start (netdiag version)": ("run", ("results", "nd-version", "median_ms")),
    "snapshot -o FILE (cold CLI)": ("observe", ("inspect_snapshot", "snapshot_cli", "snapshot-cli", "median_ms")),
    "inspect --net (cold CLI)": ("observe", ("inspect_snapshot", "inspect_cli", "inspect-cli", "median_ms")),
    "trace, static from a snapshot (cold CLI)": ("observe", ("trace_static", "cli", "trace-static", "median_ms")),
    "trace, static through DNAT (cold CLI)": ("observe", ("trace_static", "cli", "trace-static-pub", "median_ms")),
    "trace, live (cold CLI)": ("observe", ("trace_live", "cli", "trace-live", "median_ms")),
    "check, 200 checks --parallel 8": ("check", ("median_wall", "8")),
    "check, 200 checks --parallel 1": ("check", ("median_wall", "1")),
}


def _dig(doc: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc if isinstance(doc, (int, float)) else None


def checkout(rev: str, where: Path) -> Path:
    """A worktree of `rev` with its own virtualenv holding that revision installed."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(where / ".venv")], check=True)
    subprocess.run([str(where / ".venv/bin/pip"), "install", "-q", "-e", str(where)], check=True,
                   stdout=subprocess.DEVNULL)
    return where / ".venv/bin/python"


def bench(python: Path, tree: Path, name: str, out: Path, containers: int) -> dict:
    argv = {"run": ["bench/run_bench.py", "--runs", "10", "--warmup", "2", "--docker", "no"],
            "observe": ["bench/bench_observe.py", "--containers", str(containers), "--runs", "5",
                        "--snapshot-runs", "3"],
            "check": ["bench/bench_check.py", "--rounds", "1"]}[name]
    log = out.with_suffix(".log")
    with log.open("w") as f:
        p = subprocess.run([str(python), *argv, "--json", str(out)], cwd=tree, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0 or not out.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])  # the work dir goes at the end
        raise SystemExit(f"{name} bench of {tree.name} failed (exit {p.returncode}); the end of its output:\n{tail}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="046963b", help="the revision before the change (046963b: before issue 19)")
    ap.add_argument("--after", default="HEAD", help="the revision after it (HEAD)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    ap.add_argument("--containers", type=int, default=100, help="containers in bench_observe's lab (100)")
    ap.add_argument("--json", metavar="FILE", help="write every figure of every round as JSON")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ndversions-"))
    trees = {}
    try:
        for label, rev in (("before", args.before), ("after", args.after)):
            print(f"checking out {label} = {rev} ...", flush=True)
            trees[label] = (checkout(rev, work / label), work / label)
        samples: dict[str, dict[str, list[float]]] = {f: {"before": [], "after": []} for f in FIGURES}
        for label, (python, tree) in trees.items():  # untimed: each tree's first start reads a cold venv
            print(f"warming up {label} ...", flush=True)
            subprocess.run([str(python), "bench/run_bench.py", "--runs", "1", "--warmup", "2", "--docker", "no"], cwd=tree,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for rnd in range(args.rounds):
            for label in (("before", "after") if rnd % 2 == 0 else ("after", "before")):  # ABBA: drift cancels
                python, tree = trees[label]
                for name in ("run", "observe", "check"):
                    print(f"round {rnd + 1}/{args.rounds}: {label} {name} ...", flush=True)
                    doc = bench(python, tree, name, work / f"{label}-{name}-{rnd}.json", args.containers)
                    for fig, (b, path) in FIGURES.items():
                        value = _dig(doc, path) if b == name else None
                        if value is not None:
                            samples[fig][label].append(float(value))
        commits = {label: subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                         text=True).stdout.strip() for label, (_, tree) in trees.items()}
        report = {"before": commits["before"], "after": commits["after"], "rounds": args.rounds, "containers": args.containers,
                  "figures": {}}
        print(f"\nbefore {commits['before']}, after {commits['after']}, {args.rounds} round(s)")
        print(f"{'figure':44} {'before':>10} {'after':>10} {'after/before':>13}")
        for fig, by in samples.items():
            if not by["before"] or not by["after"]:
                print(f"{fig:44} {'-':>10} {'-':>10} {'(not measured)':>13}")
                continue
            b, a = statistics.median(by["before"]), statistics.median(by["after"])
            unit = "s" if "check" in fig else "ms"
            report["figures"][fig] = {"unit": unit, "before": by["before"], "after": by["after"],
                                      "ratio": round(a / b, 3)}
            print(f"{fig:44} {b:>8.1f}{unit:>2} {a:>8.1f}{unit:>2} {a / b:>12.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    finally:
        for label in trees:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / label)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
