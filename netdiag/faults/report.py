"""Running many fault-injection cases and summing them up: per kind, and the confusion table."""
from __future__ import annotations

from collections import Counter, defaultdict

from . import case as cases


def each(todo, parallel: int, verify_fix: bool = False):
    """Results as cases finish (in plan order), `parallel` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        yield from pool.map(lambda c: run_safely(c, verify_fix), todo)


def run_safely(c: cases.Case, verify_fix: bool = False) -> cases.Result:
    """A case whose world could not be built is that case's failure, not the run's end."""
    try:
        return cases.run(c, verify_fix=verify_fix)
    except Exception as e:  # noqa: BLE001
        r = cases.Result(c)
        r.problems.append(f"the world could not be built: {e}")
        return r


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
    verified = [r for r in results if r.replica is not None]
    if verified:
        lines.append(f"\nverified on a replica: {len(verified)} fixes ({sum(r.replica for r in verified)} work there); "
                     f"the real world agreed on {sum(r.replica == r.fix_works for r in verified)}")
    confusion = Counter((r.expected, r.cause) for r in results)
    lines.append("\nconfusion (planted -> named):")
    for (want, got), count in sorted(confusion.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        lines.append(f"  {want:24} -> {str(got):24} {count}{'' if want == got else '  <-- wrong'}")
    return "\n".join(lines)
