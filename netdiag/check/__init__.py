"""`netdiag check`: network assertions for CI, each failure explained by the diagnosis engines.

spec.py          the check file: YAML read with line numbers, ${VARS}, includes, validated against
                 schemas/checkfile.schema.json (an error names FILE:LINE and the field); pure.
                 A `Check` is one entry of that file.
runner.py        run_checks: each check evaluated, in parallel, with retries and --fail-fast
live_kinds.py    the kinds that probe: reach and mtu (diagnose), http and latency (health), dns
                 (health.resolve), lb (HAProxy's stats, health.explain), command (a program's
                 exit status: what no probe says, such as a pull that works)
quiet.py         the quiet kind: a `watch` session for a window; every failing flow fails it, diagnosed
static_kinds.py  the kinds answered from the model alone (listening, published, internal, route,
                 no_listener), so also on a snapshot, offline; pure
report.py        text, JSON, JUnit XML and TAP 13 writers; pure
serve.py         check FILE --serve: /healthz runs the checks (cached, one run at a time), 200 or 503
generate.py      a starting check file from what runs now (the pairs that talk, the published ports)

Renamed (issue 19: "check" meant three things): checks.py -> static_kinds.py, run.py -> runner.py
(run() -> run_checks()) and live_kinds.py (the probe-backed kinds, split out of run.py).

May import: diagnose, health, observe (the live model), reason, model, schemas, watch (quiet), runtime.errors.
"""
