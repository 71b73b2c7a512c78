"""python -m netdiag.faults [--seed S] [--cases N] [--kind K ...] [--shape SHAPE] [--json]

Runs fault-injection cases (as root: each builds a lab) and prints, per fault kind, how often the
planted cause was named at the planted hop and how often the printed fix worked when applied, then
the confusion table (planted cause -> named cause)."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

from . import case as cases
from .case import KINDS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netdiag.faults", description=__doc__.split("\n\n")[1])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=len(KINDS))
    ap.add_argument("--kind", action="append", choices=sorted(KINDS))
    ap.add_argument("--shape", choices=("routed", "chain", "bridged", "netdiag"))
    ap.add_argument("--json", action="store_true", help="one JSON object per case, then the summary")
    args = ap.parse_args(argv)
    if args.shape and args.kind and len(args.kind) == 1:  # one exact case: --seed is the world's seed
        todo = [cases.Case(args.seed, args.kind[0], args.shape)]
    else:
        todo = cases.plan(args.seed, args.cases, args.kind)
    results = []
    for i, c in enumerate(todo, 1):
        r = cases.run(c)
        results.append(r)
        if args.json:
            print(json.dumps(cases.as_json(r)), flush=True)
        else:
            print(f"[{i}/{len(todo)}] {'ok  ' if r.ok else 'FAIL'} {r.seconds:5.1f}s {c.id}"
                  + ("" if r.ok else "\n" + r.explain()), flush=True)
    print(summary(results))
    return 0 if all(r.ok for r in results) else 1


def summary(results) -> str:
    by_kind: dict[str, list] = defaultdict(list)
    for r in results:
        by_kind[r.case.kind].append(r)
    lines = [f"{'kind':40} {'cases':>5} {'cause+hop':>9} {'fix works':>9} {'passed':>6}"]
    for k in sorted(by_kind):
        rs = by_kind[k]
        fixable = [r for r in rs if r.fix_works is not None]
        lines.append(f"{k:40} {len(rs):5} {sum(r.diagnosed for r in rs):9} "
                     f"{(str(sum(bool(r.fix_works) for r in fixable)) + '/' + str(len(fixable))) if fixable else '-':>9} "
                     f"{sum(r.ok for r in rs):6}")
    n = len(results)
    lines.append(f"{'all':40} {n:5} {sum(r.diagnosed for r in results):9} "
                 f"{sum(bool(r.fix_works) for r in results):9} {sum(r.ok for r in results):6}")
    confusion = Counter((r.expected, r.cause) for r in results)
    lines.append("\nconfusion (planted -> named):")
    for (want, got), count in sorted(confusion.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        lines.append(f"  {want:24} -> {str(got):24} {count}{'' if want == got else '  <-- wrong'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
