#!/usr/bin/env python3
"""Bridge networking like Docker's: what netdiag's bridge networks cost, against references
measured in the same run.

1. start:      `netdiag run --rm busybox true` on the default bridge, against `--network none`
               (the network's own cost), against a shell script doing the same veth/bridge/netns
               steps with `ip` (the floor), and against `docker run --rm` on Docker's default
               bridge (a private dockerd). Goal: netdiag bridge run <= 0.40x Docker (issue 24; it was 0.5x).
2. publish:    `netdiag run -d -p 20000-20999:20000-20999` against `-p 8080:80`. Goal: <= 1.5x.
3. attach:     `netdiag run -d --network benchnet` with 500 containers already on the network
               against 10. Goal: <= 2x.
4. throughput: container->container over the bridge and outside->container through a published
               port, against a direct veth pair between two plain namespaces (iperf3 if
               installed, else a Python socket pump). Goal: >= 0.85x.

Everything runs in throwaway namespaces: a netdiag Lab (netdiag/worlds/host.py) for netdiag, a second
Lab for the private dockerd (Docker's default networking: docker0, iptables, forwarding and
masquerade, all inside that lab's netns), and plain namespaces for the references. Nothing in the
root network namespace changes: its links, addresses, routes, rules and nft ruleset are compared
before and after. Everything is removed at the end, also on failure or Ctrl-C.

    .venv/bin/python bench/bench_network.py [--runs N] [--docker auto|yes|no] [--json FILE]

Needs root. The helpers (timing, private dockerd, process/mount/cgroup cleanup) come from
bench/run_bench.py.
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

import run_bench as rb  # noqa: E402  (helpers shared with the cold-CLI bench)
from nd_lab import NdLab  # noqa: E402
from netdiag.worlds import HOST_IP, Lab, fresh_sysctls# noqa: E402

GOAL_START = 0.40       # netdiag bridge run <= 0.40 x docker bridge run (issue 24; it was 0.5)
GOAL_PUBLISH = 1.5      # 1000-port range <= 1.5 x one port
GOAL_ATTACH = 2.0       # attach at 500 <= 2 x attach at 10
GOAL_THROUGHPUT = 0.85  # bridge / published >= 0.85 x direct veth

FLOOR_BRIDGE, FLOOR_NET = "ndfloor0", "198.18.0"   # RFC 2544 benchmarking range, never routed
REF_NET = "198.19.0"
TP_PORT = 5201
CTR_MEM_GUESS_KB = 40 * 1024     # per container (its monitor is a forked CLI): used to keep a reserve
MEM_RESERVE_KB = 3 * 1024 * 1024  # stop growing the network when less than this would be left
RUN_TIMEOUT = 120.0               # one CLI command; a hang is reported, never waited out


def log(msg: str) -> None:
    rb.log(msg)


_MAIN_PID = os.getpid()


def _on_signal(signum, _frame):
    """run_bench's handler (raise, so every `finally` runs), but only in this process: pyroute2
    (used by Lab) forks helpers that inherit Python signal handlers and stops them with SIGTERM.
    A helper that raised would unwind through main() and run the cleanup from inside a lab."""
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise rb.Interrupted(f"interrupted by {signal.Signals(signum).name}")


# ----------------------------------------------------------------------------- measuring

class Series(rb.Bench):
    """A row: one command run cold, timed; optionally followed by an untimed step (e.g. rm -f of
    the container it started) that gets the command's stdout."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, after=None):
        super().__init__(name, argv, env)
        self.after = after
        self.after_ms: list[float] = []

    def _one(self) -> float:
        t0 = time.perf_counter()
        p = subprocess.run(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=RUN_TIMEOUT)
        dt = (time.perf_counter() - t0) * 1000
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).decode(errors="replace").strip()[-800:]
            raise RuntimeError(f"{' '.join(self.argv)} exited {p.returncode}: {tail}")
        if self.after is not None:
            t1 = time.perf_counter()
            self.after(p.stdout.decode().strip())
            self.after_ms.append((time.perf_counter() - t1) * 1000)
        return dt

    def warm(self, n: int) -> None:
        for i in range(n):
            dt = self._one()
            if i == 0:
                self.first_ms = dt

    def timed(self) -> None:
        self.samples.append(self._one())

    def stats(self) -> dict:
        s = super().stats()
        if self.after_ms:
            s["untimed_after_median_ms"] = round(statistics.median(self.after_ms), 2)
        return s


def round_robin(rows: list[Series], runs: int, warmup: int) -> dict[str, dict]:
    """Warm-ups per row, then `runs` rounds running every row once (drift hits all rows alike)."""
    for r in rows:
        log(f"  {r.name}: {warmup} warm-up run(s)")
        r.warm(warmup)
    log(f"  timing {runs} round(s) of {', '.join(r.name for r in rows)}")
    for _ in range(runs):
        for r in rows:
            r.timed()
    return {r.name: r.stats() for r in rows}


