"""`netdiag check FILE...`: network assertions for CI. This module parses and prints; the format is
netdiag/check/spec.py, the work netdiag/check/runner.py, the writers netdiag/check/report.py."""
from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

import typer

from .app import app

FORMATS = ("text", "json", "junit", "tap")


@app.command()
def check(
    files: Optional[List[str]] = typer.Argument(None, help="Check files (YAML); several run as one suite"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="text, json (one object per check), junit (XML) or tap (TAP 13); "
                                      "default text (with --serve: json, when the Accept header names none)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the report (or --generate's file) to FILE; progress stays on the terminal"),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="Check a snapshot file, offline and without root: static checks and static paths; probe-only checks are skipped"),
    parallel: int = typer.Option(4, "--parallel", "-j", help="Run N checks at a time (probes never mix: each has its own mark)"),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed check (the others are reported as skipped)"),
    retry_timeout: str = typer.Option("0", "--retry-timeout", help="Retry a failed check (every second, on a fresh view of the host) until this long has passed: 30s, 2m"),
    var: Optional[List[str]] = typer.Option(None, "--var", help="NAME=VALUE for ${NAME} in the files (beats the environment and vars:)"),
    generate: bool = typer.Option(False, "--generate", help="Write a starting check file from what runs now (pairs that talk, published ports)"),
    verify_fix: bool = typer.Option(False, "--verify-fix", help="Prove each failed reach/mtu check's fix live on a throwaway "
                                    "replica (fresh namespaces rebuilt from the model; the host is never changed): needs root"),
    serve: Optional[str] = typer.Option(None, "--serve", help="Serve the checks on ADDR:PORT: GET /healthz runs them and answers "
                                        "200 (all passed) or 503 with the report (JSON, or JUnit/TAP by the Accept header)"),
    cache: str = typer.Option("5s", "--cache", help="With --serve: answer with the last run's results for this long (0: run each time)"),
):
    """Check the network the way CI needs it: pass, or fail with the reason.

    A check file is YAML: optional vars: and include:, then checks:, a list
    of checks with one kind each. Targets as for trace: a container
    (netdiag's or Docker's), ns:NAME, pid:N, host or an IPv4 address.

      vars:
        app_port: 8080           # ${app_port}; the environment, --var win
      include:
        - common.yaml            # relative to this file; runs first
      checks:
        - name: the web tier reaches the app tier on 8080
          reach: {from: web, to: app, port: "${app_port}"}
        - name: the database is not reachable from outside
          reach: {from: "ns:outside", to: 203.0.113.2, port: 5432,
                  expect: blocked}
        - name: the tiers are apart by design, not by accident
          reach: {from: web, to: db, port: 5432,
                  expect: {blocked: NETWORK_ISOLATION}}
        - http: {from: lb, url: "http://web/health", status: 200,
                 body_contains: ok, within: 2s}
        - dns: {from: web, name: app, address: 10.0.0.5}
        - mtu: {from: web, to: app, size: 1400}    # IP packet, DF set
        - latency: {from: web, to: app, port: 8080, below: 5ms}
        - listening: {target: app, port: 8080, address: 0.0.0.0}
        - published: {target: web, port: 80, host_port: 8080}
        - internal: {network: back}
        - route: {in: web, to: default}
        - no_listener: {port: 5432}    # no container on 0.0.0.0:5432
        - quiet: {for: 10s, network: front}   # no connect fails meanwhile

    reach and mtu run the trace pipeline (a live probe and the kernel's
    packet trace; the static path on --snapshot), http and latency the
    health engine, dns the source's own resolver, command runs a program
    (an argument list), quiet runs `watch` for its window (after the other
    checks); the others read the model, so they also run on
    --snapshot without root. Every failed check
    names its cause code, the hop and the fix. The whole format:
    netdiag/schemas/checkfile.schema.json and the README (Checks in CI).

    --serve ADDR:PORT keeps running (Ctrl-C or SIGTERM stop it): GET /healthz
    runs the checks (results kept for --cache), 200 or 503 with the report.

    Exit codes: 0 all passed, 1 some failed, 2 invalid file, 3 could not run."""
    from runtime.errors import InvalidArgument

    if fmt is not None and fmt not in FORMATS:
        raise InvalidArgument(f"Unknown --format {fmt!r}", f"it is one of {', '.join(FORMATS)}", "")
    if not 1 <= parallel <= 64:
        raise InvalidArgument(f"Invalid --parallel {parallel}", "from 1 to 64 checks at a time", "")
    if serve is not None:
        _serve(files, serve, cache, fmt, snapshot=snapshot, parallel=parallel, fail_fast=fail_fast, retry=_seconds(retry_timeout),
               var=var, refused={"-o": output, "--generate": generate, "--verify-fix": verify_fix})
        raise typer.Exit(0)
    fmt = fmt or "text"
    if generate:
        if files:
            raise InvalidArgument("--generate takes no check file", "it writes one", "give -o FILE to choose where")
        _generate(snapshot, output)
        raise typer.Exit(0)
    if not files:
        raise InvalidArgument("No check file given", "", "e.g. netdiag check checks.yaml (or --generate to start one)")
    retry = _seconds(retry_timeout)
    from ..check import report, spec

    cli_vars = dict(spec.parse_var(v) for v in var or [])
    suite = spec.load(list(files), cli_vars=cli_vars)
    factory = _model_factory(snapshot)
    shown = Shown(fmt, output, len(suite.checks))
    t0 = time.monotonic()
    from ..check.runner import run_checks

    done = shown.done
    if verify_fix:  # before the check is shown, so its lines say it
        verifier = _Verifier(factory)
        done = lambda check, r: (verifier(r), shown.done(check, r))  # noqa: E731
    with shown:
        results = run_checks(suite.checks, factory, snapshot=snapshot is not None, parallel=parallel, fail_fast=fail_fast,
                      retry_timeout=retry, on_start=shown.started, on_done=done)
    s = report.summary(results, time.monotonic() - t0)
    text = report.render(fmt, results, s, suite.files)
    if output:
        _write(output, text)
    if output or fmt == "text":
        shown.finish(s)
    if not output and fmt != "text":
        sys.stdout.write(text)
    raise typer.Exit(report.exit_code(results))


