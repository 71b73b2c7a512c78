#!/usr/bin/env python3
"""Accuracy of diagnoses and fixes over many fault-injection cases (netdiag/faults).

Each case builds a seeded random world in its own lab, plants one fault of the catalogue, runs
`netdiag trace --json`, compares the top-level cause and hop with the planted ones, applies the
printed fix_command and proves with real connections that the flow works again and a control flow
still works. Reported per fault kind: cases, cause and hop right, fixes that worked when applied,
cases fully passed; then the confusion table (planted cause -> named cause). The reference is the
planted fault itself: a figure here is a share of cases, not a time.

    sudo .venv/bin/python bench/bench_faults.py [--cases 1000] [--seed S] [--parallel 3] [--json FILE]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netdiag.faults import case as cases  # noqa: E402
from netdiag.faults.report import each, summary  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--parallel", type=int, default=3)
    ap.add_argument("--json", help="write every case's result here")
    args = ap.parse_args()
    started = time.monotonic()
    todo = cases.plan(args.seed, args.cases)
    results = []
    for i, r in enumerate(each(todo, args.parallel), 1):
        results.append(r)
        if i % 25 == 0 or i == len(todo):
            print(f"  {i}/{len(todo)} cases, {sum(x.ok for x in results)} passed", file=sys.stderr, flush=True)
        if args.json and i % 100 == 0:  # a long run stopped half-way still leaves its figures
            Path(args.json).write_text(json.dumps([cases.as_json(x) for x in results], indent=1))
    print(f"{len(results)} cases, seed {args.seed}, {time.monotonic() - started:.0f} s, {args.parallel} at a time\n")
    print(summary(results))
    if args.json:
        Path(args.json).write_text(json.dumps([cases.as_json(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
