#!/usr/bin/env python3
"""How long `netdiag watch` takes from a dropped SYN to its line, and to its diagnosis.

Goals (issue 23): a dropped SYN's line within 1 s, its diagnosis within 3 s. The bench builds a
netdiag Lab with a user network and a container `cli`, plants a rule in the lab host's forward hook
that drops TCP to the outside namespace's ports 8300-8399, starts one `netdiag watch --container
cli --json` (a cold CLI, diagnosis on), and then, once per run, opens a non-blocking connect from
cli's namespace to a new port (a new flow each time) and notes the time. From watch's output:

| figure | what it is |
| --- | --- |
| `to line` | the SYN's connect() to the arrival of watch's event line for it |
| `rto` | of that, connect() to the event's own time: the first SYN's (a connect still waiting after 0.5 s, since 2026-12-08: about 0) or, before, the first SYN retransmit's (the initial RTO, 1 s) |
| `watch` | of that, watch's own: the event's time to the line's arrival (the 0.5 s wait for an answer, tracefs, the reader's 0.1 s window, the loop) |
| `to diagnosis` | connect() to the arrival of the flow's diagnosis line |

Then what watch itself costs: its CPU (the CLI and its reader child, from /proc: user + system
time) over `--storm-seconds` idle, and over as long a storm of `--storm-rate` refused connects a
second from cli's namespace (each answered by a RST at once: a `tcp_receive_reset` event each, one
flow), as a share of one core. Last, iperf3 from cli to a second container `srv` (3 s runs),
round-robin without and with a watch running (`--tp-rounds`; issue 23's goal: at most 3% lower).

    sudo .venv/bin/python bench/bench_watch.py [--runs N] [--storm-rate N] [--storm-seconds S]
                                               [--tp-rounds N] [--tp-seconds S] [--json FILE]

Nothing changes in the root network namespace (compared before and after); the lab is destroyed
at the end, also on failure or Ctrl-C. Exit codes: 0 ok (goal met or not: see the verdict),
1 error, 2 not root, 3 something left behind or changed, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import run_bench as rb  # noqa: E402  (log, percentile, Interrupted, root netns snapshot)
from bench_health import on_signal, root_state, stats  # noqa: E402
from nd_lab import NdLab  # noqa: E402
from netdiag.worlds import Lab  # noqa: E402
from netdiag.worlds.host import OUTSIDE_IP  # noqa: E402
from runtime.kernel.ns import netns  # noqa: E402

LINE_GOAL, DIAGNOSIS_GOAL, FIRST_PORT, REFUSED_PORT = 1.0, 3.0, 8300, 8400


def setup(nd: NdLab) -> int:
    nd.nd("network", "create", "--subnet", "10.92.0.0/24", "bw")
    nd.nd("run", "-d", "--name", "cli", "--network", "bw", "busybox", "sleep", "3600")
    nd.nd("run", "-d", "--name", "srv", "--network", "bw", "busybox", "sleep", "3600")  # iperf3's server runs in its namespace
    rules = ("table inet wbench { chain forward_filter { type filter hook forward priority 0; policy accept; "
             f"ip daddr {OUTSIDE_IP} tcp dport {FIRST_PORT}-{FIRST_PORT + 99} drop; }}; }}")
    p = nd.lab.run_in(None, ["nft", "-f", "-"], input=rules, capture_output=True, text=True, timeout=30)
    if p.returncode:
        raise RuntimeError(f"nft: {p.stderr.strip()}")
    return nd.inspect("cli")["State"]["Pid"]


def reader(stream, lines: queue.Queue) -> None:
    """Watch's JSON lines with their arrival times."""
    for line in stream:
        lines.put((time.time(), json.loads(line)))


