#!/usr/bin/env python3
"""Pull and push against a real registry, netdiag beside Docker, in one run.

Goals (issue 21): a pull of a 100 MB, 5-layer image from a registry in a lab within 1.2x of
`docker pull` of the same image from the same registry; a re-pull of an unchanged image under
0.2 s; a push of an image whose layers the registry already has sends no layer.

The bench builds a DockerLab (a lab host running a private dockerd) and starts Debian's
docker-registry on the lab host's 127.0.0.1:5000 (plain HTTP: both treat 127.0.0.0/8 as insecure).
Docker builds the image (FROM scratch, five COPY layers of random bytes, `--layers-mb` MB in all)
and pushes it: gzip layers and Docker's schema 2 manifest, what registries hold. Then, round-robin:

| row | command | what it tells |
| --- | --- | --- |
| `netdiag pull` | `netdiag pull IMG` into an empty store (a new NETDIAG_ROOT) | the goal's numerator: every layer downloaded, verified, unpacked |
| `docker pull` | `docker rmi IMG; docker pull IMG` (timed: the pull) | the reference: the same bytes from the same registry |
| `re-pull` | `netdiag pull IMG` again (cold CLI) | the no-op: one HEAD request |
| `push again` | `netdiag push IMG2` (IMG retagged to another tag) | sends no layer: the "Pushed" lines are counted |

    sudo .venv/bin/python bench/bench_registry.py [--runs N] [--layers-mb MB] [--json FILE]

Exit codes: 0 ok (goals met or not: see the verdicts), 1 error, 2 not root, 3 something left behind.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import run_bench as rb  # noqa: E402
from netdiag.worlds import DockerLab  # noqa: E402
from netdiag.worlds.registry import LabRegistry  # noqa: E402

IMG = "127.0.0.1:5000/bench/big:1"


def build_image(lab: DockerLab, work: Path, total_mb: int) -> None:
    ctx = work / "ctx"
    ctx.mkdir()
    lines = ["FROM scratch"]
    for i in range(5):
        (ctx / f"part{i}.bin").write_bytes(os.urandom(total_mb * (1 << 20) // 5))
        lines.append(f"COPY part{i}.bin /part{i}.bin")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    lab.docker("build", "-q", "-t", IMG, str(ctx), timeout=600)
    lab.docker("push", IMG, timeout=600)
    lab.docker("rmi", IMG)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed rounds (3)")
    ap.add_argument("--layers-mb", type=int, default=100, help="the image's size in MB, in five layers (100)")
    ap.add_argument("--json", metavar="FILE", help="write the samples and stats as JSON")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_registry: needs root (network namespaces)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ndbreg-"))
    lab = DockerLab(name=f"ndbr-{os.getpid()}", state_dir=work / "root")
    reg = None
    samples: dict[str, list[float]] = {"netdiag pull": [], "docker pull": [], "re-pull": [], "push again": []}
    pushed_again: list[int] = []
    left: list[str] = []
    try:
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):  # measured: ~0.05-0.08 s more per CLI start here
            rb.log("note: PYTHONDONTWRITEBYTECODE is set: netdiag's own modules are compiled at every start "
                   "(an editable install has no .pyc), which the re-pull's time includes; unset it for a user's figure")
        rb.log(f"lab: creating {lab.name} with its dockerd")
        lab.create()
        reg = LabRegistry(lab, work / "registry", where=None, address="127.0.0.1", tls=False).start()
        rb.log(f"image: {args.layers_mb} MB in 5 layers, built and pushed by Docker")
        build_image(lab, work, args.layers_mb)

        def nd(*a: str, root: Path) -> str:
            p = lab.netdiag(*a, env={**lab.env, "NETDIAG_ROOT": str(root)}, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"netdiag {' '.join(a)}: {p.stderr.strip()[-400:]}")
            return p.stdout

        for i in range(args.runs + 1):  # round 0 warms caches and is not counted
            root = work / f"nd{i}"
            t_nd = timed(lambda: nd("pull", IMG, root=root))
            t_re = timed(lambda: nd("pull", IMG, root=root))
            nd("tag", IMG, f"{IMG}-again", root=root)
            out: list[str] = []
            t_push = timed(lambda: out.append(nd("push", f"{IMG}-again", root=root)))
            t_dk = timed(lambda: lab.docker("pull", IMG, timeout=600))
            lab.docker("rmi", IMG)
            shutil.rmtree(root, ignore_errors=True)
            if i == 0:
                continue
            samples["netdiag pull"].append(t_nd)
            samples["docker pull"].append(t_dk)
            samples["re-pull"].append(t_re)
            samples["push again"].append(t_push)
            pushed_again.append(out[0].count(": Pushed"))
            rb.log(f"round {i}/{args.runs}: netdiag {t_nd:.2f}s docker {t_dk:.2f}s re-pull {t_re:.3f}s push again {t_push:.3f}s")
        med = {k: statistics.median(v) for k, v in samples.items()}
        ratio = med["netdiag pull"] / med["docker pull"]
        print(f"\n{'row':<14} {'median':>8} {'min':>8} {'max':>8}")
        for k, v in samples.items():
            print(f"{k:<14} {med[k]:>8.3f} {min(v):>8.3f} {max(v):>8.3f}")
        print(f"\npull: {ratio:.2f}x docker pull (goal <= 1.2x): {'met' if ratio <= 1.2 else 'NOT met'}")
        print(f"re-pull: {med['re-pull']:.3f} s (goal < 0.2 s): {'met' if med['re-pull'] < 0.2 else 'NOT met'}")
        print(f"push of what the registry has: {max(pushed_again)} layers sent (goal 0): {'met' if max(pushed_again) == 0 else 'NOT met'}")
        if args.json:
            Path(args.json).write_text(json.dumps({"samples": samples, "ratio": ratio, "pushed_again": pushed_again,
                                                   "layers_mb": args.layers_mb, "load": os.getloadavg()}, indent=1))
    except (RuntimeError, OSError) as e:
        print(f"bench_registry: {e}", file=sys.stderr)
        return 1
    finally:
        if reg is not None:
            reg.stop()
        lab.destroy()
        left = lab.leaks()
        shutil.rmtree(work, ignore_errors=True)
    if left:
        print(f"bench_registry: left behind: {left}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