def fmt_table(stats: dict[str, dict], notes: dict[str, str] | None = None) -> str:
    notes = notes or {}
    w = max(12, *(len(n) for n in stats))
    lines = [f"{'row':<{w}} {'runs':>5} {'median ms':>10} {'p90 ms':>9} {'min ms':>8} {'first ms':>9}  what"]
    for name, s in stats.items():
        first = f"{s['first_run_ms']:.1f}" if s.get("first_run_ms") is not None else "-"
        lines.append(f"{name:<{w}} {s['runs']:>5} {s['median_ms']:>10.1f} {s['p90_ms']:>9.1f} {s['min_ms']:>8.1f} "
                     f"{first:>9}  {notes.get(name, '')}")
    return "\n".join(lines)


def verdict(met: bool | None, text: str) -> str:
    word = "n/a" if met is None else ("MET" if met else "NOT MET")
    line = f"verdict: {word} - {text}"
    print(line)
    return word


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- root netns guard

_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")


def root_snapshot() -> dict[str, str]:
    """The root network namespace as this bench must leave it: links, addresses, routes, rules
    (run_bench's snapshot), the whole nft ruleset, and the legacy iptables tables present."""
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
    legacy = Path("/proc/net/ip_tables_names")
    return {
        "ip": rb.root_netns_snapshot(),
        "nft": _COUNTERS.sub("counter", nft.stdout) if nft.returncode == 0 else f"(nft failed: {nft.stderr.strip()})",
        "ip_tables_names": legacy.read_text() if legacy.exists() else "",
    }


def snapshot_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    out = []
    for key in before:
        if before[key] != after.get(key):
            diff = difflib.unified_diff(before[key].splitlines(), after.get(key, "").splitlines(), "before", "after",
                                        lineterm="", n=0)
            out.append(f"root netns {key} CHANGED:\n" + "\n".join(list(diff)[:40]))
    return out


# ----------------------------------------------------------------------------- the netdiag lab

# ----------------------------------------------------------------------------- docker

class BridgeDockerd(rb.PrivateDockerd):
    """run_bench's private dockerd, but with Docker's default networking (docker0 on 172.17.0.0/16,
    iptables, ip forwarding, masquerade, userland proxy). It runs inside its own Lab netns, so the
    bridge, the veths and every iptables rule it makes live and die with that namespace."""

    networking = True



def setup_docker(args, dk_lab: Lab, work: Path, cgroup: str, status: dict) -> BridgeDockerd | None:
    if args.docker == "no":
        status["reason"] = "skipped (--docker no)"
        return None
    dockerd_bin = rb.find_dockerd()
    if dockerd_bin is None and args.docker == "yes":
        try:
            rb.install_docker()
        except (subprocess.CalledProcessError, OSError) as e:
            status["reason"] = f"installing docker.io failed: {e}"
        dockerd_bin = rb.find_dockerd()
    if dockerd_bin is None:
        status.setdefault("reason", "dockerd not installed (use --docker yes to install docker.io)")
        return None
    cli = rb.find_docker_cli(dockerd_bin)
    if cli is None:
        status["reason"] = "no docker CLI found"
        return None
    dk = BridgeDockerd(dockerd_bin, cli, dk_lab.name, work, cgroup)
    try:
        log(f"docker: starting a private dockerd (default bridge, iptables on) in netns {dk_lab.name}")
        dk.start()
        dk.import_busybox("bbox:bench")
        status.update(used=True, dockerd=dockerd_bin, cli=cli, server_version=dk.server_version,
                      client_version=dk.client_version,
                      netns=dk_lab.name)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        status["reason"] = str(e)
        return dk  # still returned: cleanup must stop it
    return dk


# ----------------------------------------------------------------------------- section 1: start

def floor_script(lab: Lab) -> str:
    """What a bridge network does for a container, by hand with `ip`, as one shell script: a netns,
    a veth born with its peer inside it, the host end on a bridge, address, up, default route, run
    `true` in it, delete it. Names carry $$ so a namespace still being freed never collides."""
    return (f"set -e; ns={lab.name}-f$$; v=vfl$$\n"
            "ip netns add $ns\n"
            "ip link add $v type veth peer name eth0 netns $ns\n"
            f"ip link set $v master {FLOOR_BRIDGE} up\n"
            f"ip -n $ns addr add {FLOOR_NET}.2/24 dev eth0\n"
            "ip -n $ns link set eth0 up\n"
            "ip -n $ns link set lo up\n"
            f"ip -n $ns route add default via {FLOOR_NET}.1\n"
            "ip netns exec $ns true\n"
            "ip netns del $ns\n")


