#!/usr/bin/env python3
"""How long `netdiag check` takes for a CI-sized check file, 8 checks at a time and one at a time.

Goals: 200 checks against a lab of 50 containers with `--parallel 8` in under 30 s, and at least
4x faster than the same checks with `--parallel 1`, measured in the same run.

The bench builds a netdiag Lab (its own network namespace playing the host) with 50 containers:
`lb` and `cli`, web1..web20 (busybox httpd on 80, web1..web10 published on 8101..8110) and
app1..app20 (httpd on 8080) on network `bfront`, db1..db8 (a listener on 5432) on the internal
network `bback`, which app1..app8 join too. The check file (written by the bench, kept with
--keep-file) has 200 checks of every kind, as a CI job would pin such a stack:

| checks | kind | what |
| ---: | --- | --- |
| 56 | reach, reachable | lb -> web:80 (20), web -> app:8080 (20), app -> db:5432 (8), lb -> app:8080 (8) |
| 16 | reach, `blocked: INTERNAL_NETWORK` | cli -> db:5432: each waits the probe's 1 s for the dropped SYN |
| 16 | reach, `blocked: NO_LISTENER` | web -> app:9999 (refused at once) |
| 30 | http | lb GET http://webN/health (status 200, body "ok"), webN GET http://appN:8080/ |
| 20 | dns | webN resolves appN (the network's DNS) |
| 10 | mtu | lb -> webN carries 1400-byte packets |
| 10 | latency | lb -> webN:80, 5 handshakes, p95 below 50 ms |
| 42 | static | listening (20), published (10), internal, route, no_listener ... |

Each run is the installed CLI, cold: `netdiag check FILE --format json --parallel N`, timed with
time.perf_counter() around subprocess.run. One untimed warm-up (N=8), then --rounds rounds of
(N=8, N=1), alternated so drift hits both. For context, one more pair of runs of the same file with
the 16 dropped-SYN checks replaced by reachable ones: how much of the speedup is overlapped waiting. Every run must pass all 200 checks (exit 0) with the
same results in both modes, or the bench fails: a fast wrong answer is no figure.

    sudo .venv/bin/python bench/bench_check.py [--rounds R] [--json FILE] [--keep-file FILE]

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
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import run_bench as rb  # noqa: E402  (log, percentile, Interrupted, root netns snapshot)
from bench_health import on_signal, root_state  # noqa: E402
from nd_lab import NdLab  # noqa: E402
from netdiag.worlds import Lab# noqa: E402

GOAL_SECONDS, GOAL_SPEEDUP = 30.0, 4.0
WEB, APP, DB = 20, 20, 8


def setup(nd: NdLab) -> None:
    nd.nd("network", "create", "--subnet", "10.93.0.0/24", "bfront")
    nd.nd("network", "create", "--subnet", "10.94.0.0/24", "--internal", "bback")
    for name in ("lb", "cli"):
        nd.nd("run", "-d", "--name", name, "--network", "bfront", "busybox", "sleep", "3600")
    for i in range(1, WEB + 1):
        pub = ["-p", f"{8100 + i}:80"] if i <= 10 else []
        nd.nd("run", "-d", "--name", f"web{i}", "--network", "bfront", *pub, "busybox", "sh", "-c",
              "mkdir -p /www && echo ok > /www/health && echo web > /www/index.html && exec httpd -f -p 80 -h /www")
    for i in range(1, APP + 1):
        nd.nd("run", "-d", "--name", f"app{i}", "--network", "bfront", "busybox", "sh", "-c",
              "mkdir -p /www && echo app > /www/index.html && exec httpd -f -p 8080 -h /www")
    for i in range(1, DB + 1):
        nd.nd("run", "-d", "--name", f"db{i}", "--network", "bback", "busybox", "sh", "-c",
              "mkdir -p /www && exec httpd -f -p 5432 -h /www")
        nd.nd("network", "connect", "bback", f"app{i}")
    rb.log(f"lab: {len(nd.ps_ids())} containers")


def checks(waits: bool = True) -> list[dict]:
    """The 200 checks; without `waits`, the 16 dropped-SYN checks become 16 more reachable ones
    (a context row: how much of the speedup the overlapped waits make)."""
    out: list[dict] = []
    w = range(1, WEB + 1)
    out += [{"reach": {"from": "lb", "to": f"web{i}", "port": 80}} for i in w]
    out += [{"reach": {"from": f"web{i}", "to": f"app{i}", "port": 8080}} for i in w]
    out += [{"reach": {"from": f"app{i}", "to": f"db{i}", "port": 5432}} for i in range(1, DB + 1)]
    out += [{"reach": {"from": "lb", "to": f"app{i}", "port": 8080}} for i in range(1, 9)]
    if waits:
        out += [{"reach": {"from": "cli", "to": f"db{i % DB + 1}", "port": 5432, "expect": {"blocked": "INTERNAL_NETWORK"}}}
                for i in range(16)]
    else:
        out += [{"reach": {"from": f"app{i % DB + 1}", "to": f"db{i % DB + 1}", "port": 5432}} for i in range(16)]
    out += [{"reach": {"from": f"web{i}", "to": f"app{i}", "port": 9999, "expect": {"blocked": "NO_LISTENER"}}} for i in range(1, 17)]
    out += [{"http": {"from": "lb", "url": f"http://web{i}/health", "status": 200, "body_contains": "ok"}} for i in w]
    out += [{"http": {"from": f"web{i}", "url": f"http://app{i}:8080/", "status": 200}} for i in range(1, 11)]
    out += [{"dns": {"from": f"web{i}", "name": f"app{i}"}} for i in w]
    out += [{"mtu": {"from": "lb", "to": f"web{i}", "size": 1400}} for i in range(1, 11)]
    out += [{"latency": {"from": "lb", "to": f"web{i}", "port": 80, "below": "50ms"}} for i in range(1, 11)]
    out += [{"listening": {"target": f"app{i}", "port": 8080, "address": "0.0.0.0"}} for i in range(1, APP + 1)]
    out += [{"published": {"target": f"web{i}", "port": 80, "host_port": 8100 + i}} for i in range(1, 11)]
    out += [{"internal": {"network": "bback"}}, {"internal": {"network": "bfront", "expect": False}},
            {"route": {"in": "cli", "to": "default", "via": "10.93.0.1"}}, {"route": {"in": "db1", "to": "default", "expect": False}}]
    out += [{"no_listener": {"port": p}} for p in (3306, 6379, 27017, 9200, 11211)]
    out += [{"published": {"target": f"db{i}", "port": 5432, "expect": False}} for i in range(1, 4)]
    assert len(out) == 200, len(out)
    return out


def run_check(nd: NdLab, path: str, parallel: int) -> dict:
    t0 = time.perf_counter()
    p = nd.nd("check", path, "--format", "json", "--parallel", str(parallel), check=False, timeout=600)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise RuntimeError(f"netdiag check --parallel {parallel} exited {p.returncode}: {p.stderr.strip()[-600:]}")
    doc = json.loads(p.stdout)
    bad = [(c["name"], c["summary"]) for c in doc["checks"] if c["status"] != "passed"]
    if bad:
        raise RuntimeError(f"--parallel {parallel}: {len(bad)} check(s) did not pass, e.g. {bad[:3]}")
    kinds: dict[str, float] = {}
    for c in doc["checks"]:
        kinds[c["kind"]] = kinds.get(c["kind"], 0.0) + c["duration"]
    return {"wall": wall, "inside": doc["summary"]["duration"], "kind_seconds": kinds,
            # what must not depend on --parallel (a latency's observed figure varies from run to run)
            "results": [(c["name"], c["status"], c["cause"], None if c["kind"] == "latency" else c["observed"]) for c in doc["checks"]]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds of (--parallel 8, --parallel 1) (2)")
    ap.add_argument("--json", metavar="FILE", help="write the samples and stats as JSON")
    ap.add_argument("--keep-file", metavar="FILE", help="also write the 200-check file here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds >= 1")
    if os.geteuid() != 0:
        print("bench_check: needs root (network namespaces, cgroups)", file=sys.stderr)
        return 2
    netdiag_bin = str(Path(sys.executable).with_name("netdiag"))
    if not os.access(netdiag_bin, os.X_OK):
        netdiag_bin = shutil.which("netdiag") or ""
    if not netdiag_bin:
        print("bench_check: no netdiag executable beside this Python or on PATH", file=sys.stderr)
        return 1
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    lab = Lab(name=f"ndbc-{os.getpid()}")
    work = Path(tempfile.mkdtemp(prefix="ndbc-"))
    before = root_state()
    rc, left = 0, []
    samples: dict[int, list[dict]] = {8: [], 1: []}
    context: dict[int, dict] = {}
    try:
        import yaml

        rb.log(f"lab: creating {lab.name}")
        lab.create()
        nd = NdLab(lab, netdiag_bin)
        t0 = time.perf_counter()
        setup(nd)
        rb.log(f"lab: 50 containers in {time.perf_counter() - t0:.0f}s")
        path = work / "checks.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "checks": checks()}, sort_keys=False, default_flow_style=None, width=160))
        if args.keep_file:
            shutil.copy(path, args.keep_file)
        run_check(nd, str(path), 8)  # warm-up, untimed
        for i in range(args.rounds):
            for n in (8, 1):
                samples[n].append(run_check(nd, str(path), n))
            rb.log(f"round {i + 1}/{args.rounds}: --parallel 8 {samples[8][-1]['wall']:.1f}s, --parallel 1 {samples[1][-1]['wall']:.1f}s")
        fast = work / "no-waits.yaml"
        fast.write_text(yaml.safe_dump({"version": 1, "checks": checks(waits=False)}, sort_keys=False, default_flow_style=None, width=160))
        for n in (8, 1):
            context[n] = run_check(nd, str(fast), n)
        rb.log(f"no dropped SYNs: --parallel 8 {context[8]['wall']:.1f}s, --parallel 1 {context[1]['wall']:.1f}s")
        if any(s["results"] != samples[8][0]["results"] for n in samples for s in samples[n]):
            raise RuntimeError("the results differ between runs")
        med = {n: statistics.median(s["wall"] for s in ss) for n, ss in samples.items()}
        speedups = [one["wall"] / eight["wall"] for eight, one in zip(samples[8], samples[1])]
        speedup = statistics.median(speedups)
        report = {"rounds": args.rounds, "load": os.getloadavg(), "checks": 200, "containers": 50,
                  "median_wall": med, "speedups_per_round": speedups, "speedup": speedup,
                  "samples": {n: [{k: v for k, v in s.items() if k != "results"} for s in ss] for n, ss in samples.items()}}
        print(f"\n{'run':<14} {'wall median':>12} {'min':>7} {'max':>7}   seconds of check time by kind (last run)")
        for n, ss in samples.items():
            walls = [s["wall"] for s in ss]
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in sorted(ss[-1]["kind_seconds"].items(), key=lambda kv: -kv[1]))
            print(f"--parallel {n:<3} {med[n]:>12.2f} {min(walls):>7.2f} {max(walls):>7.2f}   {kinds}")
        ctx = context[1]["wall"] / context[8]["wall"]
        report["no_waits"] = {"wall": {n: c["wall"] for n, c in context.items()}, "speedup": ctx}
        print(f"{'(no waits) 8':<14} {context[8]['wall']:>12.2f}\n{'(no waits) 1':<14} {context[1]['wall']:>12.2f}   "
              f"speedup {ctx:.2f}x: the same file with the 16 dropped-SYN checks made reachable ones (context, not the goal)")
        met_time, met_speed = med[8] < GOAL_SECONDS, speedup >= GOAL_SPEEDUP
        report["met"] = {"under_30s": met_time, "speedup_4x": met_speed}
        print(f"\n200 checks, 50 containers: --parallel 8 median {med[8]:.1f} s (goal < {GOAL_SECONDS:g} s: "
              f"{'MET' if met_time else 'NOT MET'}); --parallel 1 median {med[1]:.1f} s; speedup {speedup:.2f}x per round "
              f"({', '.join(f'{x:.2f}' for x in speedups)}) (goal >= {GOAL_SPEEDUP:g}x: {'MET' if met_speed else 'NOT MET'})")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
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
        shutil.rmtree(work, ignore_errors=True)
        left = lab.leaks()
        if root_state() != before:
            left.append("the root network namespace changed during the run")
        if left:
            print(f"LEFT BEHIND: {left}", file=sys.stderr)
            rc = 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
