#!/usr/bin/env python3
"""How long `netdiag health` takes to say why a check failed, after the check's own timeout.

Goal: a failed check is diagnosed within 3 s after its timeout. The bench builds a netdiag Lab
(its own network namespace playing the host) with a user network, `web` (busybox httpd) and `cli`,
then plants a firewall rule in web's namespace that drops SYNs to port 80, and runs, as a cold CLI
each time, round-robin:

| row | command | what it tells |
| --- | --- | --- |
| `drop` | `netdiag health http://web/ --from cli --timeout T --json` | the goal: a SYN dropped by a rule (FIREWALL_DROP, named) |
| `refused` | `netdiag health web:81 --from cli --timeout T --json` | a refused handshake: the check fails at once, the diagnosis is all there is |
| `healthy` | `netdiag health http://web:8080/ --from cli --json` | a passing check (a second httpd on 8080, admitted): the CLI and the model alone |

For each run: the wall time of the whole command, `after timeout` = wall - T for `drop` (what a
user waits beyond the timeout they chose: the CLI's start, the model, the trace pipeline with its
live probe and kernel trace, the verdict), and the JSON's `diagnosed_in` (inside the process, from
the failed check to the verdict). Prints median, p90 and max, and each ratio to the 3 s budget.

    sudo .venv/bin/python bench/bench_health.py [--runs N] [--timeout T] [--json FILE]

Nothing changes in the root network namespace (compared before and after); the lab is destroyed
at the end, also on failure or Ctrl-C. Exit codes: 0 ok (goal met or not: see the verdict),
1 error, 2 not root, 3 something left behind or changed, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import run_bench as rb  # noqa: E402  (log, percentile, Interrupted, root netns snapshot)
from nd_lab import NdLab  # noqa: E402
from netdiag.worlds import Lab# noqa: E402

BUDGET = 3.0
MAIN_PID = os.getpid()


def on_signal(signum, _frame):
    if os.getpid() != MAIN_PID:  # pyroute2's helpers inherit this handler: they just exit
        os._exit(128 + signum)
    raise rb.Interrupted(f"interrupted by {signal.Signals(signum).name}")


def root_state() -> str:
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return rb.root_netns_snapshot() + "\n" + "\n".join(ln for ln in nft.splitlines() if "counter" not in ln)


def setup(nd: NdLab) -> None:
    nd.nd("network", "create", "--subnet", "10.91.0.0/24", "bn")
    nd.nd("run", "-d", "--name", "web", "--network", "bn", "busybox", "sh", "-c",
          "mkdir -p /www && echo web > /www/index.html && httpd -p 8080 -h /www && exec httpd -f -p 80 -h /www")
    nd.nd("run", "-d", "--name", "cli", "--network", "bn", "busybox", "sleep", "3600")
    pid = str(nd.inspect("web")["State"]["Pid"])
    for argv in (["nft", "add", "table", "inet", "guard"],
                 ["nft", "add", "chain", "inet", "guard", "input", "{ type filter hook input priority 0 ; }"],
                 ["nft", "add", "rule", "inet", "guard", "input", "tcp", "dport", "80", "counter", "drop"]):
        p = subprocess.run(nd.enter + ["nsenter", "-t", pid, "-n", *argv], capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip()}")


def run_row(nd: NdLab, args: list[str], want: str | None) -> dict:
    t0 = time.perf_counter()
    p = nd.nd("health", *args, "--json", check=False, timeout=120)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise RuntimeError(f"netdiag health {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-400:]}")
    r = json.loads(p.stdout)
    if r["cause"] != want:
        raise RuntimeError(f"netdiag health {' '.join(args)}: cause {r['cause']}, expected {want}: {r['summary']}")
    return {"wall": wall, "diagnosed_in": r.get("diagnosed_in")}


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median": statistics.median(xs), "p90": rb.percentile(xs, 90), "max": xs[-1], "min": xs[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="timed rounds (10)")
    ap.add_argument("--timeout", type=float, default=2.0, help="the check's timeout T in seconds (2)")
    ap.add_argument("--json", metavar="FILE", help="write the samples and stats as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1 or not 0 < args.timeout <= 30:
        ap.error("--runs >= 1, 0 < --timeout <= 30")
    if os.geteuid() != 0:
        print("bench_health: needs root (network namespaces, cgroups)", file=sys.stderr)
        return 2
    netdiag_bin = str(Path(sys.executable).with_name("netdiag"))
    if not os.access(netdiag_bin, os.X_OK):
        netdiag_bin = shutil.which("netdiag") or ""
    if not netdiag_bin:
        print("bench_health: no netdiag executable beside this Python or on PATH", file=sys.stderr)
        return 1
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    lab = Lab(name=f"ndbh-{os.getpid()}")
    before = root_state()
    rc, left = 0, []
    t = f"{args.timeout:g}"
    rows = {"drop": (["http://web/", "--from", "cli", "--timeout", t], "FIREWALL_DROP"),
            "refused": (["web:81", "--from", "cli", "--timeout", t], "NO_LISTENER"),
            "healthy": (["http://web:8080/", "--from", "cli"], None)}
    samples: dict[str, list[dict]] = {k: [] for k in rows}
    try:
        rb.log(f"lab: creating {lab.name}")
        lab.create()
        nd = NdLab(lab, netdiag_bin)
        setup(nd)
        for name, (a, want) in rows.items():  # one untimed warm-up each
            run_row(nd, a, want)
        for i in range(args.runs):
            for name, (a, want) in rows.items():
                samples[name].append(run_row(nd, a, want))
            rb.log(f"round {i + 1}/{args.runs}: drop {samples['drop'][-1]['wall']:.2f}s")
        report = {"runs": args.runs, "timeout": args.timeout, "budget": BUDGET, "load": os.getloadavg(), "rows": {}}
        print(f"\n{'row':<9} {'wall median':>12} {'p90':>7} {'max':>7} {'diagnosed_in median':>20} {'p90':>7} {'max':>7}")
        for name, ss in samples.items():
            wall = stats([s["wall"] for s in ss])
            diag = stats([s["diagnosed_in"] for s in ss]) if ss[0]["diagnosed_in"] is not None else None
            report["rows"][name] = {"wall": wall, "diagnosed_in": diag, "samples": ss}
            d = f"{diag['median']:>20.3f} {diag['p90']:>7.3f} {diag['max']:>7.3f}" if diag else f"{'-':>20} {'-':>7} {'-':>7}"
            print(f"{name:<9} {wall['median']:>12.3f} {wall['p90']:>7.3f} {wall['max']:>7.3f} {d}")
        after = stats([s["wall"] - args.timeout for s in samples["drop"]])
        inproc = report["rows"]["drop"]["diagnosed_in"]
        report["after_timeout"] = after
        report["ratio"] = {"after_timeout_median": after["median"] / BUDGET, "after_timeout_p90": after["p90"] / BUDGET,
                           "after_timeout_max": after["max"] / BUDGET, "diagnosed_in_median": inproc["median"] / BUDGET}
        report["met"] = after["max"] <= BUDGET
        print(f"\nfirewall-dropped check, T = {args.timeout:g} s: after the timeout, median {after['median']:.2f} s "
              f"(p90 {after['p90']:.2f}, max {after['max']:.2f}) = {report['ratio']['after_timeout_median']:.2f}x "
              f"of the {BUDGET:g} s budget (p90 {report['ratio']['after_timeout_p90']:.2f}x, max "
              f"{report['ratio']['after_timeout_max']:.2f}x); in-process {inproc['median']:.2f} s = "
              f"{report['ratio']['diagnosed_in_median']:.2f}x")
        print(f"verdict: {'MET' if report['met'] else 'NOT MET'} (every run within {BUDGET:g} s after the timeout)")
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
        lab.destroy()
        left = lab.leaks()
        if root_state() != before:
            left.append("the root network namespace changed during the run")
        if left:
            print(f"LEFT BEHIND: {left}", file=sys.stderr)
            rc = 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