def section_start(args, ctx: NdLab, dk: BridgeDockerd | None, dk_lab: Lab | None) -> dict:
    log("[1/4] start: netdiag run --rm busybox true, bridge vs none vs ip floor vs docker")
    ctx.sh(f"ip link add {FLOOR_BRIDGE} type bridge && ip addr add {FLOOR_NET}.1/24 dev {FLOOR_BRIDGE} "
           f"&& ip link set {FLOOR_BRIDGE} up")
    rows = [
        Series("nd-bridge", ctx.argv("run", "--rm", "busybox", "true"), ctx.lab.env),
        Series("nd-none", ctx.argv("run", "--rm", "--network", "none", "busybox", "true"), ctx.lab.env),
        Series("ip-floor", ctx.enter + ["sh", "-c", floor_script(ctx.lab)]),
    ]
    notes = {"nd-bridge": "netdiag run --rm busybox true (default bridge docker0)",
             "nd-none": "netdiag run --rm --network none busybox true",
             "ip-floor": "ip netns add; veth; master bridge; addr; up; route; ip netns exec true; netns del"}
    if dk is not None and dk_lab is not None:
        enter = ["nsenter", f"--net=/run/netns/{dk_lab.name}", "--"]
        rows.append(Series("docker-bridge", enter + dk.docker("run", "--rm", "bbox:bench", "true"), dk.cli_env()))
        rows.append(Series("docker-none", enter + dk.docker("run", "--rm", "--network", "none", "bbox:bench", "true"),
                           dk.cli_env()))
        notes["docker-bridge"] = f"docker run --rm busybox true (Docker {dk.server_version}, its default bridge)"
        notes["docker-none"] = "docker run --rm --network none (for Docker's own network cost)"
    load0 = loadavg()
    stats = round_robin(rows, args.runs, args.warmup)
    med = {k: v["median_ms"] for k, v in stats.items()}
    ratios = {
        "nd-bridge/nd-none": round(med["nd-bridge"] / med["nd-none"], 3),
        "nd-bridge/ip-floor": round(med["nd-bridge"] / med["ip-floor"], 2),
        "nd network cost ms (bridge - none)": round(med["nd-bridge"] - med["nd-none"], 1),
        "nd network cost / ip-floor": round((med["nd-bridge"] - med["nd-none"]) / med["ip-floor"], 2),
    }
    if "docker-bridge" in med:
        ratios["nd-bridge/docker-bridge"] = round(med["nd-bridge"] / med["docker-bridge"], 3)
        ratios["docker network cost ms (bridge - none)"] = round(med["docker-bridge"] - med["docker-none"], 1)
    print()
    print(f"== 1. start on a bridge: {args.runs} rounds after {args.warmup} warm-up(s) "
          f"(load {load0[0]} -> {loadavg()[0]})")
    print(fmt_table(stats, notes))
    for k, v in ratios.items():
        print(f"  {k}: {v}")
    if "docker-bridge" in med:
        met = med["nd-bridge"] <= GOAL_START * med["docker-bridge"]
        word = verdict(met, f"goal netdiag bridge run <= {GOAL_START} x docker bridge run: "
                            f"{med['nd-bridge']:.1f} ms vs {GOAL_START * med['docker-bridge']:.1f} ms "
                            f"({ratios['nd-bridge/docker-bridge']:.2f}x)")
    else:
        met = None
        word = verdict(None, f"goal netdiag bridge run <= {GOAL_START} x docker needs Docker")
    return {"results": stats, "ratios": ratios, "load_start": load0, "load_end": loadavg(),
            "goal": {"rule": f"nd-bridge median <= {GOAL_START} x docker-bridge median", "met": met,
                     "verdict": word}}


# ----------------------------------------------------------------------------- section 2: publish

def section_publish(args, ctx: NdLab) -> dict:
    log("[2/4] publish: run -d -p 20000-20999:20000-20999 vs -p 8080:80 (rm -f after each, untimed)")

    def rm(cid: str) -> None:
        ctx.nd("rm", "-f", cid)

    rows = [
        Series("p-none", ctx.argv("run", "-d", "busybox", "sleep", "60"), ctx.lab.env, rm),
        Series("p-one", ctx.argv("run", "-d", "-p", "8080:80", "busybox", "sleep", "60"), ctx.lab.env, rm),
        Series("p-range1000", ctx.argv("run", "-d", "-p", "20000-20999:20000-20999", "busybox", "sleep", "60"),
               ctx.lab.env, rm),
    ]
    notes = {"p-none": "run -d busybox sleep 60 (bridge, nothing published)",
             "p-one": "run -d -p 8080:80 busybox sleep 60",
             "p-range1000": "run -d -p 20000-20999:20000-20999 busybox sleep 60"}
    load0 = loadavg()
    stats = round_robin(rows, args.runs, args.warmup)
    med = {k: v["median_ms"] for k, v in stats.items()}
    ratios = {"p-range1000/p-one": round(med["p-range1000"] / med["p-one"], 3),
              "p-one/p-none": round(med["p-one"] / med["p-none"], 3)}
    print()
    print(f"== 2. publishing 1000 ports vs 1: {args.runs} rounds after {args.warmup} warm-up(s) "
          f"(load {load0[0]} -> {loadavg()[0]})")
    print(fmt_table(stats, notes))
    for k, v in ratios.items():
        print(f"  {k}: {v}")
    met = med["p-range1000"] <= GOAL_PUBLISH * med["p-one"]
    word = verdict(met, f"goal 1000-port range <= {GOAL_PUBLISH} x one port: {med['p-range1000']:.1f} ms vs "
                        f"{GOAL_PUBLISH * med['p-one']:.1f} ms ({ratios['p-range1000/p-one']:.2f}x)")
    return {"results": stats, "ratios": ratios, "load_start": load0, "load_end": loadavg(),
            "goal": {"rule": f"p-range1000 median <= {GOAL_PUBLISH} x p-one median", "met": met, "verdict": word}}


