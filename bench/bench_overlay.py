#!/usr/bin/env python3
"""The overlay driver, measured against references taken in the same run, in a ClusterLab (three lab
hosts on one underlay bridge, a real etcd in a namespace of its own; netdiag/worlds/host.py):

  1. throughput: iperf3 TCP from a container on host A to a container on host B across the overlay,
     against the same two hosts' namespaces talking over the plain underlay (no VXLAN). Goal >= 0.7x.
  2. convergence: a container started on host B, timed from `netdiag run` returning until a
     container on host A gets a ping answer from it (the store's watch, the agent, FDB/ARP entries).
     Goal < 1 s.
  3. attach: `netdiag run -d --network ov` on host A (cold CLI; the first endpoint there, so the
     sandbox is made and every remote endpoint programmed) with 2 remote endpoints in the store,
     then with 200. Goal: attach@200 < 2x attach@2. The remote endpoints are registered by host C's
     own membership (alloc.claim_address on its lease, exactly what an attach there writes) without
     containers behind them: what an attach on A costs depends only on what the store lists.

    sudo .venv/bin/python bench/bench_overlay.py [--runs N] [--tp-seconds S] [--tp-runs N] [--remote N] [--json FILE]

Nothing touches the root namespace; everything is removed at the end, also on failure or Ctrl-C,
and checked (ClusterLab.leaks: namespaces, cgroups, mounts, state, processes). Exit codes:
0 ok, 1 error, 2 not root, 3 something left behind, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netdiag.worlds import ClusterLab# noqa: E402
from runtime.kernel import ns  # noqa: E402

TP_PORT = 5201


class Interrupted(Exception):
    pass


def _on_signal(signum, _frame):
    if os.getpid() == MAIN_PID:
        raise Interrupted(signal.Signals(signum).name)


MAIN_PID = os.getpid()


def log(msg: str) -> None:
    print(f"[bench_overlay] {msg}", file=sys.stderr, flush=True)


def nd(lab: ClusterLab, i: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    p = lab.hosts[i].netdiag(*args, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"h{i + 1}: netdiag {' '.join(args[:6])} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return p


def pid_of(lab: ClusterLab, i: int, name: str) -> int:
    return json.loads(nd(lab, i, "inspect", name).stdout)[0]["State"]["Pid"]


def ip_of(lab: ClusterLab, i: int, name: str) -> str:
    return json.loads(nd(lab, i, "inspect", name).stdout)[0]["NetworkSettings"]["Networks"]["ov"]["IPAddress"]


def stats(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"runs": len(s), "median": round(statistics.median(s), 4), "min": round(s[0], 4), "max": round(s[-1], 4),
            "samples": [round(x, 4) for x in samples]}


# -- 1. throughput ---------------------------------------------------------------------------------------
def iperf(server_ns: str, client_ns: str, target: str, seconds: float) -> float:
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(TP_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           preexec_fn=ns.enter(server_ns))
    try:
        time.sleep(0.3)
        p = subprocess.run(["iperf3", "-c", target, "-p", str(TP_PORT), "-t", f"{seconds:g}", "-J"], capture_output=True,
                           text=True, timeout=seconds + 30, preexec_fn=ns.enter(client_ns))
        out = json.loads(p.stdout or "{}")
        if "error" in out or p.returncode != 0:
            raise RuntimeError(f"iperf3 to {target}: {out.get('error') or p.stderr.strip()}")
        return out["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.kill()
        srv.wait()


def section_throughput(args, lab: ClusterLab) -> dict:
    a, b = lab.hosts[0], lab.hosts[1]
    ctr_a, ctr_b = f"/proc/{pid_of(lab, 0, 'tp-a')}/ns/net", f"/proc/{pid_of(lab, 1, 'tp-b')}/ns/net"
    ip_b = ip_of(lab, 1, "tp-b")
    rows = {"underlay": [], "overlay": []}
    for r in range(args.tp_runs):  # interleaved rounds: load on the machine reaches both alike
        rows["underlay"].append(iperf(f"/run/netns/{b.name}", f"/run/netns/{a.name}", b.address, args.tp_seconds))
        rows["overlay"].append(iperf(ctr_b, ctr_a, ip_b, args.tp_seconds))
        log(f"throughput round {r + 1}: underlay {rows['underlay'][-1]:.2f} Gbit/s, overlay {rows['overlay'][-1]:.2f} Gbit/s")
    out = {k: stats(v) for k, v in rows.items()}
    out["ratio"] = round(out["overlay"]["median"] / out["underlay"]["median"], 3)
    out["round_ratios"] = [round(o / u, 3) for o, u in zip(rows["overlay"], rows["underlay"])]
    out["met"] = out["ratio"] >= 0.7
    return out


# -- 2. convergence --------------------------------------------------------------------------------------
def section_convergence(args, lab: ClusterLab) -> dict:
    src = f"/proc/{pid_of(lab, 0, 'tp-a')}/ns/net"
    samples = []
    for r in range(args.runs):
        name = f"conv{r}"
        nd(lab, 1, "run", "-d", "--name", name, "--network", "ov", "busybox", "sleep", "600")
        returned = time.monotonic()
        ip = ip_of(lab, 1, name)  # part of the timed span: a user would look the address up too
        while True:
            p = subprocess.run(["ping", "-n", "-c", "1", "-W", "0.1", ip], capture_output=True, preexec_fn=ns.enter(src))
            if p.returncode == 0:
                break
            if time.monotonic() - returned > 10:
                raise RuntimeError(f"{name} never became reachable from host A")
        samples.append(time.monotonic() - returned)
        nd(lab, 1, "rm", "-f", name)
        log(f"convergence run {r + 1}: {samples[-1] * 1000:.0f} ms")
    out = stats(samples)
    out["met"] = out["max"] < 1.0
    return out


# -- 3. attach with N remote endpoints -------------------------------------------------------------------
def register_remote(lab: ClusterLab, host: int, count: int, start: int) -> None:
    """`count` endpoints on network ov, on host `host`'s lease, as an attach there writes them."""
    from runtime.cluster import alloc, keys, local
    from runtime.cluster.store import Store

    env = {"NETDIAG_ROOT": str(lab.hosts[host].state_dir)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with ns.netns(f"/run/netns/{lab.hosts[host].name}"):
            member = local.require()
            store = Store(member["store"])
            found, _ = store.prefix(keys.NETWORKS)
            net = next(v for _, v, _ in found if isinstance(v, dict) and v.get("Name") == "ov")
            for i in range(start, start + count):
                cid = f"{i:064x}"
                alloc.claim_address(store, net, {"id": f"{i + 1:064x}", "container": cid, "name": f"remote{i}",
                                                 "host": member["host"], "aliases": []}, None, int(member["lease"]))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def time_attach(lab: ClusterLab, runs: int) -> list[float]:
    samples = []
    for r in range(runs + 1):
        t0 = time.perf_counter()
        nd(lab, 0, "run", "-d", "--name", f"att{r}", "--network", "ov", "busybox", "sleep", "600")
        elapsed = time.perf_counter() - t0
        nd(lab, 0, "rm", "-f", f"att{r}")
        if r:  # the first one warms the image and caches
            samples.append(elapsed)
    return samples


def fdb_count(lab: ClusterLab) -> int:
    with ns.netns(f"/run/netns/{lab.hosts[0].name}"):
        from runtime.kernel import link, neigh

        vx = [lk["index"] for lk in link.dump() if lk["kind"] == "vxlan"]
        return sum(1 for f in neigh.fdb() if f["ifindex"] in vx and f["dst"])


def section_attach(args, lab: ClusterLab) -> dict:
    nd(lab, 0, "rm", "-f", "tp-a")  # host A keeps no endpoint: each timed attach makes its sandbox
    register_remote(lab, 2, 1, 0)  # with tp-b on host B: 2 remote endpoints
    small = time_attach(lab, args.runs)
    register_remote(lab, 2, args.remote - 2, 1)
    nd(lab, 0, "run", "-d", "--name", "probe", "--network", "ov", "busybox", "sleep", "600")
    programmed = fdb_count(lab)
    nd(lab, 0, "rm", "-f", "probe")
    big = time_attach(lab, args.runs)
    out = {"attach@2": stats(small), f"attach@{args.remote}": stats(big), "fdb_entries_programmed": programmed}
    out["ratio"] = round(out[f"attach@{args.remote}"]["median"] / out["attach@2"]["median"], 3)
    out["met"] = out["ratio"] < 2.0 and programmed == args.remote
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="timed runs for convergence and attach (default 10)")
    ap.add_argument("--tp-seconds", type=float, default=5)
    ap.add_argument("--tp-runs", type=int, default=3)
    ap.add_argument("--remote", type=int, default=200, help="remote endpoints for the big attach (default 200)")
    ap.add_argument("--json", help="write every sample and verdict to this file")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_overlay: needs root (namespaces, cgroups)", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    work = Path(tempfile.mkdtemp(prefix="ndbo-"))
    lab = ClusterLab(hosts=3, state_dir=work / "lab")
    results: dict = {"load_before": os.getloadavg()}
    rc = 0
    try:
        log("building the cluster lab (3 hosts, etcd)")
        lab.create()
        lab.join_all()
        nd(lab, 0, "network", "create", "-d", "overlay", "ov")
        nd(lab, 0, "run", "-d", "--name", "tp-a", "--network", "ov", "busybox", "sleep", "3600")
        nd(lab, 1, "run", "-d", "--name", "tp-b", "--network", "ov", "busybox", "sleep", "3600")
        results["throughput"] = section_throughput(args, lab)
        results["convergence"] = section_convergence(args, lab)
        results["attach"] = section_attach(args, lab)
    except Interrupted as e:
        log(f"interrupted ({e}): cleaning up")
        rc = 130
    except Exception as e:  # noqa: BLE001 - reported, then the cleanup runs
        log(f"error: {e}")
        rc = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        lab.destroy()
        left = lab.leaks()
        try:
            work.rmdir()
        except OSError:
            left.append(str(work))
        if left:
            print("LEFT BEHIND: " + "; ".join(left), file=sys.stderr)
            rc = 3
    results["load_after"] = os.getloadavg()
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return rc


