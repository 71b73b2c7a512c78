#!/usr/bin/env python3
"""netdiag beside Docker and Podman in one run: the workloads of issue 24's side-by-side table.

Each engine runs on a lab host of its own (a netdiag Lab, a DockerLab with its private dockerd, a
PodmanLab with rootful Podman in its own mount namespace), and the same workloads run against each:

    startup     bench_startup's rows: `run --rm --network none busybox true`, the same on the
                default bridge, and `ps` (idle host), round-robin over the engines
    parallel    --parallel (30) `run -d busybox sleep 3600` on the default bridge at once, one
                thread per CLI: the wall time until every one returned (the containers are
                removed between rounds, untimed)
    throughput  iperf3 between two containers on the default bridge, the host's iperf3 run in each
                container's network namespace (the engines' own veth, bridge and firewall rules
                on the path): Gbit/s, median of the rounds
    scale       --count (500) idle containers (`--network none`), then the PSS per container of what
                supervises them (bench_memory's accounting) and `ps` with them all running

    sudo .venv/bin/python bench/bench_side.py [--runs N] [--parallel 30] [--count 500]
                                              [--tp-seconds S] [--no-docker] [--no-podman] [--json FILE]

Ratios are netdiag's figure over the other engine's (for throughput, higher is better; for the
rest lower). Nothing runs in the machine's root namespace; the labs are destroyed at the end, also
on failure or Ctrl-C, and what they leave is reported (exit code 3).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import bench_memory as bm  # noqa: E402  (start, supervisors, pss_kib)
import bench_network as bn  # noqa: E402  (log, loadavg, round_robin, fmt_table, Series)
import bench_startup as bs  # noqa: E402  (measure: the start-up rows)
import engines  # noqa: E402  (the engines' labs, signals)
import run_bench as rb  # noqa: E402  (Interrupted)

TP_PORT = 5201
def cli(engine: str, lab, *argv: str, timeout: float = 120) -> str:
    """One command of `engine`'s CLI on its lab host; its stdout (RuntimeError when it failed)."""
    if engine == "netdiag":
        p = lab.netdiag(*argv, check=False, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"netdiag {' '.join(argv)} exited {p.returncode}: {p.stderr.strip()[-400:]}")
        return p.stdout
    return (lab.docker if engine == "docker" else lab.podman)(*argv, timeout=timeout).stdout


def image(engine: str, lab) -> str:
    return "busybox" if engine == "netdiag" else lab.image


def ps_argv(engine: str, lab) -> list[str]:
    """The command line that runs `ps` on the engine's host (as bench_startup's rows do)."""
    if engine == "netdiag":
        return ["nsenter", f"--net={lab.namespace()}", "--", str(Path(sys.executable).with_name("netdiag")), "ps"]
    if engine == "docker":
        return ["nsenter", f"--net={lab.namespace()}", "--", *lab.engine.docker("ps")]
    keeper = lab.podman_host.keeper_pid()
    return ["nsenter", f"--net=/proc/{keeper}/ns/net", f"--mount=/proc/{keeper}/ns/mnt", "--", "podman", "ps"]


def ps_env(engine: str, lab) -> dict | None:
    return {"netdiag": lambda: lab.env, "docker": lambda: lab.engine.cli_env(), "podman": lambda: lab.env}[engine]()


def parallel_starts(engine: str, lab, n: int, runs: int) -> dict:
    """Wall seconds for n `run -d` at once on the default bridge, per round."""
    def one(i: int) -> None:
        cli(engine, lab, "run", "-d", "--name", f"p{i}", image(engine, lab), "sleep", "3600", timeout=300)

    rounds = []
    for r in range(runs):
        t0 = time.monotonic()
        with ThreadPoolExecutor(n) as ex:
            list(ex.map(one, range(n)))
        rounds.append(time.monotonic() - t0)
        cli(engine, lab, "rm", "-f", *[f"p{i}" for i in range(n)], timeout=600)
        bn.log(f"  {engine}: {n} parallel starts in {rounds[-1]:.2f} s (round {r + 1}/{runs})")
    return {"seconds": rounds, "median_s": round(statistics.median(rounds), 3)}


def _netns_of(engine: str, lab, name: str) -> str:
    pid = cli(engine, lab, "inspect", "-f", "{{.State.Pid}}", name).strip()
    return f"/proc/{int(pid)}/ns/net"