# ----------------------------------------------------------------------------- section 3: attach

def start_many(ctx: NdLab, n: int, prefix: str, workers: int = 4, batch: int = 25) -> tuple[list[str], str]:
    """Start n `sleep 3600` containers on benchnet in parallel batches. Stops early (and says why)
    when the memory left would drop under the reserve: each container's monitor is a forked CLI.

    They get names (PREFIX-i): netdiag's generated names are 20 adjectives x 20 nouns, and with 400
    unnamed containers `run` loops forever looking for a free one (under the names lock)."""
    ids: list[str] = []
    why = ""
    ex = ThreadPoolExecutor(workers)
    try:
        while len(ids) < n:
            k = min(batch, n - len(ids))
            avail = mem_available_kb()
            if avail - k * CTR_MEM_GUESS_KB < MEM_RESERVE_KB:
                why = (f"stopped after starting {len(ids)} of {n}: MemAvailable {avail // 1024} MiB would drop "
                       f"under the {MEM_RESERVE_KB // 1024} MiB reserve")
                log(f"  {why}")
                break
            res = list(ex.map(lambda i: ctx.nd("run", "-d", "--name", f"{prefix}-{i}", "--network", "benchnet",
                                                "busybox", "sleep", "3600", check=False, timeout=RUN_TIMEOUT),
                              range(len(ids), len(ids) + k)))
            bad = [r for r in res if r.returncode != 0]
            ids += [r.stdout.strip() for r in res if r.returncode == 0]
            if bad:
                raise RuntimeError(f"starting containers on benchnet: {len(bad)} failed: "
                                   f"{bad[0].stderr.strip()[-400:]}")
            if len(ids) % 100 == 0 or len(ids) == n:
                log(f"  {len(ids)}/{n} started (MemAvailable {mem_available_kb() // 1024} MiB)")
    finally:
        ex.shutdown(wait=True, cancel_futures=True)  # on ^C: only the (at most 4) running CLIs are waited for
    return ids, why


