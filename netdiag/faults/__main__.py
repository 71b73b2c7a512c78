"""python -m netdiag.faults [--seed S] [--cases N] [--kind K ...] [--shape SHAPE] [--json]

Runs fault-injection cases (as root: each builds a lab) and prints, per fault kind, how often the
planted cause was named at the planted hop and how often the printed fix worked when applied, then
the confusion table (planted cause -> named cause)."""
from __future__ import annotations

import argparse
import json
import sys

from . import case as cases
from .report import each, summary
from .case import KINDS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netdiag.faults", description=__doc__.split("\n\n")[1])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=len(KINDS))
    ap.add_argument("--kind", action="append", choices=sorted(KINDS))
    ap.add_argument("--shape", choices=("routed", "chain", "bridged", "netdiag", "docker", "overlay"))
    ap.add_argument("--parallel", type=int, default=1, help="cases at a time (each in its own lab)")
    ap.add_argument("--json", action="store_true", help="one JSON object per case, then the summary")
    ap.add_argument("--verify-fix", action="store_true", help="trace with --verify-fix too: the replica's verdict on each "
                    "fix must be the real world's")
    args = ap.parse_args(argv)
    if args.shape and args.kind and len(args.kind) == 1:  # one exact case: --seed is the world's seed
        todo = [cases.Case(args.seed, args.kind[0], args.shape)]
    else:
        todo = cases.plan(args.seed, args.cases, args.kind)
    results = []
    for i, r in enumerate(each(todo, args.parallel, args.verify_fix), 1):
        c = r.case
        results.append(r)
        if args.json:
            print(json.dumps(cases.as_json(r)), flush=True)
        else:
            print(f"[{i}/{len(todo)}] {'ok  ' if r.ok else 'FAIL'} {r.seconds:5.1f}s {c.id}"
                  + ("" if r.ok else "\n" + r.explain()), flush=True)
    print(summary(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