def one_run(pid: int, port: int, lines: queue.Queue, timeout: float = 15.0) -> dict:
    with netns(f"/proc/{pid}/ns/net"):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        t0 = time.time()
        try:
            s.connect((OUTSIDE_IP, port))
        except BlockingIOError:
            pass
        out: dict = {}
        flow = None
        deadline = time.monotonic() + timeout
        while "to_diagnosis" not in out:
            try:
                arrived, obj = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise RuntimeError(f"port {port}: watch said nothing within {timeout:g} s (seen: {out})") from None
            if obj["type"] == "event" and obj["dst"]["port"] == port and "to_line" not in out:
                flow = obj["flow"]
                out.update(to_line=arrived - t0, rto=obj["time"] - t0, watch=arrived - obj["time"])
            elif obj["type"] == "diagnosis" and obj["flow"] == flow:
                if obj["cause"] != "FIREWALL_DROP":
                    raise RuntimeError(f"port {port}: diagnosed {obj['cause']}: {obj['summary']}")
                out.update(to_diagnosis=arrived - t0, diagnosed_in=obj["seconds"])
        return out
    finally:
        s.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (watch's reader), in seconds."""
    pids = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def storm(pid: int, rate: int, seconds: float) -> int:
    """`rate` refused connects a second from cli's namespace for `seconds`; how many were made."""
    made, batch = 0, max(rate // 100, 1)
    start = time.monotonic()
    with netns(f"/proc/{pid}/ns/net"):  # this thread only: sockets made here live in cli's namespace
        while time.monotonic() - start < seconds:
            socks = []
            for _ in range(batch):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                try:
                    s.connect((OUTSIDE_IP, REFUSED_PORT))
                except BlockingIOError:
                    pass
                socks.append(s)
            made += batch
            time.sleep(max(start + made / rate - time.monotonic(), 0))
            for s in socks:
                s.close()
    return made


def cost(watch_pid: int, pid: int, rate: int, seconds: float) -> dict:
    t0, c0 = time.monotonic(), cpu_seconds(watch_pid)
    time.sleep(seconds)
    idle = (cpu_seconds(watch_pid) - c0) / (time.monotonic() - t0)
    t0, c0 = time.monotonic(), cpu_seconds(watch_pid)
    made = storm(pid, rate, seconds)
    busy = (cpu_seconds(watch_pid) - c0) / (time.monotonic() - t0)
    return {"idle_core_share": idle, "storm_core_share": busy, "storm_connects": made,
            "storm_rate": made / seconds}


class Watch:
    """One `netdiag watch --container cli --json` in the lab, its lines read by a thread."""

    def __init__(self, nd: NdLab):
        self.proc = subprocess.Popen([nd.bin, "watch", "--container", "cli", "--json"], env=nd.lab.env,
                                     preexec_fn=nd.lab.enter(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=reader, args=(self.proc.stdout, self.lines), daemon=True).start()
        try:
            start = self.lines.get(timeout=30)[1]
        except queue.Empty:
            start = None
        if not start or start.get("type") != "start":
            self.stop()
            raise RuntimeError(f"watch did not start: {start}")

    def stop(self) -> bool:
        """SIGTERM, as a service manager ends it: watch removes its tracefs instance. False if it had to be killed."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return False


def throughput(nd: NdLab, rounds: int, seconds: float) -> dict:
    """iperf3 cli -> srv (Gbit/s), without and with watch running, round-robin."""
    from bench_network import Pump

    pump, ns = Pump("iperf3", seconds, []), {n: f"/proc/{nd.inspect(n)['State']['Pid']}/ns/net" for n in ("srv", "cli")}
    srv_ip = nd.inspect("srv")["NetworkSettings"]["Networks"]["bw"]["IPAddress"]
    out: dict = {"without": [], "with": []}
    for _ in range(rounds):
        out["without"].append(pump.run(ns["srv"], ns["cli"], srv_ip))
        w = Watch(nd)
        try:
            out["with"].append(pump.run(ns["srv"], ns["cli"], srv_ip))
        finally:
            w.stop()
    out["ratio"] = statistics.median(out["with"]) / statistics.median(out["without"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="dropped SYNs, each a new flow (10, at most 100)")
    ap.add_argument("--storm-rate", type=int, default=2000, help="refused connects a second in the storm (2000)")
    ap.add_argument("--storm-seconds", type=float, default=5.0, help="how long the storm and the idle reference last (5)")
    ap.add_argument("--tp-rounds", type=int, default=3, help="iperf3 rounds without and with watch (3; 0: none)")
    ap.add_argument("--tp-seconds", type=float, default=3.0, help="seconds of each iperf3 run (3)")
    ap.add_argument("--json", metavar="FILE", help="write the samples and stats as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 100 or not 1 <= args.storm_rate <= 20000 or not 0 < args.storm_seconds <= 60 \
            or not 0 <= args.tp_rounds <= 20 or not 0 < args.tp_seconds <= 60:
        ap.error("1 <= --runs <= 100, 1 <= --storm-rate <= 20000, 0 < --storm-seconds <= 60, 0 <= --tp-rounds <= 20, "
                 "0 < --tp-seconds <= 60")
    if os.geteuid() != 0:
        print("bench_watch: needs root (network namespaces, tracefs)", file=sys.stderr)
        return 2
    if args.tp_rounds and not shutil.which("iperf3"):
        print("bench_watch: iperf3 is not installed (or give --tp-rounds 0)", file=sys.stderr)
        return 1
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    lab = Lab(name=f"ndbw-{os.getpid()}")
    before = root_state()
    rc, left, watch = 0, [], None
    try:
        rb.log(f"lab: creating {lab.name}")
        lab.create()
        nd = NdLab(lab, str(Path(sys.executable).with_name("netdiag")))
        pid = setup(nd)
        watch = Watch(nd)
        samples = []
        for i in range(args.runs):
            samples.append(one_run(pid, FIRST_PORT + i, watch.lines))
            rb.log(f"run {i + 1}/{args.runs}: line {samples[-1]['to_line']:.2f}s, diagnosis {samples[-1]['to_diagnosis']:.2f}s")
        report = {"runs": args.runs, "load": os.getloadavg(), "samples": samples,
                  "stats": {k: stats([s[k] for s in samples]) for k in samples[0]}}
        print(f"\n{'figure':<14} {'median':>8} {'p90':>7} {'max':>7}")
        for k, st in report["stats"].items():
            print(f"{k:<14} {st['median']:>8.3f} {st['p90']:>7.3f} {st['max']:>7.3f}")
        line, diag = report["stats"]["to_line"]["median"], report["stats"]["to_diagnosis"]["median"]
        report["ratio"] = {"to_line": line / LINE_GOAL, "to_diagnosis": diag / DIAGNOSIS_GOAL}
        print(f"\ndropped SYN to its line: median {line:.2f} s = {line / LINE_GOAL:.2f}x of {LINE_GOAL:g} s "
              f"(the event's own time after connect(): {report['stats']['rto']['median']:.2f} s); "
              f"to its diagnosis: {diag:.2f} s = {diag / DIAGNOSIS_GOAL:.2f}x of {DIAGNOSIS_GOAL:g} s")
        report["cost"] = c = cost(watch.proc.pid, pid, args.storm_rate, args.storm_seconds)
        print(f"watch's CPU: idle {100 * c['idle_core_share']:.1f}% of a core; under {c['storm_rate']:.0f} refused "
              f"connects/s {100 * c['storm_core_share']:.1f}% of a core")
        if not watch.stop():
            left.append("watch did not end on SIGTERM")
        watch = None
        if args.tp_rounds:
            report["throughput"] = tp = throughput(nd, args.tp_rounds, args.tp_seconds)
            print(f"iperf3 cli -> srv: without watch {statistics.median(tp['without']):.2f} Gbit/s, with "
                  f"{statistics.median(tp['with']):.2f} (medians of {args.tp_rounds}): {tp['ratio']:.3f}x")
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
        if watch is not None and not watch.stop():
            left.append("watch did not end on SIGTERM")
        lab.destroy()
        left += lab.leaks()
        if root_state() != before:
            left.append("the root network namespace changed during the run")
        if left:
            print(f"LEFT BEHIND: {left}", file=sys.stderr)
            rc = 3
    return rc


if __name__ == "__main__":
    sys.exit(main())