def section_attach(args, ctx: NdLab) -> dict:
    small, big = args.attach_small, args.attach_size
    log(f"[3/4] attach: one more container on benchnet with {big} vs {small} already on it")
    ctx.nd("network", "create", "benchnet")
    # On an error or ^C, main()'s cleanup destroys the lab, which kills everything in it at once:
    # quicker than `rm -f` of hundreds of containers, so the orderly removal is on the way out only.
    t0 = time.perf_counter()
    base, _ = start_many(ctx, small, "bnbase")
    mem0 = mem_available_kb()

    def rm(cid: str) -> None:
        ctx.nd("rm", "-f", cid)

    argv = ctx.argv("run", "-d", "--network", "benchnet", "busybox", "sleep", "600")
    load0 = loadavg()
    at_small = Series(f"attach@{small}", argv, ctx.lab.env, rm)
    round_robin([at_small], args.runs, args.warmup)

    log(f"  growing benchnet to {big} containers")
    t1 = time.perf_counter()
    grown, stopped = start_many(ctx, big - small, "bnfill")
    grow_s = time.perf_counter() - t1
    size = small + len(grown)
    mem1 = mem_available_kb()
    per_ctr_mb = (mem0 - mem1) / 1024 / max(1, len(grown))
    at_big = Series(f"attach@{size}", argv, ctx.lab.env, rm)
    round_robin([at_big], args.runs, args.warmup)

    log(f"  removing the {len(grown)} extra containers (netdiag rm -f, 50 per call)")
    t2 = time.perf_counter()
    ctx.rm(grown)
    shrink_s = time.perf_counter() - t2
    at_small2 = Series(f"attach@{small}-again", argv, ctx.lab.env, rm)
    round_robin([at_small2], args.runs, args.warmup)
    setup_s = time.perf_counter() - t0
    ctx.rm(base)
    ctx.nd("network", "rm", "benchnet")
    left = ctx.ps_ids()
    stats = {s.name: s.stats() for s in (at_small, at_big, at_small2)}
    pooled = at_small.samples + at_small2.samples
    small_med = statistics.median(pooled)
    big_med = stats[at_big.name]["median_ms"]
    ratios = {f"attach@{size}/attach@{small}": round(big_med / small_med, 3),
              f"attach@{small}-again/attach@{small} (drift)": round(
                  stats[at_small2.name]["median_ms"] / stats[at_small.name]["median_ms"], 3)}
    notes = {at_small.name: f"run -d --network benchnet busybox sleep 600, {small} already on it",
             at_big.name: f"the same with {size} already on it",
             at_small2.name: f"the same back at {small}, after removing the others (drift check)"}
    print()
    print(f"== 3. attaching to a network with {size} containers vs {small}: {args.runs} runs after "
          f"{args.warmup} warm-up(s) at each size (load {load0[0]} -> {loadavg()[0]})")
    print(fmt_table(stats, notes))
    print(f"  growing {small} -> {size}: {grow_s:.0f} s with 4 CLIs in parallel; about {per_ctr_mb:.1f} MiB of memory "
          f"per container; removing {size - small}: {shrink_s:.0f} s")
    if stopped:
        print(f"  NOTE: {stopped}")
    for k, v in ratios.items():
        print(f"  {k}: {v}")
    met = big_med <= GOAL_ATTACH * small_med
    word = verdict(met, f"goal attach with {size} <= {GOAL_ATTACH} x attach with {small}: {big_med:.1f} ms vs "
                        f"{GOAL_ATTACH * small_med:.1f} ms ({big_med / small_med:.2f}x; the {small} side pools "
                        f"both runs at {small}, median {small_med:.1f} ms)")
    print(f"  containers left in the lab after the section: {len(left)}")
    return {"results": stats, "ratios": ratios, "size_reached": size, "size_wanted": big, "stopped_early": stopped,
            "grow_seconds": round(grow_s, 1), "shrink_seconds": round(shrink_s, 1),
            "section_seconds": round(setup_s, 1),
            "memory_per_container_mib": round(per_ctr_mb, 1), "small_pooled_median_ms": round(small_med, 2),
            "left_after": left, "load_start": load0, "load_end": loadavg(),
            "goal": {"rule": f"attach@{size} median <= {GOAL_ATTACH} x attach@{small} median", "met": met,
                     "verdict": word}}


# ----------------------------------------------------------------------------- section 4: throughput

PUMP = r"""
import json, socket, struct, sys, time
if sys.argv[1] == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1)
    print("listening", flush=True)
    c, _ = s.accept(); buf = bytearray(1 << 20); n = 0
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        n += k
    c.sendall(struct.pack("!Q", n)); c.close()
else:
    host, port, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    c = socket.create_connection((host, port), timeout=10); data = b"\0" * (1 << 20)
    t0 = time.perf_counter(); end = t0 + secs
    while time.perf_counter() < end:
        c.sendall(data)
    c.shutdown(socket.SHUT_WR); got = b""
    while len(got) < 8:
        more = c.recv(8 - len(got))
        if not more:
            raise SystemExit("server closed early")
        got += more
    n = struct.unpack("!Q", got)[0]; dt = time.perf_counter() - t0
    print(json.dumps({"bytes": n, "seconds": dt, "bits_per_second": n * 8 / dt}))
"""


class Pump:
    """One throughput test: a server in one network namespace, a client in another."""

    def __init__(self, tool: str, seconds: float, procs: list[subprocess.Popen]):
        self.tool, self.seconds, self.procs = tool, seconds, procs

    def _server_argv(self) -> list[str]:
        if self.tool == "iperf3":
            return ["iperf3", "-s", "-1", "-p", str(TP_PORT), "--forceflush"]
        return [sys.executable, "-c", PUMP, "server", str(TP_PORT)]

    def _client_argv(self, host: str) -> list[str]:
        if self.tool == "iperf3":
            return ["iperf3", "-c", host, "-p", str(TP_PORT), "-t", f"{self.seconds:g}", "-J",
                    "--connect-timeout", "5000"]
        return [sys.executable, "-c", PUMP, "client", host, str(TP_PORT), str(self.seconds)]

    def run(self, server_ns: str, client_ns: str, host: str) -> float:
        """Gbit/s received by the server. server_ns/client_ns are paths to netns files."""
        srv = subprocess.Popen(["nsenter", f"--net={server_ns}", "--", *self._server_argv()], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.procs.append(srv)
        try:
            deadline = time.monotonic() + 10
            while True:  # wait until it listens
                line = srv.stdout.readline()
                if "listening" in line.lower():
                    break
                if not line or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.tool} server in {server_ns} did not start: {line.strip()}")
            cli = subprocess.run(["nsenter", f"--net={client_ns}", "--", *self._client_argv(host)],
                                 capture_output=True, text=True, timeout=self.seconds + 30)
            if cli.returncode != 0:
                raise RuntimeError(f"{self.tool} client {client_ns} -> {host} exited {cli.returncode}: "
                                   f"{(cli.stderr or cli.stdout).strip()[-400:]}")
            out = json.loads(cli.stdout)
            if self.tool == "iperf3":
                if "error" in out:
                    raise RuntimeError(f"iperf3: {out['error']}")
                bps = out["end"]["sum_received"]["bits_per_second"]
            else:
                bps = out["bits_per_second"]
            srv.wait(10)
            return bps / 1e9
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait()
            srv.stdout.close()
            self.procs.remove(srv)


