"""Run a check file's checks: each kind through the engine that already does its job
(live_kinds.py: reach, mtu, http, latency, dns, lb; static_kinds.py: listening, published,
internal, route, no_listener, from the model only, also offline), so a failed check carries that
engine's diagnosis (cause, hop, evidence, a checked fix) instead of a bare "failed"; retries
(--retry-timeout), --fail-fast and --parallel.

Checks are independent and run in a thread pool (--parallel). `quiet` checks run after all the
others: they watch the host's traffic, and the other checks' probes (a connect expected to be
blocked) are not the host's traffic. A `cancel` event (a served file stopping) skips the checks
not started and ends a quiet check's window early. Live probes are safe side by side:
each carries its own mark (distinct among this process's probes in flight) that its captures and
kernel trace filter on. What is not filtered to a probe - the kernel's host-wide drop reasons,
counters that moved - is never collected here, so a check's result does not depend on --parallel.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from runtime.errors import InvalidArgument, NetdiagError, NotFound

from . import static_kinds
from .live_kinds import LIVE
from .spec import PROBE_ONLY, STATIC, Check

RETRY_SLEEP = 1.0


def run_checks(checks: list[Check], model_factory: Callable, *, snapshot: bool = False, parallel: int = 1, fail_fast: bool = False,
        retry_timeout: float = 0.0, on_start: Callable | None = None, on_done: Callable | None = None,
        cancel: threading.Event | None = None) -> list[dict]:
    """Every check's result, in the order given. `model_factory()` gives the model to check against
    (a fresh live one for each retry; a snapshot's own). `on_start(check)`/`on_done(check, result)`
    are called from the worker threads, one at a time."""
    stop = threading.Event()
    lock = threading.Lock()
    first = model_factory()
    blind = None if snapshot else blindness()
    results: list[dict | None] = [None] * len(checks)

    def one(i: int, check: Check) -> None:
        if stop.is_set() or (cancel is not None and cancel.is_set()):
            why = "--fail-fast stopped the run after a failure" if stop.is_set() else "the run was stopped"
            res = _result(check, "skipped", f"not run: {why}")
        else:
            if on_start:
                with lock:
                    on_start(check)
            res = _attempts(check, first, model_factory, snapshot, retry_timeout, stop, blind, cancel)
            if fail_fast and res["status"] in ("failed", "error"):
                stop.set()
        results[i] = res
        if on_done:
            with lock:
                on_done(check, res)

    for phase in (False, True):  # the quiet checks last
        todo = [(i, c) for i, c in enumerate(checks) if (c.kind == "quiet") == phase]
        if parallel <= 1 or len(todo) <= 1:
            for i, c in todo:
                one(i, c)
            continue
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="check") as pool:
            for f in [pool.submit(one, i, c) for i, c in todo]:
                f.result()
    return [r for r in results if r is not None]


def _attempts(check: Check, model, model_factory, snapshot: bool, retry_timeout: float, stop: threading.Event,
              blind: str | None = None, cancel: threading.Event | None = None) -> dict:
    """The check, tried again (on a fresh model) after a failure until `retry_timeout` seconds
    have passed since its first try: for CI jobs that start checking while the stack comes up."""
    t0 = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        res = evaluate(check, model, snapshot=snapshot, blind=blind, cancel=cancel)
        res["attempts"] = attempt
        res["duration"] = round(time.monotonic() - t0, 3)
        if res["status"] != "failed" or snapshot or time.monotonic() - t0 + RETRY_SLEEP > retry_timeout or stop.is_set() \
                or (cancel is not None and cancel.is_set()):
            return res
        time.sleep(RETRY_SLEEP)
        try:
            model = model_factory()
        except NetdiagError as e:
            return {**res, "status": "error", "summary": f"the host could not be read again for a retry: {e}"}


def blindness() -> str | None:
    """Why this process cannot see the live host whole, or None. Without CAP_SYS_ADMIN other
    namespaces (and so containers) are invisible: a target not found means "could not look"."""
    from runtime.containers.security import available

    missing = [c for c in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW") if c not in set(available())]
    return (f"netdiag runs without {', '.join(missing)}: run it as root, or check a snapshot (--snapshot)") if missing else None


def evaluate(check: Check, model, *, snapshot: bool = False, blind: str | None = None,
             cancel: threading.Event | None = None) -> dict:
    """One check, once: its result object (its fields: README, "Checks in CI"). `blind`: why the
    host cannot be seen whole (then a missing target is "could not run", not "failed")."""
    if check.skip:
        return _result(check, "skipped", check.skip)
    if snapshot and check.kind in PROBE_ONLY:
        return _result(check, "skipped", f"a {check.kind} check needs a live probe: not evaluated on a snapshot")
    t0 = time.monotonic()
    try:
        if check.kind in STATIC:
            out = static_kinds.evaluate(check.kind, check.params, model)
            mode = "model"
        else:
            extra = {"cancel": cancel} if check.kind == "quiet" else {}
            out = LIVE[check.kind](check.params, model, live=not snapshot, **extra)
            mode = "static" if snapshot else "live"
    except (NotFound, InvalidArgument) as e:  # the file is valid: the world does not have what it names
        out, mode = {"status": "failed", "summary": str(e), "observed": "not found"}, "model"
        if blind:
            out.update(status="error", summary=f"could not run: {e} ({blind})")
    except NetdiagError as e:
        out, mode = {"status": "error", "summary": f"could not run: {e}"}, "live"
    res = _result(check, out.pop("status"), out.pop("summary"), **out)
    res["mode"] = mode
    res["duration"] = round(time.monotonic() - t0, 3)
    return res


def _result(check: Check, status: str, summary: str, **extra) -> dict:
    base = {"name": check.name, "kind": check.kind, "file": check.file, "line": check.line, "status": status,
            "summary": summary, "expected": None, "observed": None, "cause": None, "hop": None, "fix": "", "fix_command": None,
            "fix_check": None, "evidence": [], "mode": None, "attempts": 1, "duration": 0.0, "params": check.params,
            "diagnosis": None}
    base.update(extra)
    return base
