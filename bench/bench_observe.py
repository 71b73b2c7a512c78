#!/usr/bin/env python3
"""Seeing and tracing on a big host: `netdiag inspect --net`, `netdiag snapshot` and `netdiag trace`
with hundreds of containers and thousands of nftables rules, against references measured in the
same run.

A. inspect/snapshot, with N containers (500) on one user network:
   - `netdiag inspect --net --json cN`: cold CLI, and its work in-process (`inspect_view.view(
     live_model(), "cN")` timed inside a Python process, imports of netdiag.snapshot_model and the view
     excluded, everything they import lazily included). Goal: under 0.3 s of work.
   - `netdiag snapshot -o FILE` against the reference, one shell pass
     `for pid in PIDS; do nsenter --net=/proc/$pid/ns/net ip -o addr; done` (what
     `ip -all netns exec ip -o addr` does, for namespaces that have no name). Goal: no subprocess
     per namespace, and (this bench's reading of "compared with") snapshot <= 1x the reference.
B. trace, with 5,000 extra nftables rules on the lab host (table inet benchrules, a forward chain):
   - static: `netdiag trace cA cB --port 80 --snapshot FILE --json` (cold CLI, and `trace()` on a
     loaded Model in-process) against `nsenter --net=/proc/$pidA/ns/net ip route get IP_B;
     nft list ruleset > /dev/null`. Goal: under 0.5 s.
   - live, after removing all containers but 100: `netdiag trace cA cB --port 80 --json` (cold CLI,
     probe and capture included) while cB runs `httpd -f -p 80`. Goal: under 2 s, verdict delivered.

Everything runs in a netdiag Lab (netdiag/worlds/host.py): its own network namespace playing the host,
with its own state dir and cgroup parent. The nftables rules go into the lab's namespace. Nothing
in the root network namespace changes: its links, addresses, routes, rules and nft ruleset are
compared before and after. The lab is destroyed at the end, also on failure or Ctrl-C.

    .venv/bin/python bench/bench_observe.py [--containers N] [--runs R] [--json FILE]

Needs root. Timing and process helpers come from bench/run_bench.py. Exit codes: 0 ok, 1 error,
2 not root, 3 something left behind (or the root namespace changed), 130 interrupted.
"""
from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import run_bench as rb  # noqa: E402  (timing, signals, process tracking, root netns snapshot)
from nd_lab import NdLab  # noqa: E402
from netdiag.worlds import HOST_IP, Lab# noqa: E402

GOAL_INSPECT_MS = 300.0   # inspect --net on one container: under 0.3 s of work at 500 containers
GOAL_SNAPSHOT_RATIO = 1.0  # snapshot <= 1x one nsenter+ip -o addr pass over every container
GOAL_STATIC_MS = 500.0    # static trace on a snapshot with 500 containers and 5,000 rules
GOAL_LIVE_MS = 2000.0     # live trace with 100 containers
LIVE_SIZE = 100

SUBNET = "10.210.0.0/22"  # room for 1,021 containers; only inside the lab
NFT_RULES = 5000
CTR_MEM_GUESS_KB = 32 * 1024     # per container (its monitor, a forked CLI, is ~28 MiB PSS), to keep a reserve
MEM_RESERVE_KB = 2 * 1024 * 1024  # stop growing when less than this would be left


MAIN_PID = os.getpid()


def log(msg: str) -> None:
    rb.log(msg)


def on_signal(signum, _frame):
    """Turn SIGINT/SIGTERM/SIGHUP into an exception so every `finally` runs, in this process only.
    pyroute2's NetNS (used by Lab.create) forks helpers that inherit this handler and get SIGTERM
    when they are done: they must just exit, not run the bench's cleanup from inside the lab."""
    if os.getpid() != MAIN_PID:
        os._exit(128 + signum)
    raise rb.Interrupted(f"interrupted by {signal.Signals(signum).name}")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- measuring