def make_refs(lab: Lab) -> dict[str, str]:
    """The references, each in plain namespaces of its own (no nftables, so no conntrack):
    LAB-ra <-veth-> LAB-rb, and LAB-rc, LAB-rd each on a veth to a bridge in LAB-rh. Every link
    is made from inside one of these namespaces."""
    ns = {k: f"{lab.name}-r{k}" for k in "abcdh"}
    for name in ns.values():
        subprocess.run(["ip", "netns", "add", name], check=True)
        fresh_sysctls(f"/run/netns/{name}")  # a lab's explicit sysctls, not the machine's
    a, b, c, d, h = (ns[k] for k in "abcdh")
    cmds = [["ip", "-n", a, "link", "add", "ra0", "type", "veth", "peer", "name", "rb0", "netns", b],
            ["ip", "-n", a, "addr", "add", f"{REF_NET}.1/24", "dev", "ra0"],
            ["ip", "-n", b, "addr", "add", f"{REF_NET}.2/24", "dev", "rb0"],
            ["ip", "-n", h, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", h, "link", "add", "hc0", "type", "veth", "peer", "name", "eth0", "netns", c],
            ["ip", "-n", h, "link", "add", "hd0", "type", "veth", "peer", "name", "eth0", "netns", d],
            ["ip", "-n", h, "link", "set", "hc0", "master", "br0"],
            ["ip", "-n", h, "link", "set", "hd0", "master", "br0"],
            ["ip", "-n", c, "addr", "add", f"{REF_NET}.11/24", "dev", "eth0"],
            ["ip", "-n", d, "addr", "add", f"{REF_NET}.12/24", "dev", "eth0"]]
    ups = [(a, "ra0"), (b, "rb0"), (h, "br0"), (h, "hc0"), (h, "hd0"), (c, "eth0"), (d, "eth0")]
    cmds += [["ip", "-n", n, "link", "set", dev, "up"] for n, dev in ups]
    cmds += [["ip", "-n", n, "link", "set", "lo", "up"] for n in ns.values()]
    for cmd in cmds:
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return ns


def section_throughput(args, ctx: NdLab, procs: list[subprocess.Popen]) -> dict:
    tool = "iperf3" if (shutil.which("iperf3") and not args.no_iperf3) else "python"
    log(f"[4/4] throughput with {tool}, {args.tp_seconds:g} s per test, {args.tp_runs} round(s)")
    refs: dict[str, str] = {}
    try:
        refs = make_refs(ctx.lab)
        srv_id = ctx.nd("run", "-d", "--name", "tp-srv", "-p", f"{TP_PORT}:{TP_PORT}", "busybox", "sleep",
                        "3600").stdout.strip()
        cli_id = ctx.nd("run", "-d", "--name", "tp-cli", "busybox", "sleep", "3600").stdout.strip()
        srv, cli = ctx.inspect(srv_id), ctx.inspect(cli_id)
        srv_ns, cli_ns = f"/proc/{srv['State']['Pid']}/ns/net", f"/proc/{cli['State']['Pid']}/ns/net"
        srv_ip = srv["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        pump = Pump(tool, args.tp_seconds, procs)
        tests = {
            "veth": (f"/run/netns/{refs['a']}", f"/run/netns/{refs['b']}", f"{REF_NET}.1",
                     "direct veth pair between two plain namespaces (reference of the goal)"),
            "plain-bridge": (f"/run/netns/{refs['c']}", f"/run/netns/{refs['d']}", f"{REF_NET}.11",
                             "veth - bridge - veth in plain namespaces, no firewall (diagnostic)"),
            "bridge-c2c": (srv_ns, cli_ns, srv_ip, f"container -> container over docker0 ({srv_ip})"),
            "published": (srv_ns, f"/run/netns/{ctx.lab.outside}", HOST_IP,
                          f"outside ns -> {HOST_IP}:{TP_PORT} -p {TP_PORT}:{TP_PORT} -> container"),
        }
        samples: dict[str, list[float]] = {k: [] for k in tests}
        load0 = loadavg()
        for r in range(args.tp_runs):
            for name, (sns, cns, host, _) in tests.items():
                gbps = pump.run(sns, cns, host)
                samples[name].append(gbps)
                log(f"  round {r + 1}: {name} {gbps:.2f} Gbit/s")
    finally:
        ctx.nd("rm", "-f", "tp-srv", "tp-cli", check=False)
        for ns in refs.values():
            rb.netns_del(ns)
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {"bridge-c2c/veth": round(med["bridge-c2c"] / med["veth"], 3),
              "published/veth": round(med["published"] / med["veth"], 3),
              "plain-bridge/veth": round(med["plain-bridge"] / med["veth"], 3),
              "bridge-c2c/plain-bridge": round(med["bridge-c2c"] / med["plain-bridge"], 3)}
    print()
    print(f"== 4. throughput ({tool}, {args.tp_seconds:g} s per test, {args.tp_runs} round(s), median; "
          f"load {load0[0]} -> {loadavg()[0]})")
    print(f"{'path':<12} {'Gbit/s':>8} {'min':>7} {'max':>7}  what")
    for name, (_, _, _, what) in tests.items():
        print(f"{name:<12} {med[name]:>8.2f} {min(samples[name]):>7.2f} {max(samples[name]):>7.2f}  {what}")
    for k, v in ratios.items():
        print(f"  {k}: {v}")
    # rounds are interleaved, so each round's ratio compares paths under the same background load
    paired = {f"{k}/veth per round": [round(x / y, 3) for x, y in zip(samples[k], samples["veth"])]
              for k in tests if k != "veth"}
    for k, v in paired.items():
        print(f"  {k}: {', '.join(f'{x:.2f}' for x in v)} (median {statistics.median(v):.2f})")
    words = {}
    for k in ("bridge-c2c", "published"):
        met = med[k] >= GOAL_THROUGHPUT * med["veth"]
        words[k] = verdict(met, f"goal {k} >= {GOAL_THROUGHPUT} x veth: {med[k]:.2f} vs "
                                f"{GOAL_THROUGHPUT * med['veth']:.2f} Gbit/s ({med[k] / med['veth']:.2f}x)")
    return {"tool": tool, "seconds": args.tp_seconds, "rounds": args.tp_runs,
            "gbit_per_s": {k: {"median": round(med[k], 3), "samples": [round(x, 3) for x in v]}
                           for k, v in samples.items()},
            "ratios": ratios, "paired_ratios": paired, "load_start": load0, "load_end": loadavg(),
            "goals": {k: {"rule": f"{k} median >= {GOAL_THROUGHPUT} x veth median",
                          "met": words[k] == "MET", "verdict": words[k]} for k in words}}


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per row in sections 1-3 (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs per row (default 3)")
    ap.add_argument("--docker", choices=("auto", "yes", "no"), default="auto",
                    help="auto: use Docker if dockerd is installed; yes: install docker.io if missing; no: skip")
    ap.add_argument("--json", metavar="FILE", help="write all the numbers as JSON")
    ap.add_argument("--sections", default="1,2,3,4", help="which sections to run (default 1,2,3,4)")
    ap.add_argument("--attach-size", type=int, default=500, help="containers on the network for the big case (500)")
    ap.add_argument("--attach-small", type=int, default=10, help="containers on the network for the small case (10)")
    ap.add_argument("--tp-seconds", type=float, default=5.0, help="seconds per throughput test (5)")
    ap.add_argument("--tp-runs", type=int, default=5, help="rounds of the four throughput tests (5)")
    ap.add_argument("--no-iperf3", action="store_true", help="use the Python socket pump even if iperf3 is installed")
    args = ap.parse_args(argv)
    sections = {int(s) for s in args.sections.split(",") if s.strip()}
    if args.runs < 1 or args.warmup < 1 or not sections <= {1, 2, 3, 4}:
        ap.error("--runs and --warmup must be at least 1; --sections is a subset of 1,2,3,4")
    if not 1 <= args.attach_small < args.attach_size:
        ap.error("need 1 <= --attach-small < --attach-size")
    if os.geteuid() != 0:
        print("bench_network: needs root (network namespaces, cgroups, dockerd)", file=sys.stderr)
        return 2
    netdiag_bin = str(Path(sys.executable).with_name("netdiag"))
    if not os.access(netdiag_bin, os.X_OK):
        netdiag_bin = shutil.which("netdiag") or ""
    if not netdiag_bin:
        print("bench_network: no netdiag executable beside this Python or on PATH (pip install -e .)", file=sys.stderr)
        return 1

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    tag = f"ndbn-{os.getpid()}"
    lab = Lab(name=tag)
    dk_lab = Lab(name=f"{tag}-dk")
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-work-"))
    dk_cgroup = f"{tag}-docker"
    dockerd: BridgeDockerd | None = None
    docker_status: dict = {"used": False}
    procs: list[subprocess.Popen] = []
    made: list[Lab] = []
    report: dict = {}
    rc = 0
    root_before = None
    leftovers: list[str] = []
    try:
        root_before = root_snapshot()
        log(f"lab: creating {lab.name} (netdiag) and {dk_lab.name} (private dockerd)")
        made.append(lab)
        lab.create()
        ctx = NdLab(lab, netdiag_bin)
        if 1 in sections:
            made.append(dk_lab)
            dk_lab.create()
            dockerd = setup_docker(args, dk_lab, work / "docker", dk_cgroup, docker_status)
        report = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                        "mem_total_mib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)},
            "runs": args.runs, "warmup": args.warmup, "load_start": loadavg(), "docker": docker_status,
        }
        if 1 in sections:
            report["start"] = section_start(args, ctx, dockerd if docker_status.get("used") else None, dk_lab)
        if 2 in sections:
            report["publish"] = section_publish(args, ctx)
        if 3 in sections:
            report["attach"] = section_attach(args, ctx)
        if 4 in sections:
            report["throughput"] = section_throughput(args, ctx, procs)
        report["load_end"] = loadavg()
    except rb.Interrupted as e:
        log(f"bench_network: {e}; cleaning up")
        rc = 130
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        log(f"bench_network: error: {type(e).__name__}: {e}")
        rc = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second ^C must not cut the cleanup short
        leftovers = cleanup(lab, dk_lab, made, work, dockerd, dk_cgroup, procs, root_before)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        if leftovers:
            log("bench_network: LEFT BEHIND: " + "\n  ".join(leftovers))
            rc = rc or 3
        else:
            log("cleanup: labs, reference namespaces, dockerd, processes, mounts, cgroups and temp dirs all gone; "
                "the root network namespace (links, addresses, routes, rules, nft ruleset) is unchanged")
    if report:
        print()
        print("summary:")
        for key in ("start", "publish", "attach"):
            if key in report:
                print(f"  {report[key]['goal']['rule']}: {report[key]['goal']['verdict']}")
        if "throughput" in report:
            for g in report["throughput"]["goals"].values():
                print(f"  {g['rule']}: {g['verdict']}")
    if report and args.json:
        report["cleanup_ok"] = not leftovers
        report["left_behind"] = leftovers
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return rc


def own_netns(lab: Lab) -> list[str]:
    """The floor script's namespaces (LAB-f<pid>) and the throughput references (LAB-ra ... LAB-rh)."""
    pat = re.compile(re.escape(lab.name) + r"-(f\d+|r[abcdh])$")
    d = Path("/run/netns")
    return sorted(p.name for p in d.iterdir() if pat.match(p.name)) if d.is_dir() else []


def cleanup(lab: Lab, dk_lab: Lab, made: list[Lab], work: Path, dockerd: BridgeDockerd | None, dk_cgroup: str,
            procs: list[subprocess.Popen], root_before: dict | None) -> list[str]:
    """Undo everything, in an order that works from any point of failure; returns what is left."""
    left: list[str] = []
    dk_tracked, lab_tracked = rb.Tracked(), rb.Tracked()  # apart: waiting for dockerd's must not wait for the labs'
    dk_tracked.add(rb.pids_mentioning(str(work)))
    for lb in (lab, dk_lab):
        lab_tracked.add(rb.pids_mentioning(str(lb.state_dir)))

    def kill_pumps():
        for p in list(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    def floor_and_refs():
        for name in own_netns(lab):
            rb.netns_del(name)

    def destroy_labs():
        for lb in made:
            lb.destroy()

    steps = [
        ("throughput processes", kill_pumps),
        ("floor/reference namespaces", floor_and_refs),
        ("dockerd", lambda: dockerd and dockerd.stop()),
        ("docker processes", lambda: rb.end_processes(work, dk_tracked)),
        ("labs", destroy_labs),  # kills every monitor, container and resolver the labs know
        ("lab processes", lambda: [rb.end_processes(Path(lb.state_dir), lab_tracked, timeout=5) for lb in made]),
        ("mounts", lambda: rb.unmount_under(work)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as e:  # keep going: every later step still has to run
            left.append(f"{name} cleanup failed: {type(e).__name__}: {e}")
    left += [f"cgroup {d}" for d in rb.remove_cgroup_tree(dk_cgroup)]
    if not rb.mounts_under(work):
        shutil.rmtree(work, ignore_errors=True)
    if dockerd is not None:
        left += [f"path {p}" for p in rb.remove_created(dockerd.host_paths_before)]
    if work.exists():
        left.append(f"dir {work}")
    left += [f"mount {m}" for m in rb.mounts_under(work)]
    for lb in made:
        left += [f"{lb.name}: {x}" for x in lb.leaks()]
    left += [f"netns {name}" for name in own_netns(lab)]
    running = sorted(set(dk_tracked.running()) | set(lab_tracked.running()))
    for d in (work, lab.state_dir, dk_lab.state_dir):
        running = sorted(set(running) | set(rb.pids_mentioning(str(d))))
    if running:
        left.append(f"processes {running}")
    if any(p.poll() is None for p in procs):
        left.append("throughput processes still running")
    if root_before is not None:
        left += snapshot_diff(root_before, root_snapshot())
    return left


if __name__ == "__main__":
    sys.exit(main())