def _serve(files, address: str, cache: str, fmt: str | None, *, snapshot, parallel: int, fail_fast: bool, retry: float, var,
           refused: dict) -> None:
    """check FILE --serve: parse and print here; the serving is netdiag/check/serve.py."""
    import signal
    import threading

    from runtime.errors import InvalidArgument

    from ..check import report, serve, spec
    from ..check.runner import run_checks

    addr, port = serve.parse_address(address)
    cache_s = _seconds(cache, "--cache")
    given = [flag for flag, value in refused.items() if value]
    if given:
        raise InvalidArgument(f"{given[0]} does not go with --serve", "--serve answers each request with the report",
                              "leave it out, or run the checks once without --serve")
    if not files:
        raise InvalidArgument("No check file given", "", "e.g. netdiag check checks.yaml --serve 127.0.0.1:8080")
    suite = spec.load(list(files), cli_vars=dict(spec.parse_var(v) for v in var or []))
    factory = _model_factory(snapshot)
    cancel = threading.Event()

    def run():
        t0 = time.monotonic()
        results = run_checks(suite.checks, factory, snapshot=snapshot is not None, parallel=parallel, fail_fast=fail_fast,
                             retry_timeout=retry, cancel=cancel)
        return results, report.summary(results, time.monotonic() - t0)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    n = len(suite.checks)
    # SIGTERM stops it as Ctrl-C does: the run under way is cancelled and waited for
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.default_int_handler(signum, frame))
    serve.serve(serve.Results(run, cache_s), suite.files, addr, port, cancel=cancel, default=fmt or "json", log=say,
                ready=lambda: say(f"serving {n} check{'s' if n != 1 else ''} on http://{address}{serve.PATH} "
                                  f"(results kept {cache_s:g}s); Ctrl-C stops"))
    say("stopped")


