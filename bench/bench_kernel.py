#!/usr/bin/env python3
"""runtime/kernel's netlink paths measured against pyroute2, to choose one per kernel object:

  routes      N route adds, then N deletes (unicast /32s on a bridge)
  neighbours  N permanent ARP replaces
  bridges     M bridge creates, then M deletes
  namespaces  M named namespaces made and removed (`ip netns add/del`)
  conntrack   M dumps of a table of 200 UDP entries
  import      a fresh interpreter importing pyroute2's IPRoute, against runtime.kernel's modules

Each object is timed three ways: raw (runtime.kernel over wire.py, one socket per request: what the
runtime does), pyroute2 as the replay used it (an IPRoute per request, like the old objects.py) and
pyroute2 at its best (one IPRoute kept open for all N). Medians of --runs rounds.

    sudo .venv/bin/python bench/bench_kernel.py [--runs N] [--count N] [--json FILE]

Everything runs in a forked child that joined a throwaway namespace (ndbk-<pid>) for good, after
checking that it is there: nothing reaches the root namespace. The namespaces are removed at the
end, also on failure or Ctrl-C. Exit codes: 0 ok, 1 error, 2 not root, 3 something left behind.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runtime.kernel import addr, bridge, link, neigh, ns, route  # noqa: E402

PREFIX = f"ndbk-{os.getpid()}"
KEEP: list = []  # sockets whose conntrack entries the conntrack row dumps


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _routes(n: int) -> list[dict]:
    return [{"dst": f"10.100.{i // 250}.{i % 250 + 1}/32", "table": 254, "type": "unicast", "scope": "link", "dev": "bk0"}
            for i in range(n)]


def _ipr():
    from pyroute2 import IPRoute

    return IPRoute()


def _pr_route(r, op: str, rt: dict, idx: int) -> None:
    r.route(op, dst=rt["dst"].split("/")[0], dst_len=32, table=254, scope=253, proto=3 if op == "add" else 0, oif=idx)


def bench_routes(n: int) -> dict:
    routes, idx = _routes(n), link.index("bk0")

    def raw():
        for rt in routes:
            route.add(rt)
        for rt in routes:
            route.delete(rt)

    def per_call():
        for op in ("add", "del"):
            for rt in routes:
                with _ipr() as r:
                    _pr_route(r, op, rt, idx)

    def one_socket():
        with _ipr() as r:
            for op in ("add", "del"):
                for rt in routes:
                    _pr_route(r, op, rt, idx)
    return {"raw": raw, "pyroute2_per_call": per_call, "pyroute2_one_socket": one_socket}


def bench_neighbours(n: int) -> dict:
    ips = [f"10.99.{i // 250 + 1}.{i % 250 + 1}" for i in range(n)]
    mac = "02:42:ac:11:00:02"
    idx = link.index("bk0")

    def raw():
        for ip in ips:
            neigh.replace("bk0", ip, mac)

    def per_call():
        for ip in ips:
            with _ipr() as r:
                r.neigh("replace", ifindex=idx, dst=ip, lladdr=mac, state=0x80)

    def one_socket():
        with _ipr() as r:
            for ip in ips:
                r.neigh("replace", ifindex=idx, dst=ip, lladdr=mac, state=0x80)
    return {"raw": raw, "pyroute2_per_call": per_call, "pyroute2_one_socket": one_socket}


def bench_bridges(m: int) -> dict:
    names = [f"bkb{i}" for i in range(m)]

    def raw():
        for name in names:
            bridge.create(name, 1500)
        for name in names:
            link.delete(name)

    def per_call():
        for name in names:
            with _ipr() as r:
                r.link("add", ifname=name, kind="bridge", mtu=1500)
        for name in names:
            with _ipr() as r:
                r.link("del", index=r.link_lookup(ifname=name)[0])

    def one_socket():
        with _ipr() as r:
            for name in names:
                r.link("add", ifname=name, kind="bridge", mtu=1500)
            for name in names:
                r.link("del", index=r.link_lookup(ifname=name)[0])
    return {"raw": raw, "pyroute2_per_call": per_call, "pyroute2_one_socket": one_socket}


def bench_namespaces(m: int) -> dict:
    names = [f"{PREFIX}-n{i}" for i in range(m)]

    def raw():
        for name in names:
            ns.create(name)
        for name in names:
            ns.remove(name)

    def pyroute2():
        from pyroute2 import netns as pr_netns

        for name in names:
            pr_netns.create(name)
        for name in names:
            pr_netns.remove(name)
    return {"raw": raw, "pyroute2_per_call": pyroute2}


def bench_conntrack(m: int, flows: int = 200) -> dict:
    """M dumps of a table holding `flows` established TCP entries (made here: a conntrack rule and
    connections on lo, kept open for the whole bench so that no entry times out)."""
    import socket

    from runtime.kernel import conntrack, nft

    nft.run("add table inet bkct; add chain inet bkct out { type filter hook output priority 0; ct state new counter; }")
    listener = socket.create_server(("127.0.0.1", 0), backlog=flows)
    KEEP.append(listener)
    for _ in range(flows):
        KEEP.append(socket.create_connection(listener.getsockname()))
        KEEP.append(listener.accept()[0])

    def raw():
        for _ in range(m):
            assert len(conntrack.dump()) >= flows

    def pyroute2():
        from pyroute2 import Conntrack

        for _ in range(m):
            with Conntrack() as ct:  # what the old conntrack.dump did per call
                assert len([e.get_attr("CTA_TUPLE_ORIG") for e in ct.dump()]) >= flows
    return {"raw": raw, "pyroute2_per_call": pyroute2}


def import_times(runs: int) -> dict:
    code = {"pyroute2": "from pyroute2 import IPRoute",
            "runtime.kernel": "from runtime.kernel import bridge, fdb, link, neigh, ns, route, vxlan"}
    out = {}
    for name, stmt in code.items():
        script = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
        got = [float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                    cwd=REPO).stdout) for _ in range(runs)]
        out[name] = statistics.median(got)
    return out


def child(args, path: str, write_fd: int) -> None:
    """In the throwaway namespace for good; every row's rounds; JSON on write_fd."""
    ns.join(path)
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(path).st_ino:
        raise SystemExit("not in the bench namespace: refusing to touch the kernel")
    bridge.ensure("bk0", IPv4Address("10.99.0.1"), __import__("ipaddress").IPv4Network("10.99.0.0/16"))
    link.set_up(link.index("lo"))
    rows = {"routes": bench_routes(args.count), "neighbours": bench_neighbours(args.count),
            "bridges": bench_bridges(args.small), "namespaces": bench_namespaces(args.small),
            "conntrack": bench_conntrack(args.small)}
    _ipr().close()  # pyroute2 imported before the clock starts: import time is its own row
    result = {}
    for row, ways in rows.items():
        times = {way: [] for way in ways}
        for _ in range(args.runs):
            for way, fn in ways.items():  # one round runs every way: noise reaches all alike
                times[way].append(_timed(fn))
        result[row] = {way: statistics.median(t) for way, t in times.items()}
    result["addresses_left"] = len(addr.dump())
    os.write(write_fd, json.dumps(result).encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=1000, help="routes and neighbours per round")
    ap.add_argument("--small", type=int, default=20, help="bridges and namespaces per round")
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    imports = import_times(args.runs)
    path = ns.create(PREFIX)
    r, w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                child(args, path, w)
                code = 0
            except BaseException:  # noqa: BLE001 - shown here: os._exit below skips the usual report
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print("the bench child failed", file=sys.stderr)
            return 1
    finally:
        os.close(r)
        for name in os.listdir(ns.RUN_DIR):
            if name == PREFIX or name.startswith(PREFIX + "-"):
                ns.remove(name)
    result = {**json.loads(data), "import_s": imports, "count": args.count, "small": args.small, "runs": args.runs}
    for row in ("routes", "neighbours", "bridges", "namespaces", "conntrack"):
        n = args.count if row in ("routes", "neighbours") else args.small
        ways = result[row]
        print(f"{row:<11} ({n} each) " + "  ".join(f"{w} {ways[w] * 1000:8.1f} ms ({ways[w] / ways['raw']:.1f}x)"
                                                   for w in ways))
    print(f"import      pyroute2's IPRoute {imports['pyroute2'] * 1000:.0f} ms, runtime.kernel's modules "
          f"{imports['runtime.kernel'] * 1000:.0f} ms (fresh interpreter)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    left = [n for n in os.listdir(ns.RUN_DIR) if n.startswith(PREFIX)]
    if left:
        print(f"left behind: {left}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
