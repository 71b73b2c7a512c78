"""`netdiag health TARGET --from SRC` and `netdiag explain`: a check done the way a load balancer
does it, and why it fails. This module parses and renders; the work is in netdiag/health/."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .app import app

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNKNOWN = 0, 1, 3


def _exit_for(result: dict) -> int:
    if result["healthy"]:
        return EXIT_HEALTHY
    return EXIT_UNHEALTHY if result["cause"] else EXIT_UNKNOWN


@app.command()
def health(
    target: str = typer.Argument(..., help="NAME_OR_IP:PORT, cni:ID:PORT (a CNI pod, resolved from the model), or a URL (http://NAME[:PORT]/PATH)"),
    src: str = typer.Option(..., "--from", help="Check from here: a container name or id, ns:NAME, pid:N or host"),
    tcp: bool = typer.Option(False, "--tcp", help="A TCP connect only (the default for NAME:PORT)"),
    http: Optional[str] = typer.Option(None, "--http", help="An HTTP GET of PATH (the default for a URL)"),
    host: Optional[str] = typer.Option(None, "--host", help="The Host header (default: the target's name)"),
    expect: Optional[str] = typer.Option(None, "--expect", help="Healthy statuses: 200, 200-399, 2xx, or a comma list (default 200-399)"),
    timeout: float = typer.Option(2.0, "--timeout", help="Seconds the whole check may take (resolution, connect, answer)"),
    count: int = typer.Option(1, "--count", "-c", help="Run the check N times: success rate, p50 and p95"),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between the starts of two checks (with --count)"),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object"),
    fix: bool = typer.Option(False, "--fix", help="Print the fix, ask, run it, and check again"),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --fix: run the fix without asking"),
    verify_fix: bool = typer.Option(False, "--verify-fix", help="Prove the fix live on a throwaway replica (fresh namespaces "
                                    "rebuilt from the model; the real host is never changed): needs root"),
):
    """Check TARGET from SRC exactly as a load balancer would, and when it fails, say why.

    The name is resolved the way SRC resolves it (its hosts file and resolv.conf, Docker's
    127.0.0.11, a network's DNS). A failed handshake is followed hop by hop by the trace pipeline
    (the rule, the route, the socket, with a checked fix); a late or missing answer is measured
    (SLOW_RESPONSE) or traced back for an MTU step (MTU_BLACKHOLE). The verdict is also given as
    HAProxy's check status, the AWS target health reason and the Kubernetes probe message.

    Exit codes: 0 healthy, 1 unhealthy (diagnosed), 2 bad input, 3 could not diagnose."""
    from ..health import spec as specs
    from ..health.pipeline import run_health

    if yes and not fix:
        from runtime.errors import InvalidArgument

        raise InvalidArgument("--yes needs --fix", "it answers --fix's question", "add --fix")
    spec = specs.parse(target, tcp=tcp, http=http, host=host, expect=expect, timeout=timeout, count=count, interval=interval)
    model = None
    if verify_fix:
        from netdiag.observe.snapshot import live_model

        model = live_model()
    with _series_progress(spec.count) as progress:
        result = run_health(spec, src, model=model, progress=progress)
    if verify_fix and not result["healthy"]:
        from ..health.pipeline import verify_fix

        result["fix_verified"] = verify_fix(model, result, src, timeout)
    if result.get("fix_command"):
        from ..reason.result import FixClaim
        from ..verify import proof

        result["fix_proof"] = proof(FixClaim.from_json(result))
    if fix and not result["healthy"] and result.get("fix_command"):
        applied = _apply(result["fix_command"], yes, json_out)
        if applied is not None:
            result["applied_fix"] = applied
            if applied["returncode"] == 0:
                result["recheck"] = run_health(spec, src)
    _show(result, json_out, render_health)
    final = result.get("recheck") or result
    raise typer.Exit(_exit_for(final))


def _apply(command: str, yes: bool, quiet: bool) -> dict | None:
    """Print the command, ask unless --yes (no terminal and no --yes: do not run it), run it."""
    from .. import fix_runner

    out = sys.stderr if quiet else sys.stdout
    print(f"fix: {command}", file=out)
    if not yes:
        if not sys.stdin.isatty():
            print("fix: not run (no terminal to ask; add --yes to run it)", file=out)
            return None
        if not typer.confirm("Run it?", default=False, err=quiet):
            return None
    res = fix_runner.run(command)
    print(f"fix: exit {res['returncode']}" + (f": {res['output']}" if res["output"] else ""), file=out)
    return res


def _show(result: dict, json_out: bool, render) -> None:
    if json_out:
        from ..reason.result import as_json

        print(json.dumps(result, indent=2, default=as_json))  # the embedded Diagnosis through its serialiser
        return
    render(result)
    if result.get("recheck"):
        print()
        render(result["recheck"], title="after the fix")


def _secs(t) -> str:
    if t is None:
        return "-"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"


def render_health(r: dict, title: str = "") -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console()
    t = r["timings"]
    timings = " · ".join(f"{k.replace('_', ' ')} {_secs(t.get(k))}" for k in ("dns", "connect", "first_byte", "total"))
    if title:
        con.print(f"[dim]{title}[/]")
    if r["healthy"]:
        con.print(f"[bold green]HEALTHY[/]  {escape(r['target'])} from {escape(r['from'])}"
                  + (f" ({r['address']})" if r.get("address") and r["address"] not in r["target"] else ""))
        con.print(f"[bold]why[/]  {escape(r['summary'])}")
        con.print(f"[bold]timings[/] {timings}")
        return
    colour = "red" if r["cause"] else "yellow"
    con.print(f"[bold {colour}]UNHEALTHY[/]" + (f" [bold]{r['cause']}[/]" if r["cause"] else " [bold]cause unknown[/]")
              + f"  {escape(r['target'])} from {escape(r['from'])}" + (f" ({r['address']})" if r.get("address") and r["address"] not in r["target"] else ""))
    v = r["verdicts"]
    con.print(f"[bold]as[/]   HAProxy [bold]{v['haproxy']['status']}[/] ({v['haproxy']['text']}) · AWS "
              f"[bold]{v['aws']['reason']}[/] ({escape(v['aws']['description'] or '')}) · Kubernetes: {escape(v['kubernetes'])}")
    con.print(f"[bold]why[/]  {escape(r['summary'])}")
    if r.get("hop"):
        h = r["hop"]
        con.print(f"[bold]hop[/]  #{h['n']} {escape(h['label'])} {h['interface']} {h['kind']} {h['direction']}"
                  + (f": {escape(h['detail'])}" if h.get("detail") else ""))
    if r["evidence"]:
        con.print("[bold]evidence[/]")
        for e in r["evidence"]:
            con.print(f"  [dim]{e['kind']}:[/] {escape(str(e['detail']))}")
    if r.get("fix"):
        con.print(f"[bold]fix[/]  {escape(r['fix'])}")
    check = r.get("fix_check")
    if check:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]"}.get(check.get("delivers"), "[dim]?[/]")
        con.print(f"[bold]checked[/] {mark} {escape(check['detail'])}")
    from .trace import render_proof

    render_proof(con, r)
    con.print(f"[bold]timings[/] {timings}" + (f" · diagnosed in {_secs(r['diagnosed_in'])}" if r.get("diagnosed_in") is not None else ""))
    if r.get("series"):
        s = r["series"]
        con.print(f"[bold]checks[/] {s['ok']}/{s['count']} passed ({s['success_rate']:.0%}), p50 {_secs(s['p50'])}, "
                  f"p95 {_secs(s['p95'])}" + (" (a failed check counted at the time it took)" if s["ok"] < s["count"] else ""))


class _series_progress:
    """`check 3/20 (1 failed)` on stderr while a --count series runs (on a terminal only)."""

    def __init__(self, count: int):
        self.count, self.status = count, None

    def __enter__(self):
        if self.count > 1 and sys.stderr.isatty():
            from rich.console import Console

            self.status = Console(stderr=True).status(f"check 0/{self.count}")
            self.status.__enter__()
        return self.update if self.status else None

    def update(self, done: int, count: int, failed: int) -> None:
        self.status.update(f"check {done}/{count}" + (f" ({failed} failed)" if failed else "")
                           + (": diagnosing" if done == count and failed else ""))

    def __exit__(self, *exc):
        if self.status:
            self.status.__exit__(*exc)


@app.command()
def explain(
    target: Optional[str] = typer.Argument(None, help="A container (why is it unhealthy?); with --lb: the load balancer's container or namespace"),
    lb: Optional[str] = typer.Option(None, "--lb", help="haproxy[:STATS_SOCKET]: explain every backend server HAProxy marks DOWN"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds each re-run check may take (default: the check's own timeout, at most 10)"),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object"),
    fix: bool = typer.Option(False, "--fix", help="Print each fix, ask, run it, and explain again"),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --fix: run the fixes without asking"),
):
    """Why a container is unhealthy, or why a load balancer's servers are DOWN.

    `explain CONTAINER`: its health check (from the image or --health-cmd), status, failing streak
    and last outputs; a network check (wget/curl/nc to a URL or port) is re-run as `netdiag health`
    from the container to find the network cause. `explain --lb haproxy[:SOCKET]` reads HAProxy's
    stats socket and re-runs the check HAProxy is configured to do, from its namespace, for every
    DOWN server (and the traffic port of servers whose check uses another port).

    Exit codes: 0 healthy, 1 unhealthy (explained), 2 bad input, 3 could not diagnose."""
    from runtime.errors import InvalidArgument

    from ..health import explain as ex

    if yes and not fix:
        raise InvalidArgument("--yes needs --fix", "it answers --fix's question", "add --fix")
    if timeout is not None and not 0 < timeout <= 300:
        raise InvalidArgument(f"Invalid --timeout {timeout:g}", "seconds above 0, at most 300", "")
    if lb is None and not target:
        raise InvalidArgument("explain needs a container or --lb", "", "e.g. netdiag explain web, or netdiag explain --lb haproxy")
    run = (lambda: ex.explain_lb(lb, target, timeout=timeout)) if lb is not None else (lambda: ex.explain_container(target, timeout=timeout))
    result = run()
    if fix:
        commands = [c for c in ex.fix_commands(result)]
        done = [a for a in (_apply(c, yes, json_out) for c in commands) if a is not None]
        if done:
            result["applied_fixes"] = done
            if all(a["returncode"] == 0 for a in done):
                result["recheck"] = ex.after_fix(result, run)
    _show(result, json_out, render_explain)
    final = result.get("recheck") or result
    raise typer.Exit(final["exit"])


def render_explain(r: dict, title: str = "") -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console()
    if title:
        con.print(f"[dim]{title}[/]")
    if r["kind"] == "container":
        hc = r["healthcheck"]
        colour = {"healthy": "green", "unhealthy": "red"}.get(r["status"], "yellow")
        con.print(f"[bold {colour}]{(r['status'] or 'no status').upper()}[/]  {escape(r['container'])} ({r['runtime']} container)"
                  + (f", failing streak {r['failing_streak']}" if r.get("failing_streak") else ""))
        con.print(f"[bold]check[/] {escape(hc['command'])}  [dim](every {hc['interval']:g}s, timeout {hc['timeout']:g}s, "
                  f"{hc['retries']} retries)[/]")
        for entry in r["log"]:
            con.print(f"  [dim]{entry['end'] or entry['start']} exit {entry['exit_code']}:[/] {escape(entry['output'].strip()[:300])}")
        if r.get("network_check"):
            con.print(f"[bold]network check[/] {escape(r['network_check']['target'])} from {escape(r['container'])}")
        if r.get("health"):
            render_health(r["health"])
        elif r.get("note"):
            con.print(f"[bold]note[/] {escape(r['note'])}")
        return
    if r["kind"] == "pod":
        con.print(f"[bold]{escape(r['container'])}[/] (CNI pod): a kubelet's TCP probe of its ports from the host")
        for c in r["checks"]:
            render_health(c["health"])
        con.print(f"[bold]summary[/] {escape(r['summary'])}")
        return
    con.print(f"[bold]HAProxy[/] pid {r['pid']} in {escape(r['namespace'])}, stats {escape(r['socket'])}"
              + (f", config {escape(r['config'])}" if r.get("config") else ""))
    for s in r["servers"]:
        colour = "green" if s["status"].startswith("UP") else "red" if s["status"].startswith("DOWN") else "yellow"
        con.print(f"[bold {colour}]{s['status']}[/]  {escape(s['backend'])}/{escape(s['server'])} {s['addr']}  "
                  f"check {s['check_status'] or '-'}" + (f" in {s['check_duration']} ms" if s.get("check_duration") not in (None, "") else "")
                  + (f" [dim]({escape(s['check_desc'])})[/]" if s.get("check_desc") else ""))
        for label, h in (("check", s.get("health")), ("traffic", s.get("traffic"))):
            if h is None:
                continue
            con.print(f"  [bold]{label}[/] {escape(h['target'])}: " + ("[green]healthy[/]" if h["healthy"] else
                      f"[red]{h['cause'] or 'cause unknown'}[/] (as HAProxy: {h['verdicts']['haproxy']['status']})"))
            if not h["healthy"]:
                con.print(f"    [bold]why[/] {escape(h['summary'])}")
                if h.get("hop"):
                    con.print(f"    [bold]hop[/] #{h['hop']['n']} {escape(h['hop']['label'])} {h['hop']['interface']} {h['hop']['kind']}")
                if h.get("fix"):
                    con.print(f"    [bold]fix[/] {escape(h['fix'])}")
    con.print(f"[bold]summary[/] {escape(r['summary'])}")
