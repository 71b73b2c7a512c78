#!/usr/bin/env python3
"""Discovery of rootful Podman's containers against discovery of netdiag's own (issue 22's figure:
200 Podman containers cost at most 1.3x 200 of netdiag's own), one run, on one Podman host lab
(netdiag.worlds.PodmanLab: the lab's network namespace and a private mount namespace for Podman):

  A. N netdiag containers (`netdiag run -d --network benchnet busybox sleep`) on a bridge network;
  B. the same lab after they are removed, N Podman containers (`podman run -d --network benchpod`)
     on a netavark bridge network.

What is timed is discovery in-process on the lab's host (Podman's namespaces joined, as every
command there runs): `netdiag.observe.discover.discover()`, the median of R calls after one untimed
call (bench_cni_pods' probe). Podman's part is podman_state's read of libpod's state database
and netavark's network files (the podman CLI only where those cannot be read). Prints both medians
and the ratio B/A.

    .venv/bin/python bench/bench_podman_discovery.py [--count N] [--runs R] [--json FILE]

Needs root and podman/netavark/crun/conmon. Exit codes: 0 ok (goal met or not: the verdict is
printed), 1 error, 2 not root, 3 something left behind.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_cni_pods import compare, discovery, log  # noqa: E402

from netdiag.worlds.podman import PodmanLab  # noqa: E402

NET = "benchpod"


def podman_phase(lab: PodmanLab, count: int, runs: int) -> dict:
    lab.podman("network", "create", "--subnet", "10.213.0.0/22", NET)
    names = [f"p{i}" for i in range(count)]
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda n: lab.podman("run", "-d", "--name", n, "--network", NET, lab.image, "sleep", "86400",
                                         timeout=120), names))
    log(f"B: {count} Podman containers running")
    try:
        return discovery(lab, runs)
    finally:
        lab.podman("rm", "-a", "-f", "-t", "0", timeout=600)
        lab.podman("network", "rm", NET)


def main(argv: list[str] | None = None) -> int:
    return compare(argv, __doc__, lambda state_dir: PodmanLab(state_dir=state_dir), podman_phase, "podman",
                   "Podman containers")


if __name__ == "__main__":
    sys.exit(main())