def report(r: dict, args) -> None:
    def verdict(ok):
        return "MET" if ok else "NOT MET"

    if "throughput" in r:
        t = r["throughput"]
        print(f"throughput (iperf3 TCP, {args.tp_runs} x {args.tp_seconds:g} s): overlay {t['overlay']['median']:.2f} Gbit/s, "
              f"underlay {t['underlay']['median']:.2f} Gbit/s: {t['ratio']}x (rounds {t['round_ratios']}), goal >= 0.7x: {verdict(t['met'])}")
    if "convergence" in r:
        c = r["convergence"]
        print(f"new remote endpoint reachable: median {c['median'] * 1000:.0f} ms, max {c['max'] * 1000:.0f} ms over {c['runs']} runs, "
              f"goal < 1 s: {verdict(c['met'])}")
    if "attach" in r:
        a = r["attach"]
        big = f"attach@{args.remote}"
        print(f"attach (cold CLI run -d, sandbox made, all remote endpoints programmed): @2 {a['attach@2']['median'] * 1000:.0f} ms, "
              f"@{args.remote} {a[big]['median'] * 1000:.0f} ms ({a['fdb_entries_programmed']} FDB entries): {a['ratio']}x, "
              f"goal < 2x: {verdict(a['met'])}")
    print(f"load average before {r['load_before'][0]:.2f}, after {r['load_after'][0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
