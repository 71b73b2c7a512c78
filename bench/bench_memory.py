#!/usr/bin/env python3
"""Memory per running container (issue 24), netdiag beside Docker and Podman in one run.

For each count N (10 and 200 by default) each engine runs N idle containers (`sleep 3600`,
`--network none`) on a lab host of its own, then the bench sums the PSS (/proc/PID/smaps_rollup)
of what keeps those containers supervised and divides by N:

    netdiag  every process that names the lab's state directory in its command line or
             environment (the monitors, an --init's PID 1 helper, any supervisor)
    docker   the containerd-shim processes of the lab's engine (dockerd and containerd not counted:
             they are the daemon, shared by all containers and there with none)
    podman   the conmon processes in the lab's Podman mount namespace (Podman has no daemon)

    goal     netdiag <= 3 MiB per container at 10 and at 200

    sudo .venv/bin/python bench/bench_memory.py [--counts 10,200] [--no-docker] [--no-podman] [--json FILE]

Nothing runs in the machine's root namespace; the labs are destroyed at the end, also on failure
or Ctrl-C, and what they leave is reported (exit code 3).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import bench_network as bn  # noqa: E402  (log, loadavg, verdict)
import engines  # noqa: E402  (the engines' labs, signals)
import run_bench as rb  # noqa: E402  (Interrupted)
from netdiag.worlds.leftovers import pids_mentioning  # noqa: E402

GOAL_MIB = 3.0
def pss_kib(pid: int) -> int:
    """The process's proportional set size (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def supervisors(engine: str, lab) -> list[int]:
    """The pids that keep `lab`'s containers supervised, per the module's docstring."""
    if engine == "netdiag":
        return pids_mentioning(str(lab.state_dir))
    if engine == "docker":
        return [p for p in pids_mentioning(str(lab.engine.work)) if comm(p).startswith("containerd-shim")]
    # Podman's paths are bind mounts in the keeper's mount namespace: its conmons are those there
    mnt = os.readlink(f"/proc/{lab.podman_host.keeper_pid()}/ns/mnt")
    return [p for p in _pids() if comm(p) == "conmon" and _mnt_ns(p) == mnt]


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _mnt_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


def start(engine: str, lab, n: int, already: int) -> None:
    """Containers already..n-1 of `engine`, two at a time (the machine has 2 cores)."""
    def one(i: int) -> None:
        argv = ("run", "-d", "--network", "none", "--name", f"m{i}")
        if engine == "netdiag":
            p = lab.netdiag(*argv, "busybox", "sleep", "3600", check=False, timeout=120)
            if p.returncode != 0:
                raise RuntimeError(f"netdiag run exited {p.returncode}: {p.stderr.strip()[-400:]}")
        elif engine == "docker":
            lab.docker(*argv, lab.image, "sleep", "3600", timeout=120)
        else:
            lab.podman(*argv, lab.image, "sleep", "3600", timeout=120)

    with ThreadPoolExecutor(2) as ex:
        list(ex.map(one, range(already, n)))


def measure(labs: dict, counts: list[int]) -> dict:
    out: dict = {}
    started = {engine: 0 for engine in labs}
    for n in counts:
        row = {}
        for engine, lab in labs.items():
            bn.log(f"{engine}: starting containers {started[engine]}..{n - 1}")
            start(engine, lab, n, started[engine])
            started[engine] = n
            pids = supervisors(engine, lab)
            total = sum(pss_kib(p) for p in pids)
            row[engine] = {"processes": len(pids), "pss_total_mib": round(total / 1024, 1),
                           "pss_per_container_mib": round(total / 1024 / n, 2)}
            bn.log(f"  {engine} @ {n}: {len(pids)} processes, {total / 1024:.1f} MiB PSS, {total / 1024 / n:.2f} MiB per container")
        out[str(n)] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="10,200", help="container counts, ascending (default 10,200)")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    counts = sorted(int(x) for x in args.counts.split(","))
    if os.geteuid() != 0:
        print("bench_memory: needs root (labs)", file=sys.stderr)
        return 2
    engines.unwind_on_signals()
    labs: dict = {}
    report: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "load": [bn.loadavg()]}
    rc = 0
    try:
        for engine, what in engines.open_labs(labs, args.no_docker, args.no_podman).items():
            bn.log(f"{engine}: {what}")
        report["memory"] = measure(labs, counts)
        report["load"].append(bn.loadavg())
        for n, row in report["memory"].items():
            per = row["netdiag"]["pss_per_container_mib"]
            others = ", ".join(f"{e} {r['pss_per_container_mib']:.2f}" for e, r in row.items() if e != "netdiag")
            bn.verdict(per <= GOAL_MIB, f"netdiag @ {n}: {per:.2f} MiB PSS per container <= {GOAL_MIB} (MiB: {others or 'no other engine'})")
    except rb.Interrupted as e:
        bn.log(f"bench_memory: {e}; cleaning up")
        rc = 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        bn.log(f"bench_memory: error: {type(e).__name__}: {e}")
        rc = 1
    finally:
        engines.hold_signals()
        left = engines.close_labs(labs)
    if left:
        bn.log("bench_memory: LEFT BEHIND: " + "; ".join(left))
        rc = rc or 3
    if args.json and "memory" in report:
        report["left_behind"] = left
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