class _Verifier:
    """fix_verified (and fix_proof) for a failed check whose fix comes from the trace pipeline (reach,
    mtu: a diagnosis with a source namespace and an address), on a replica of its own. One model
    for all of them, read when the first is needed."""

    def __init__(self, factory):
        import threading

        self.factory, self.model, self.lock = factory, None, threading.Lock()

    def __call__(self, r: dict) -> None:
        from .. import verify
        from ..reason.result import Diagnosis, FixClaim

        if r["status"] != "failed" or not r.get("fix_command"):
            return
        diag = r.get("diagnosis")
        if isinstance(diag, Diagnosis) and diag.hops and diag.dst_ip:
            with self.lock:
                self.model = self.model or self.factory()
            r["fix_verified"] = verify.verify(self.model, diag, command=r["fix_command"],
                                              timeout=float((r.get("params") or {}).get("timeout") or 2.0))
        else:
            r["fix_verified"] = {"replica": None, "detail": f"a {r['kind']} check's fix is not verified on a replica "
                                                           "(only reach and mtu checks carry a flow a replica can probe)"}
        r["fix_proof"] = verify.proof(FixClaim.from_json(r))


def _write(path: str, text: str) -> None:
    from runtime.errors import InvalidArgument

    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise InvalidArgument(f"Cannot write {path}", e.strerror or str(e), "check the -o path") from None


def _seconds(text: str, option: str = "--retry-timeout") -> float:
    if text.strip() in ("0", "0s", ""):
        return 0.0
    from runtime.validate import duration

    return duration(text, option)


def _model_factory(snapshot: str | None):
    """A snapshot is loaded once; the live host is observed afresh for each check that asks."""
    from ..observe.snapshot import model_of

    if snapshot:
        model = model_of(snapshot)
        return lambda: model
    return model_of


def _generate(snapshot: str | None, output: str | None) -> None:
    from ..check.generate import generate, to_yaml
    from ..observe.snapshot import model_of

    model = model_of(snapshot, conntrack=True)
    source = f"the snapshot {snapshot}" if snapshot else "this host"
    doc = generate(model)
    text = to_yaml(doc, source)
    if output:
        _write(output, text)
        n = len(doc["checks"])
        print(f"wrote {output} ({n} check{'s' if n != 1 else ''})", file=sys.stderr)
    else:
        sys.stdout.write(text)


class Shown:
    """Progress while the checks run: a rich bar with each result above it on a terminal, plain
    lines (one per finished check, flushed) in CI and pipes. Machine formats on stdout get none."""

    def __init__(self, fmt: str, output: str | None, total: int):
        self.stream = sys.stdout if (output or fmt == "text") else sys.stderr
        self.quiet = not (output or fmt == "text") and not sys.stderr.isatty()
        self.rich = not self.quiet and self.stream.isatty() and not os.environ.get("CI")
        self.total, self.progress, self.task = total, None, None
        self.pending: dict[int, dict] = {}  # plain lines keep the file's order, whatever finishes first
        self.next = 0

    def __enter__(self):
        if self.rich:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]checking[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                     TextColumn("{task.description}"), console=Console(file=self.stream), transient=True)
            self.progress.start()
            self.task = self.progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def started(self, check) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=check.name[:60])

    def done(self, check, r: dict) -> None:
        from ..check import report

        if self.quiet:
            return
        lines = [report.line(r)] + ["      " + d for d in report.details(r)]
        if self.progress is not None:
            from rich.markup import escape

            colour = {"passed": "green", "failed": "red", "skipped": "dim", "error": "yellow"}[r["status"]]
            head, *rest = lines
            self.progress.console.print(f"[{colour}]{escape(head[:5])}[/]{escape(head[5:])}", highlight=False)
            for ln in rest:
                self.progress.console.print(escape(ln), highlight=False)
            self.progress.advance(self.task)
        else:
            self.pending[check.index] = r
            while self.next in self.pending:
                r = self.pending.pop(self.next)
                self.next += 1
                print("\n".join([report.line(r)] + ["      " + d for d in report.details(r)]), file=self.stream, flush=True)

    def finish(self, s: dict) -> None:
        from ..check import report

        if not self.quiet:
            print(report.summary_line(s), file=self.stream, flush=True)