def throughput(engine: str, lab, seconds: int, runs: int) -> dict:
    """iperf3 from container tpc to container tps on the default bridge: Gbit/s per round."""
    for name in ("tps", "tpc"):
        cli(engine, lab, "run", "-d", "--name", name, image(engine, lab), "sleep", "3600")
    try:
        ip = cli(engine, lab, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "tps").strip()
        server_ns, client_ns = _netns_of(engine, lab, "tps"), _netns_of(engine, lab, "tpc")
        rates = []
        for _ in range(runs):
            server = subprocess.Popen(["nsenter", f"--net={server_ns}", "--", "iperf3", "-s", "-1", "-p", str(TP_PORT)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(0.3)  # listening
                p = subprocess.run(["nsenter", f"--net={client_ns}", "--", "iperf3", "-c", ip, "-p", str(TP_PORT),
                                    "-t", str(seconds), "-J"], capture_output=True, text=True, timeout=seconds + 30)
                if p.returncode != 0:
                    raise RuntimeError(f"iperf3 to {engine}'s container failed: {p.stdout[-300:]}{p.stderr[-300:]}")
                rates.append(json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9)
            finally:
                server.kill()
                server.wait()
        bn.log(f"  {engine}: iperf3 {', '.join(f'{r:.1f}' for r in rates)} Gbit/s")
        return {"gbits": [round(r, 2) for r in rates], "median_gbits": round(statistics.median(rates), 2)}
    finally:
        cli(engine, lab, "rm", "-f", "tps", "tpc")


def scale(labs: dict, count: int, runs: int) -> dict:
    """count idle containers per engine; PSS per container and `ps` with them running."""
    out = {}
    for engine, lab in labs.items():
        bn.log(f"{engine}: starting {count} containers")
        bm.start(engine, lab, count, 0)
        pids = bm.supervisors(engine, lab)
        total = sum(bm.pss_kib(p) for p in pids)
        out[engine] = {"processes": len(pids), "pss_per_container_mib": round(total / 1024 / count, 2)}
    rows = [bn.Series(f"{engine}-ps@{count}", ps_argv(engine, lab), ps_env(engine, lab)) for engine, lab in labs.items()]
    stats = bn.round_robin(rows, runs, 1)
    print(bn.fmt_table(stats))
    for engine in labs:
        out[engine]["ps_ms"] = stats[f"{engine}-ps@{count}"]["median_ms"]
    return out


def table(report: dict, engines: list[str]) -> str:
    """Markdown: one row per workload, netdiag's figure, each engine's, and netdiag's ratio to it."""
    med = report["startup"]["stats"]
    rows = [("`run --rm --network none` (ms)", {e: med.get(k, {}).get("median_ms") for e, k in
                                                 (("netdiag", "nd-none"), ("docker", "docker-none"), ("podman", "podman-none"))}, "lower"),
            ("`run --rm` on the default bridge (ms)", {e: med.get(k, {}).get("median_ms") for e, k in
                                                        (("netdiag", "nd-bridge"), ("docker", "docker-bridge"), ("podman", "podman-bridge"))}, "lower"),
            (f"memory per container at {report['count']} (MiB PSS)", {e: r["pss_per_container_mib"] for e, r in report["scale"].items()}, "lower"),
            (f"{report['parallel_n']} parallel `run -d` (s)", {e: r["median_s"] for e, r in report["parallel"].items()}, "lower"),
            ("bridge throughput, container to container (Gbit/s)", {e: r["median_gbits"] for e, r in report["throughput"].items()}, "higher"),
            (f"`ps` with {report['count']} running (ms)", {e: r["ps_ms"] for e, r in report["scale"].items()}, "lower")]
    others = [e for e in engines if e != "netdiag"]
    head = "| workload | netdiag | " + " | ".join(others) + " | " + " | ".join(f"netdiag / {e}" for e in others) + " |"
    lines = [head, "|" + " --- |" * (2 + 2 * len(others))]
    for name, figures, _better in rows:
        nd = figures.get("netdiag")
        cells = [f"{figures.get(e)}" if figures.get(e) is not None else "-" for e in others]
        ratios = [f"{nd / figures[e]:.2f}x" if nd is not None and figures.get(e) else "-" for e in others]
        lines.append(f"| {name} | {nd if nd is not None else '-'} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed rounds per workload (default 5)")
    ap.add_argument("--parallel", type=int, default=30, help="containers started at once (default 30)")
    ap.add_argument("--count", type=int, default=500, help="containers running for memory and ps (default 500)")
    ap.add_argument("--tp-seconds", type=int, default=3, help="seconds per iperf3 round (default 3)")
    ap.add_argument("--no-docker", action="store_true", help="skip Docker")
    ap.add_argument("--no-podman", action="store_true", help="skip Podman")
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    args = ap.parse_args(argv)
    if min(args.runs, args.parallel, args.count, args.tp_seconds) < 1:
        ap.error("--runs, --parallel, --count and --tp-seconds must be at least 1")
    if os.geteuid() != 0:
        print("bench_side: needs root (labs: namespaces, cgroups, engines)", file=sys.stderr)
        return 2
    engines.unwind_on_signals()
    labs: dict = {}
    report: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "load": [bn.loadavg()], "parallel_n": args.parallel, "count": args.count}
    rc, left = 0, []
    try:
        for tree in (REPO,):
            bs.byte_compile(tree)
        report["engines"] = engines.open_labs(labs, args.no_docker, args.no_podman)
        bn.log(f"engines: {report['engines']}")
        report["startup"] = bs.measure(argparse.Namespace(runs=args.runs * 3, warmup=2, before=None), labs)
        report["parallel"] = {e: parallel_starts(e, lab, args.parallel, args.runs) for e, lab in labs.items()}
        report["throughput"] = {e: throughput(e, lab, args.tp_seconds, args.runs) for e, lab in labs.items()}
        report["scale"] = scale(labs, args.count, args.runs)
        report["load"].append(bn.loadavg())
        report["table"] = table(report, list(labs))
        print(f"\n== side by side (load {report['load'][0][0]} -> {report['load'][-1][0]})\n{report['table']}")
    except rb.Interrupted as e:
        bn.log(f"bench_side: {e}; cleaning up")
        rc = 130
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
        bn.log(f"bench_side: error: {type(e).__name__}: {e}")
        rc = 1
    finally:
        engines.hold_signals()
        left = engines.close_labs(labs)
    if left:
        bn.log("bench_side: LEFT BEHIND: " + "; ".join(left))
        rc = rc or 3
    if args.json:
        report["left_behind"] = left
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
