"""What the coexistence tests (firewalld, a VPN) do on a lab host: trace as JSON, fetch from a
container, read a network's bridge and subnet, run a printed fix as it is printed."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def trace(lab, *args) -> dict:
    """`netdiag trace ... --json` in the lab; its exit code must match its verdict."""
    p = lab.run("trace", *args, "--json", timeout=90)
    assert p.returncode in (0, 1, 3) and p.stdout, (p.returncode, p.stderr)
    r = json.loads(p.stdout)
    assert p.returncode == {"delivered": 0, "blocked": 1, "unknown": 3}[r["verdict"]]
    return r


def get(lab, ctr: str, url: str) -> subprocess.CompletedProcess:
    return lab.run("exec", ctr, "timeout", "3", "wget", "-q", "-O", "-", url, timeout=30)


def network(lab, net: str) -> dict:
    return json.loads(lab.ok("network", "inspect", net))[0]


def run_fix(lab, r: dict) -> None:
    """The trace's fix_command through a shell on the lab host, with the lab's environment."""
    assert r["fix_command"], r["fix"]
    env = {**lab.env, "PATH": os.path.dirname(sys.executable) + os.pathsep + lab.env.get("PATH", "")}
    p = subprocess.run(["sh", "-c", r["fix_command"]], capture_output=True, text=True, env=env, timeout=60, preexec_fn=lab.enter())
    assert p.returncode == 0, (r["fix_command"], p.stderr)