class Row:
    """One command run cold (a new process each time), wall time around subprocess.run. Exit codes
    in `ok` are accepted (trace exits 1 when the packet is blocked); `check(stdout)` may look at
    the output (e.g. collect the trace verdict)."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, what: str = "",
                 ok: tuple[int, ...] = (0,), check=None):
        self.name, self.argv, self.env, self.what, self.ok, self.check = name, argv, env, what, ok, check
        self.samples: list[float] = []
        self.first_ms: float | None = None
        self.outputs: list = []

    def _one(self) -> float:
        t0 = time.perf_counter()
        p = subprocess.run(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=900)
        dt = (time.perf_counter() - t0) * 1000
        if p.returncode not in self.ok:
            tail = (p.stderr or p.stdout).decode(errors="replace").strip()[-800:]
            raise RuntimeError(f"{self.name}: {' '.join(self.argv[-8:])} exited {p.returncode}: {tail}")
        if self.check is not None:
            self.outputs.append(self.check(p.stdout.decode(errors="replace"), p.returncode))
        return dt

    def warm(self, n: int) -> None:
        for i in range(n):
            dt = self._one()
            if i == 0:
                self.first_ms = dt

    def timed(self) -> None:
        self.samples.append(self._one())

    def stats(self) -> dict:
        return {"command": self.argv, "what": self.what, "runs": len(self.samples),
                "median_ms": round(statistics.median(self.samples), 2),
                "p90_ms": round(rb.percentile(self.samples, 90), 2),
                "min_ms": round(min(self.samples), 2), "max_ms": round(max(self.samples), 2),
                "first_run_ms": round(self.first_ms, 2) if self.first_ms is not None else None,
                "samples_ms": [round(s, 2) for s in self.samples]}


def round_robin(rows: list[Row], runs: int, warmup: int) -> dict[str, dict]:
    """Warm-ups per row, then `runs` rounds running every row once (drift hits all rows alike)."""
    for r in rows:
        if warmup:
            log(f"  {r.name}: {warmup} warm-up run(s)")
            r.warm(warmup)
    log(f"  timing {runs} round(s) of {', '.join(r.name for r in rows)}")
    for _ in range(runs):
        for r in rows:
            r.timed()
    return {r.name: r.stats() for r in rows}


def fmt_table(stats: dict[str, dict]) -> str:
    w = max(12, *(len(n) for n in stats))
    lines = [f"{'row':<{w}} {'runs':>5} {'median ms':>10} {'p90 ms':>9} {'min ms':>8} {'first ms':>9}  what"]
    for name, s in stats.items():
        first = f"{s['first_run_ms']:.1f}" if s.get("first_run_ms") is not None else "-"
        lines.append(f"{name:<{w}} {s['runs']:>5} {s['median_ms']:>10.1f} {s['p90_ms']:>9.1f} {s['min_ms']:>8.1f} "
                     f"{first:>9}  {s.get('what', '')}")
    return "\n".join(lines)


def verdict(met: bool | None, text: str) -> str:
    word = "n/a" if met is None else ("MET" if met else "NOT MET")
    print(f"verdict: {word} - {text}")
    return word


def ms_stats(xs: list[float]) -> dict:
    return {"runs": len(xs), "median_ms": round(statistics.median(xs), 2), "p90_ms": round(rb.percentile(xs, 90), 2),
            "min_ms": round(min(xs), 2), "max_ms": round(max(xs), 2), "samples_ms": [round(x, 2) for x in xs]}


# ----------------------------------------------------------------------------- in-process work

# Runs inside the lab as `python -c INPROC MODE ARGS_JSON`. The imports of netdiag.snapshot_model and of the
# command's module are done before the clock starts; what they import lazily (pyroute2, the
# runtime's state, libnftables) is part of the first call, as it is for the CLI. Every
# subprocess.Popen and os.fork during the first call is counted.
INPROC = r'''
import cProfile, json, os, pstats, subprocess, sys, time
mode, args = sys.argv[1], json.loads(sys.argv[2])
spawned = []
_popen_init = subprocess.Popen.__init__
def _popen(self, *a, **k):
    spawned.append(str(a[0] if a else k.get("args"))[:160])
    return _popen_init(self, *a, **k)
subprocess.Popen.__init__ = _popen
_fork = os.fork
def _forked():
    spawned.append("os.fork")
    return _fork()
os.fork = _forked
from netdiag.snapshot_model import Model
from netdiag.observe.snapshot import live_model
out = {}
if mode == "inspect":
    from netdiag.views import inspect_view
    def fn():
        return inspect_view.view(live_model(), args["name"])
elif mode == "snapshot":
    from netdiag.observe.snapshot import build
    def fn():
        snap = build()
        return {"namespaces": len(snap["namespaces"]), "containers": len(snap["containers"]), "errors": len(snap["errors"])}
elif mode == "trace":
    from netdiag.reason import static_trace
    t0 = time.perf_counter()
    model = Model.load(args["snapshot"])
    out["load_ms"] = (time.perf_counter() - t0) * 1000
    def fn():
        r = static_trace.trace(model, args["src"], args["dst"], proto="tcp", port=args["port"])
        return {"verdict": r.verdict, "cause": r.cause, "hops": len(r.hops)}
elif mode == "live":
    from netdiag.diagnose import diagnose
    def fn():
        m = live_model()
        r = diagnose(m, args["src"], args["dst"], proto="tcp", port=args["port"], timeout=2.0)
        return {"verdict": r.verdict, "cause": r.cause, "live": (r.live or {}).get("outcome")}
else:
    raise SystemExit(f"unknown mode {mode}")

# where the first call's time goes, by step (a step may contain another: collect_ns inside the
# lazy lookups, the nsid search after each collect_ns)
steps = {}
def _wrap(owner, attr, label):
    f = getattr(owner, attr, None)
    if f is None:
        return
    def timed_step(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            name = label(a) if callable(label) else label
            st = steps.setdefault(name, [0, 0.0])
            st[0] += 1
            st[1] += (time.perf_counter() - t0) * 1000
    setattr(owner, attr, timed_step)
import netdiag.observe.discover as _discover, netdiag.observe.namespaces as _ns, runtime.records as _records  # noqa: E402
_wrap(_discover, "discover", "discover: every /proc pid, netns names, container records")
_wrap(_records, "containers", "  records.containers: the runtime's container records")
_wrap(_records, "networks", "records.networks: the runtime's network records")
_wrap(_ns, "collect_ns", lambda a: f"collect_ns: read a namespace ({getattr(a[0], 'kind', '?')})")
_wrap(_ns.LazyNamespaces, "owners_of", "namespaces: address index over every namespace")

def short(key):
    f, line, name = key
    for cut in ("site-packages/", str(os.getcwd()) + "/", "/lib/python3"):
        if cut in f:
            f = f.split(cut, 1)[1]
    return f"{f}:{line}({name})"

if args.get("profile"):
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    out["result"] = fn()
    prof.disable()
    out["profiled_ms"] = (time.perf_counter() - t0) * 1000
    st = pstats.Stats(prof).stats
    rows = [(short(k), v[1], v[2] * 1000, v[3] * 1000) for k, v in st.items()]
    out["by_cumulative"] = [list(r) for r in sorted(rows, key=lambda r: -r[3])[:150]]
    out["by_own"] = [list(r) for r in sorted(rows, key=lambda r: -r[2])[:25]]
else:
    steps.clear()
    t0 = time.perf_counter()
    out["result"] = fn()
    out["first_ms"] = (time.perf_counter() - t0) * 1000
    out["spawned"] = list(spawned)
    out["steps"] = {k: [v[0], round(v[1], 2)] for k, v in steps.items()}
    warm = []
    for _ in range(args.get("warm", 0)):
        t0 = time.perf_counter()
        fn()
        warm.append((time.perf_counter() - t0) * 1000)
    out["warm_ms"] = warm
print(json.dumps(out))
'''


class InLab(NdLab):
    """The lab with the installed `netdiag` CLI (NdLab), plus Python run inside it."""

    def python(self, mode: str, **args) -> dict:
        p = subprocess.run(self.enter + [sys.executable, "-c", INPROC, mode, json.dumps(args)], env=self.lab.env,
                           capture_output=True, text=True, timeout=1800, cwd=REPO, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError(f"in-process {mode} exited {p.returncode}: {p.stderr.strip()[-800:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def container_pids(self) -> list[int]:
        pids = []
        for st in sorted((self.lab.state_dir / "containers").glob("*/state.json")):
            try:
                pid = int(json.loads(st.read_text()).get("Pid") or 0)
            except (OSError, ValueError):
                continue
            if pid and os.path.exists(f"/proc/{pid}/ns/net"):
                pids.append(pid)
        return pids


def in_process(ctx: InLab, mode: str, procs: int, warm: int, **args) -> dict:
    """`procs` fresh Python processes, each timing a first (cold) call and `warm` more; then one
    more process running the first call under cProfile."""
    first, warm_ms, spawned, result, extra = [], [], [], None, {}
    for i in range(procs):
        out = ctx.python(mode, warm=warm, **args)
        first.append(out["first_ms"])
        warm_ms += out["warm_ms"]
        spawned.append(len(out["spawned"]))
        for k, (calls, ms) in out.get("steps", {}).items():
            extra.setdefault("steps", {}).setdefault(k, []).append((calls, ms))
        result = out["result"]
        if "load_ms" in out:
            extra.setdefault("load_ms", []).append(out["load_ms"])
        if i == 0:
            extra["spawned_sample"] = out["spawned"][:5]
    prof = ctx.python(mode, profile=True, **args)
    res = {"first_call": ms_stats(first), "warm_call": ms_stats(warm_ms) if warm_ms else None,
           "subprocesses_per_call": spawned, "result": result,
           "profile": {"profiled_ms": round(prof["profiled_ms"], 1), "by_cumulative": prof["by_cumulative"],
                       "by_own": prof["by_own"]}}
    if "load_ms" in extra:
        res["load"] = ms_stats(extra["load_ms"])
    res["spawned_sample"] = extra.get("spawned_sample", [])
    res["steps_first_call"] = {k: {"calls": v[0][0], "median_ms": round(statistics.median(x[1] for x in v), 1)}
                               for k, v in extra.get("steps", {}).items()}
    return res


# netdiag's and the runtime's own frames, pyroute2's API calls and import, and the asyncio loop that
# pyroute2 0.9's synchronous IPRoute runs for every request (not its netlink internals)
PROFILE_SHOWN = re.compile(r"^(netdiag/|runtime/|pyroute2/iproute/linux\.py|pyroute2/__init__\.py:\d+\(<module>\)"
                           r"|.*asyncio/base_events\.py:\d+\(run_until_complete\))")


def print_steps(title: str, res: dict) -> None:
    steps = res.get("steps_first_call") or {}
    if not steps:
        return
    print(f"  steps of the first {title} call (median over the processes; steps may nest):")
    for name, st in sorted(steps.items(), key=lambda kv: -kv[1]["median_ms"]):
        print(f"    {st['median_ms']:>8.1f} ms  {st['calls']:>4} call(s)  {name}")


def print_profile(title: str, prof: dict, top_cum: int = 18, top_own: int = 8) -> None:
    print(f"  cProfile of {title} (one cold call, {prof['profiled_ms']:.0f} ms under the profiler):")
    print("    cumulative ms  calls  function (netdiag, runtime, pyroute2 API and import, asyncio loop runs)")
    shown = [r for r in prof["by_cumulative"] if PROFILE_SHOWN.match(r[0])][:top_cum]
    for name, calls, _own, cum in shown:
        print(f"    {cum:>13.1f} {calls:>6}  {name}")
    print("    own ms  calls  function (any frame)")
    for name, calls, own, _cum in prof["by_own"][:top_own]:
        print(f"    {own:>6.1f} {calls:>6}  {name}")


# ----------------------------------------------------------------------------- root netns guard

_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")


def root_snapshot() -> dict[str, str]:
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
    return {"ip": rb.root_netns_snapshot(),
            "nft": _COUNTERS.sub("counter", nft.stdout) if nft.returncode == 0 else f"(nft failed: {nft.stderr.strip()})"}


def snapshot_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    out = []
    for key in before:
        if before[key] != after.get(key):
            diff = difflib.unified_diff(before[key].splitlines(), after.get(key, "").splitlines(), "before", "after",
                                        lineterm="", n=0)
            out.append(f"root netns {key} CHANGED during the run (this bench only reads it; another process on the "
                       f"machine may have changed it):\n" + "\n".join(list(diff)[:40]))
    return out


# ----------------------------------------------------------------------------- building the host

def start_many(ctx: InLab, names: list[str], workers: int = 4, batch: int = 24) -> tuple[list[str], str]:
    """`netdiag run -d --name NAME --network benchnet busybox sleep 3600` for each name, `workers`
    CLIs at a time. Stops early (and says why) if memory would drop under the reserve."""
    started: list[str] = []
    why = ""
    with ThreadPoolExecutor(workers) as ex:
        for i in range(0, len(names), batch):
            part = names[i:i + batch]
            avail = mem_available_kb()
            if avail - len(part) * CTR_MEM_GUESS_KB < MEM_RESERVE_KB:
                why = f"stopped at {len(started)}: MemAvailable {avail // 1024} MiB would drop under the reserve"
                log(f"  {why}")
                break
            res = list(ex.map(lambda n: ctx.nd("run", "-d", "--name", n, "--network", "benchnet", "busybox", "sleep",
                                                "3600", check=False), part))
            bad = [r for r in res if r.returncode != 0]
            started += [n for n, r in zip(part, res) if r.returncode == 0]
            if bad:
                raise RuntimeError(f"starting containers: {len(bad)} failed: {bad[0].stderr.strip()[-400:]}")
            if len(started) % 96 < batch or i + batch >= len(names):
                log(f"  {len(started) + 2} containers running (MemAvailable {mem_available_kb() // 1024} MiB, "
                    f"load {loadavg()[0]})")
    return started, why


def nft_script(n: int) -> str:
    """n rules that never match the lab's containers (10.1.0.0/16 sources), so a packet that
    reaches the chain is checked against every one of them."""
    lines = ["table inet benchrules {", "  chain fwd_rules {", "    type filter hook forward priority 10; policy accept;"]
    for i in range(n):
        lines.append(f"    ip saddr 10.1.{i // 250}.{i % 250 + 1} tcp dport {1024 + i} accept")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def trace_check(stdout: str, rc: int) -> dict:
    try:
        r = json.loads(stdout)
    except ValueError:
        return {"rc": rc, "verdict": None}
    return {"rc": rc, "verdict": r.get("verdict"), "cause": r.get("cause"),
            "live": (r.get("live") or {}).get("outcome"), "hops": len(r.get("hops", []))}


def verdicts_of(row: Row) -> dict:
    counts: dict[str, int] = {}
    for o in row.outputs:
        key = f"{o['verdict']}/{o.get('cause')}" + (f" live={o['live']}" if o.get("live") else "")
        counts[key] = counts.get(key, 0) + 1
    return counts


# ----------------------------------------------------------------------------- part A

def part_a(args, ctx: InLab, n: int, target: str) -> dict:
    log(f"[A] inspect and snapshot with {n} containers")
    pids = ctx.container_pids()
    ref_script = "for pid in " + " ".join(map(str, pids)) + "; do nsenter --net=/proc/$pid/ns/net ip -o addr; done >/dev/null"
    pid_t = ctx.inspect(target)["State"]["Pid"]
    load0 = loadavg()

    # a. inspect, cold CLI, with two small references: netdiag's CLI start and one ip -o addr
    rows = [Row("inspect-cli", ctx.argv("inspect", "--net", "--json", target), ctx.lab.env,
                f"netdiag inspect --net --json {target}"),
            Row("nd-version", ctx.argv("version"), ctx.lab.env, "netdiag version (the CLI's start, no work)"),
            Row("ip-one", ctx.enter + ["nsenter", f"--net=/proc/{pid_t}/ns/net", "ip", "-o", "addr"], None,
                f"nsenter --net=/proc/PID/ns/net ip -o addr for {target} alone")]
    inspect_stats = round_robin(rows, args.runs, 1)
    log("  inspect in-process: view(live_model(), name)")
    inspect_work = in_process(ctx, "inspect", args.runs, 2, name=target)

    # b/c. snapshot, cold CLI, against one nsenter + ip -o addr pass over every container
    snap_file = ctx.lab.state_dir.parent / f"{ctx.lab.name}-snap.json"
    rows = [Row("snapshot-cli", ctx.argv("snapshot", "-o", str(snap_file)), ctx.lab.env,
                "netdiag snapshot -o FILE"),
            Row("ref-ip-pass", ctx.enter + ["sh", "-c", ref_script], None,
                f"for pid in <{len(pids)} container pids>; do nsenter --net=/proc/$pid/ns/net ip -o addr; done")]
    snap_stats = round_robin(rows, args.snapshot_runs, 0)
    wrote = ctx.nd("snapshot", "-o", str(snap_file)).stdout.strip()
    snap_size = snap_file.stat().st_size
    snap_file.unlink()
    log("  snapshot in-process: build()")
    snap_work = in_process(ctx, "snapshot", 1, 0)
    load1 = loadavg()

    inspect_cli = inspect_stats["inspect-cli"]["median_ms"]
    work = inspect_work["first_call"]["median_ms"]
    snap_ms, ref_ms = snap_stats["snapshot-cli"]["median_ms"], snap_stats["ref-ip-pass"]["median_ms"]
    ratio = snap_ms / ref_ms
    spawned = max(snap_work["subprocesses_per_call"])
    print()
    print(f"== A. inspect and snapshot with {n} containers on benchnet ({SUBNET}); load {load0[0]} -> {load1[0]}")
    print(fmt_table(inspect_stats))
    w = inspect_work
    print(f"inspect in-process, view(live_model(), {target!r}) in a fresh Python each time (imports of "
          f"netdiag.snapshot_model/inspect_view excluded):")
    print(f"  first call: median {w['first_call']['median_ms']:.1f} ms, p90 {w['first_call']['p90_ms']:.1f} "
          f"({args.runs} processes); later calls in the same process: median {w['warm_call']['median_ms']:.1f} ms, "
          f"p90 {w['warm_call']['p90_ms']:.1f}; subprocesses per call: {max(w['subprocesses_per_call'])}")
    print_steps("inspect", w)
    print_profile("inspect", w["profile"])
    print()
    print(fmt_table(snap_stats))
    print(f"  {wrote} ({snap_size / 2**20:.1f} MiB)")
    s = snap_work
    print(f"  in-process build(): {s['first_call']['median_ms']:.0f} ms for {s['result']['namespaces']} namespaces, "
          f"{s['result']['containers']} containers; subprocesses spawned: {spawned}"
          + (f" (e.g. {s['spawned_sample'][:2]})" if spawned else ""))
    ns_count = s["result"]["namespaces"]
    per_ns = (snap_ms / ns_count) / (ref_ms / len(pids))
    print(f"  snapshot/ref-ip-pass (median): {ratio:.2f}x; per namespace read: {snap_ms / ns_count:.1f} ms vs "
          f"{ref_ms / len(pids):.1f} ms ({per_ns:.2f}x; the snapshot reads every namespace on the machine, "
          f"{ns_count} here, the reference only the {len(pids)} containers)")
    print_steps("build()", s)
    print_profile("snapshot build()", s["profile"])
    print()
    word_work = verdict(work <= GOAL_INSPECT_MS, f"goal inspect --net work <= {GOAL_INSPECT_MS:.0f} ms with {n} "
                        f"containers: {work:.1f} ms in-process (first call in a fresh process)")
    word_cli = verdict(inspect_cli <= GOAL_INSPECT_MS, f"(stricter) inspect --net cold CLI <= {GOAL_INSPECT_MS:.0f} ms: "
                       f"{inspect_cli:.1f} ms, of which the CLI's start (netdiag version) "
                       f"{inspect_stats['nd-version']['median_ms']:.1f} ms")
    word_snap = verdict(spawned == 0 and ratio <= GOAL_SNAPSHOT_RATIO,
                        f"goal snapshot without per-namespace subprocesses ({spawned} spawned) and <= "
                        f"{GOAL_SNAPSHOT_RATIO:g}x one nsenter+ip pass: {snap_ms:.0f} ms vs {ref_ms:.0f} ms ({ratio:.2f}x)")
    return {"containers": n, "target": target, "load_start": load0, "load_end": load1,
            "inspect_cli": inspect_stats, "inspect_work": inspect_work,
            "snapshot_cli": snap_stats, "snapshot_work": snap_work, "snapshot_output": wrote,
            "snapshot_bytes": snap_size, "reference_namespaces": len(pids),
            "ratios": {"snapshot/ref-ip-pass": round(ratio, 3), "per_namespace snapshot/ref-ip-pass": round(per_ns, 3),
                                                    "inspect-cli/nd-version": round(inspect_cli / inspect_stats['nd-version']['median_ms'], 3)},
            "goals": {
                "inspect_work": {"rule": f"inspect in-process first call median <= {GOAL_INSPECT_MS} ms", "met": word_work == "MET",
                                 "verdict": word_work},
                "inspect_cli": {"rule": f"inspect cold CLI median <= {GOAL_INSPECT_MS} ms (stricter)", "met": word_cli == "MET",
                                "verdict": word_cli},
                "snapshot": {"rule": f"0 subprocesses and snapshot median <= {GOAL_SNAPSHOT_RATIO} x ref-ip-pass median",
                             "met": word_snap == "MET", "verdict": word_snap}}}


# ----------------------------------------------------------------------------- part B

def part_b_static(args, ctx: InLab, n: int, a: dict, b: dict, work: Path) -> dict:
    log(f"[B] static trace with {n} containers and {NFT_RULES} extra nftables rules")
    rules = work / "benchrules.nft"
    rules.write_text(nft_script(NFT_RULES))
    t0 = time.perf_counter()
    ctx.sh(f"nft -f {rules}")
    load_rules_s = time.perf_counter() - t0
    count = ctx.sh("nft -a list chain inet benchrules fwd_rules | grep -c ' accept # handle '").stdout.strip()
    total = ctx.sh("nft -a list ruleset | grep '# handle' | grep -vc '{'", check=False).stdout.strip()
    snap = work / "snap-rules.json"
    t0 = time.perf_counter()
    wrote = ctx.nd("snapshot", "-o", str(snap)).stdout.strip()
    snap_s = time.perf_counter() - t0
    ref = (f"nsenter --net=/proc/{a['State']['Pid']}/ns/net ip route get {b['ip']} >/dev/null; "
           "nft list ruleset >/dev/null")
    outside = ctx.lab.outside
    load0 = loadavg()
    rows = [Row("trace-static", ctx.argv("trace", "ca", "cb", "--port", "80", "--snapshot", str(snap), "--json"),
                ctx.lab.env, "netdiag trace ca cb --port 80 --snapshot FILE --json", ok=(0, 1, 3), check=trace_check),
            Row("trace-static-pub", ctx.argv("trace", f"ns:{outside}", HOST_IP, "--port", "8080", "--snapshot", str(snap),
                                             "--json"), ctx.lab.env,
                f"netdiag trace ns:OUTSIDE {HOST_IP} --port 8080 (DNAT, forward hook with the 5,000 rules)",
                ok=(0, 1, 3), check=trace_check),
            Row("ref-route-nft", ctx.enter + ["sh", "-c", ref], None,
                "nsenter --net=/proc/PID_A/ns/net ip route get IP_B; nft list ruleset >/dev/null")]
    stats = round_robin(rows, args.runs, 1)
    log("  static trace in-process: Model.load + trace()")
    inproc = in_process(ctx, "trace", args.runs, 2, snapshot=str(snap), src="ca", dst="cb", port=80)
    inproc_pub = in_process(ctx, "trace", max(3, args.runs // 2), 2, snapshot=str(snap), src=f"ns:{outside}",
                            dst=HOST_IP, port=8080)
    snap_bytes = snap.stat().st_size
    snap.unlink()
    load1 = loadavg()
    cli, ref_ms = stats["trace-static"]["median_ms"], stats["ref-route-nft"]["median_ms"]
    answer = inproc["load"]["median_ms"] + inproc["first_call"]["median_ms"]
    v_static, v_pub = verdicts_of(rows[0]), verdicts_of(rows[1])
    print()
    print(f"== B1. static trace on a snapshot with {n} containers and {NFT_RULES} extra rules "
          f"({count} in benchrules, {total} rules in the lab's whole ruleset; {snap_bytes / 2**20:.1f} MiB "
          f"snapshot, taken in {snap_s:.1f} s); load {load0[0]} -> {load1[0]}")
    print(fmt_table(stats))
    print(f"  verdicts: trace-static {v_static}; trace-static-pub {v_pub}")
    print(f"  trace-static/ref-route-nft (median): {cli / ref_ms:.2f}x")
    for title, r in (("ca -> cb:80", inproc), (f"ns:OUTSIDE -> {HOST_IP}:8080", inproc_pub)):
        print(f"  in-process {title}: Model.load {r['load']['median_ms']:.1f} ms (median), trace() first call "
              f"{r['first_call']['median_ms']:.1f} ms, later calls {r['warm_call']['median_ms']:.1f} ms; "
              f"verdict {r['result']['verdict']}/{r['result']['cause']}, {r['result']['hops']} hops")
    print_profile("trace ca cb on the loaded model", inproc["profile"])
    print_profile(f"trace ns:OUTSIDE {HOST_IP}:8080 on the loaded model", inproc_pub["profile"])
    print()
    word = verdict(cli <= GOAL_STATIC_MS, f"goal static trace <= {GOAL_STATIC_MS:.0f} ms (cold CLI): {cli:.1f} ms "
                   f"({cli / ref_ms:.2f}x the ip route get + nft list reference, {ref_ms:.1f} ms)")
    word_in = verdict(answer <= GOAL_STATIC_MS, f"static trace work <= {GOAL_STATIC_MS:.0f} ms (in-process "
                      f"Model.load + first trace()): {answer:.1f} ms")
    return {"containers": n, "nft_rules_added": NFT_RULES, "benchrules_counted": count, "ruleset_rule_lines": total,
            "nft_load_s": round(load_rules_s, 2), "snapshot_output": wrote, "snapshot_s": round(snap_s, 2),
            "snapshot_bytes": snap_bytes, "load_start": load0, "load_end": load1, "cli": stats,
            "verdicts": {"trace-static": v_static, "trace-static-pub": v_pub},
            "work": inproc, "work_published": inproc_pub,
            "ratios": {"trace-static/ref-route-nft": round(cli / ref_ms, 3),
                       "trace-static-pub/ref-route-nft": round(stats["trace-static-pub"]["median_ms"] / ref_ms, 3)},
            "goals": {"static_cli": {"rule": f"trace-static median <= {GOAL_STATIC_MS} ms", "met": word == "MET",
                                     "verdict": word},
                      "static_work": {"rule": f"Model.load + trace() (in-process medians) <= {GOAL_STATIC_MS} ms",
                                      "met": word_in == "MET", "verdict": word_in}}}


def part_b_live(args, ctx: InLab, n: int, a: dict, b: dict) -> dict:
    log(f"[B] live trace with {n} containers")
    ref = (f"nsenter --net=/proc/{a['State']['Pid']}/ns/net ip route get {b['ip']} >/dev/null; "
           "nft list ruleset >/dev/null")
    out: dict = {"containers": n, "rows": {}}
    load0 = loadavg()

    def rows(tag: str) -> list[Row]:
        return [Row(f"trace-live{tag}", ctx.argv("trace", "ca", "cb", "--port", "80", "--json"), ctx.lab.env,
                    "netdiag trace ca cb --port 80 --json (model, static path, probe, capture)", ok=(0, 1, 3),
                    check=trace_check),
                Row(f"ref-route-nft{tag}", ctx.enter + ["sh", "-c", ref], None,
                    "nsenter ... ip route get IP_B; nft list ruleset >/dev/null")]

    with_rules = rows("+rules")
    stats = round_robin(with_rules, args.runs, 1)
    ctx.sh("nft delete table inet benchrules")
    plain = rows("")
    stats.update(round_robin(plain, args.runs, 1))
    log("  live trace in-process (one run under cProfile, one timed)")
    inproc = in_process(ctx, "live", 1, 0, src="ca", dst="cb", port=80)
    load1 = loadavg()
    v = verdicts_of(plain[0])
    v_rules = verdicts_of(with_rules[0])
    med = stats["trace-live"]["median_ms"]
    delivered = all(o["verdict"] == "delivered" for o in plain[0].outputs + with_rules[0].outputs)
    print()
    print(f"== B2. live trace with {n} containers (cb runs httpd -f -p 80); load {load0[0]} -> {load1[0]}")
    print(fmt_table(stats))
    print(f"  verdicts: trace-live {v}; trace-live+rules {v_rules}")
    print(f"  in-process live_model() + diagnose() + live probe: {inproc['first_call']['median_ms']:.0f} ms, "
          f"{inproc['result']}")
    print_steps("live trace", inproc)
    print_profile("the live trace (model, static path, probe)", inproc["profile"])
    print()
    word = verdict(med <= GOAL_LIVE_MS and delivered,
                   f"goal live trace <= {GOAL_LIVE_MS:.0f} ms with {n} containers and verdict delivered: {med:.1f} ms, "
                   f"{'all delivered' if delivered else 'NOT all delivered: ' + str(v)} "
                   f"(with the 5,000 rules still loaded: {stats['trace-live+rules']['median_ms']:.1f} ms)")
    out.update({"cli": stats, "verdicts": {"trace-live": v, "trace-live+rules": v_rules}, "work": inproc,
                "load_start": load0, "load_end": load1,
                "ratios": {"trace-live/ref-route-nft": round(med / stats["ref-route-nft"]["median_ms"], 2)},
                "goals": {"live": {"rule": f"trace-live median <= {GOAL_LIVE_MS} ms and every verdict delivered",
                                   "met": word == "MET", "verdict": word}}})
    return out


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=500, help="containers on the network for part A and B1 (500)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per row (10)")
    ap.add_argument("--snapshot-runs", type=int, default=3, help="timed runs of snapshot and its reference (3)")
    ap.add_argument("--json", metavar="FILE", help="write all the numbers as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.snapshot_runs < 1 or args.containers < 3:
        ap.error("--runs and --snapshot-runs must be at least 1, --containers at least 3")
    if os.geteuid() != 0:
        print("bench_observe: needs root (network namespaces, cgroups)", file=sys.stderr)
        return 2
    netdiag_bin = str(Path(sys.executable).with_name("netdiag"))
    if not os.access(netdiag_bin, os.X_OK):
        netdiag_bin = shutil.which("netdiag") or ""
    if not netdiag_bin:
        print("bench_observe: no netdiag executable beside this Python or on PATH (pip install -e .)", file=sys.stderr)
        return 1
    for tool in ("nsenter", "nft", "ip"):
        if not shutil.which(tool):
            print(f"bench_observe: needs {tool}", file=sys.stderr)
            return 1

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    lab = Lab(name=f"ndbo-{os.getpid()}")
    work = Path(tempfile.mkdtemp(prefix=f"{lab.name}-work-"))
    report: dict = {}
    rc = 0
    root_before = None
    created = False
    leftovers: list[str] = []
    t_all = time.perf_counter()
    try:
        root_before = root_snapshot()
        log(f"lab: creating {lab.name}")
        created = True
        lab.create()
        ctx = InLab(lab, netdiag_bin)
        report = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                        "mem_total_mib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)},
            "runs": args.runs, "snapshot_runs": args.snapshot_runs, "load_start": loadavg(), "lab": lab.name,
        }
        ctx.nd("network", "create", "--subnet", SUBNET, "benchnet")
        ctx.nd("run", "-d", "--name", "ca", "--network", "benchnet", "busybox", "sleep", "3600")
        ctx.nd("run", "-d", "--name", "cb", "--network", "benchnet", "-p", "8080:80", "busybox",
               "httpd", "-f", "-p", "80")
        a, b = ctx.inspect("ca"), ctx.inspect("cb")
        b["ip"] = b["NetworkSettings"]["Networks"]["benchnet"]["IPAddress"]
        fillers = [f"c{i}" for i in range(3, args.containers + 1)]
        log(f"starting {len(fillers)} more containers on benchnet (4 CLIs at a time)")
        mem0, t0 = mem_available_kb(), time.perf_counter()
        started, stopped = start_many(ctx, fillers)
        start_s = time.perf_counter() - t0
        n = len(started) + 2
        per_ctr = (mem0 - mem_available_kb()) / 1024 / max(1, len(started))
        report["setup"] = {"containers": n, "wanted": args.containers, "start_seconds": round(start_s, 1),
                           "memory_per_container_mib": round(per_ctr, 1), "stopped_early": stopped}
        log(f"  {n} containers in {start_s:.0f} s, about {per_ctr:.1f} MiB each")
        target = started[-1] if started else "cb"

        report["inspect_snapshot"] = part_a(args, ctx, n, target)
        report["trace_static"] = part_b_static(args, ctx, n, a, b, work)

        extra = started[LIVE_SIZE - 2:]
        log(f"removing {len(extra)} containers (netdiag rm -f, 50 per call) to leave {n - len(extra)}")
        t0 = time.perf_counter()
        ctx.rm(extra)
        report["setup"]["shrink_seconds"] = round(time.perf_counter() - t0, 1)
        report["trace_live"] = part_b_live(args, ctx, n - len(extra), a, b)

        log("removing the remaining containers and the network")
        t0 = time.perf_counter()
        ctx.rm(["ca", "cb"] + started[:LIVE_SIZE - 2])
        ctx.nd("network", "rm", "benchnet", check=False)
        report["setup"]["final_rm_seconds"] = round(time.perf_counter() - t0, 1)
        report["load_end"] = loadavg()
        report["total_seconds"] = round(time.perf_counter() - t_all, 1)
    except rb.Interrupted as e:
        log(f"bench_observe: {e}; cleaning up")
        rc = 130
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        log(f"bench_observe: error: {type(e).__name__}: {e}")
        rc = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second ^C must not cut the cleanup short
        leftovers = cleanup(lab, created, work, root_before)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        if leftovers:
            log("bench_observe: LEFT BEHIND: " + "\n  ".join(leftovers))
            rc = rc or 3
        else:
            log(f"cleanup: lab {lab.name} (namespaces, processes, cgroups, state) and {work} all gone; the root "
                "network namespace (links, addresses, routes, rules, nft ruleset) is unchanged")
    if report and "trace_live" in report:
        print()
        print("summary:")
        for part, key, label in (("inspect_snapshot", "inspect_work", "A. inspect --net work <= 0.3 s"),
                                 ("inspect_snapshot", "inspect_cli", "A. inspect --net cold CLI <= 0.3 s (stricter)"),
                                 ("inspect_snapshot", "snapshot", "A. snapshot: no subprocesses, <= 1x ip pass"),
                                 ("trace_static", "static_cli", "B. static trace cold CLI <= 0.5 s"),
                                 ("trace_static", "static_work", "B. static trace work <= 0.5 s"),
                                 ("trace_live", "live", "B. live trace <= 2 s, delivered")):
            print(f"  {label}: {report[part]['goals'][key]['verdict']}")
    if report and args.json:
        report["cleanup_ok"] = not leftovers
        report["left_behind"] = leftovers
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return rc


def cleanup(lab: Lab, created: bool, work: Path, root_before: dict | None) -> list[str]:
    """Destroy the lab (kills whatever netdiag started in it, removes its cgroups, namespaces and
    state), wait for its processes to be gone, and check that nothing is left."""
    left: list[str] = []
    tracked = rb.Tracked()
    tracked.add(rb.pids_mentioning(str(lab.state_dir)))
    if created:
        for attempt in range(3):
            try:
                lab.destroy()
                break
            except Exception as e:  # noqa: BLE001 - e.g. a cgroup still busy: try again
                if attempt == 2:
                    left.append(f"lab destroy failed: {type(e).__name__}: {e}")
                time.sleep(2)
        try:
            rb.end_processes(lab.state_dir, tracked, timeout=10)
        except Exception as e:  # noqa: BLE001
            left.append(f"processes cleanup failed: {e}")
        left += [f"{lab.name}: {x}" for x in lab.leaks()]
    shutil.rmtree(work, ignore_errors=True)
    if work.exists():
        left.append(f"dir {work}")
    snap = lab.state_dir.parent / f"{lab.name}-snap.json"
    for f in (snap, Path(str(snap) + ".partial")):
        f.unlink(missing_ok=True)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    left += [f"netns {ns} in ip netns list" for ns in (lab.name, lab.outside) if ns in listed]
    left += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{lab.name}*")]
    running = sorted(set(tracked.running()) | set(rb.pids_mentioning(str(lab.state_dir))))
    if running:
        left.append(f"processes {running}")
    if root_before is not None:
        left += snapshot_diff(root_before, root_snapshot())
    return left


if __name__ == "__main__":
    sys.exit(main())
