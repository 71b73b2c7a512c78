#!/usr/bin/env python3
"""Discovery of a kubelet's CNI pods against discovery of netdiag's own containers (issue 22's
figure: 200 CNI pods cost at most 1.3x 200 of netdiag's own), one run, in one lab host:

  A. N netdiag containers (`netdiag run -d --network benchnet busybox sleep`) on a bridge network;
  B. the same lab after they are removed, N pods made as a kubelet's runtime makes them
     (netdiag.worlds.kubelet: a /run/netns/cni-<uuid> namespace, the real bridge/host-local/
     portmap/firewall plugins' ADD, the result in the lab's CNI cache).

What is timed is discovery in-process, in the lab's namespace with its environment:
`netdiag.observe.discover.discover()` (every namespace visible, its owner: netdiag's records, the
CNI cache), the median of R calls after one untimed call. The machine's other namespaces (other
labs) are seen by both phases alike. Prints both medians and the ratio B/A.

    .venv/bin/python bench/bench_cni_pods.py [--count N] [--runs R] [--json FILE]

Needs root and containernetworking-plugins. Exit codes: 0 ok (goal met or not: the verdict is
printed), 1 error, 2 not root, 3 something left behind.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from netdiag.worlds import Lab  # noqa: E402
from netdiag.worlds.kubelet import KubeletPods  # noqa: E402

GOAL_RATIO = 1.3
NET = "benchpods"
PROBE = """
import json, statistics, sys, time
from netdiag.observe import discover
discover.discover([])
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    refs, containers, nets = discover.discover([])
    times.append(time.perf_counter() - t)
print(json.dumps({"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
                  "by_runtime": {r: sum(1 for c in containers if c["runtime"] == r) for r in {c["runtime"] for c in containers}}}))
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def discovery(lab: Lab, runs: int) -> dict:
    p = lab.run_in(None, [sys.executable, "-c", PROBE, str(runs)], env=lab.env, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"the discovery probe failed: {p.stderr.strip()[-600:]}")
    return json.loads(p.stdout)


def netdiag_phase(lab: Lab, count: int, runs: int) -> dict:
    def nd(*args: str):
        p = lab.netdiag(*args, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"netdiag {' '.join(args[:5])}: {p.stderr.strip()[-400:]}")
        return p

    nd("network", "create", "--subnet", "10.211.0.0/22", "benchnet")
    names = [f"c{i}" for i in range(count)]
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda n: nd("run", "-d", "--name", n, "--network", "benchnet", "busybox", "sleep", "86400"), names))
    log(f"A: {count} netdiag containers running")
    try:
        return discovery(lab, runs)
    finally:
        for i in range(0, count, 50):
            nd("rm", "-f", *names[i:i + 50])
        nd("network", "rm", "benchnet")


def cni_phase(lab: Lab, count: int, runs: int) -> dict:
    conf = lab.state_dir / "net.d"
    conf.mkdir(exist_ok=True)
    (conf / f"10-{NET}.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": NET, "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.212.0.0/22"}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(lab.state_dir / "ipam")}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"}]}))
    lab.env["NETDIAG_CNI_CONF_DIR"] = str(conf)
    pods = KubeletPods(lab)
    try:
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda i: pods.add(NET, [f"{20000 + i}:80"]), range(count)))
        log(f"B: {count} CNI pods wired")
        return discovery(lab, runs)
    finally:
        pods.destroy()
        left = pods.leaks()
        if left:
            raise RuntimeError(f"pods left behind: {left}")


def compare(argv, doc: str, make_lab, phase, runtime: str, what: str) -> int:
    """Both phases in one lab (`make_lab(state_dir)`): netdiag's own, then `phase(lab, count, runs)`
    whose endpoints are of `runtime`; prints the ratio against the goal. Shared by the discovery benches."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        log("needs root")
        return 2
    lab = make_lab(Path(tempfile.mkdtemp(prefix=f"ndbench-{runtime}-")) / "root")
    try:
        lab.create()
        own = netdiag_phase(lab, a.count, a.runs)
        other = phase(lab, a.count, a.runs)
    finally:
        lab.destroy()
        shutil.rmtree(lab.state_dir.parent, ignore_errors=True)
    left = lab.leaks()
    found = other["by_runtime"].get(runtime, 0)
    if found != a.count:
        log(f"discovery found {found} of the {a.count} {what}")
        return 1
    ratio = other["median_ms"] / own["median_ms"]
    out = {"count": a.count, "runs": a.runs, "netdiag": own, runtime: other, "ratio": ratio, "goal": GOAL_RATIO,
           "met": ratio <= GOAL_RATIO, "left": left}
    print(f"discovery with {a.count} netdiag containers: {own['median_ms']:.1f} ms (found {own['by_runtime'].get('netdiag', 0)}); "
          f"with {a.count} {what}: {other['median_ms']:.1f} ms (found {found}); "
          f"ratio {ratio:.2f}x (goal <= {GOAL_RATIO}x: {'met' if ratio <= GOAL_RATIO else 'NOT met'})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 3 if left else 0


def main(argv: list[str] | None = None) -> int:
    return compare(argv, __doc__, lambda state_dir: Lab(state_dir=state_dir), cni_phase, "cni", "CNI pods")


if __name__ == "__main__":
    sys.exit(main())
