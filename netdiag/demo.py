"""`netdiag demo`: a guided tour on the built-in defaults, inside a throwaway lab (never the real host)."""
from __future__ import annotations

import shlex
import sys
import time

from .worlds import OUTSIDE_IP, HOST_IP, Lab

STEPS: list[tuple[str, list[str], str]] = [
    ("A container with --network none has only a loopback interface, up, and no routes.",
     ["run", "--rm", "--network", "none", "busybox", "sh", "-c", "ip -o link; echo routes: $(ip route | wc -l)"], ""),
    ("That first run made the built-in busybox image, offline, from the host's busybox-static.", ["images"], ""),
    ("On the default bridge (docker0, 172.17.0.0/16) a container gets .2, a Docker MAC and a route via .1.",
     ["run", "--rm", "busybox", "sh", "-c", "ip -o -4 addr show eth0; ip link show eth0 | grep ether; ip route"], ""),
    ("A web server on the default bridge, port 80 published on the lab host's 8080, with a health check.",
     ["run", "-d", "--name", "web", "-p", "8080:80", "--health-cmd", "wget -q -O /dev/null http://127.0.0.1/",
      "--health-interval", "0.5", "busybox", "sh", "-c",
      "mkdir -p /www && echo hello from netdiag > /www/index.html && exec httpd -f -v -p 80 -h /www"], ""),
    ("`ps` reads the truth from the kernel, after the CLI that started it has exited.", ["ps"], ""),
    ("From the 'outside' namespace (the lab's internet), the lab host's published port answers.",
     [], f"wget -q -O - http://{HOST_IP}:8080/"),
    ("A user-defined network has an embedded DNS: containers find each other by name.",
     ["network", "create", "--subnet", "10.50.0.0/24", "backend"], ""),
    ("", ["run", "-d", "--name", "api", "--network", "backend", "--network-alias", "db", "busybox", "sh", "-c",
          "mkdir -p /www && echo api says hi > /www/index.html && exec httpd -f -p 80 -h /www"], ""),
    ("", ["run", "--rm", "--network", "backend", "busybox", "wget", "-q", "-O", "-", "http://db/"], ""),
    ("Networks, with their subnets and bridge devices.",
     ["network", "ls"], ""),
    ("The web server's log, kept by the container's monitor (the outside's request came via DNAT).", ["logs", "web"], ""),
    ("Why does port 80 of the lab host not answer from outside? `netdiag trace` follows the packet hop by hop.",
     ["trace", "ns:{outside}", HOST_IP, "--port", "80"], ""),
    ("And the published port: delivered, through the DNAT rule, to the container's socket.",
     ["trace", "ns:{outside}", HOST_IP, "--port", "8080"], ""),
    ("A memory limit that an over-allocating process hits: the kernel's OOM killer ends it (exit 137).",
     ["run", "--rm", "--network", "none", "-m", "16m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], ""),
    ("Remove everything; `system prune` removes the unused network too.", ["rm", "-f", "web", "api"], ""),
    ("", ["system", "prune", "-f"], ""),
]


def run_demo(keep: bool = False) -> int:
    from rich.console import Console

    con = Console(highlight=False)
    lab = Lab()
    con.print(f"[bold]netdiag demo[/] — building lab [cyan]{lab.name}[/]: a namespace that plays the host "
              f"(eth0 {HOST_IP}) behind an 'outside' namespace ({OUTSIDE_IP}). Your host's network is not touched.\n")
    failures = 0
    try:
        lab.create()
        for text, args, outside in STEPS:
            if text:
                con.print(f"[bold green]#[/] {text}")
            if outside:
                con.print(f"[dim](outside)[/] [bold]$ {outside}[/]")
                time.sleep(0.3)
                p = lab.run_in("outside", ["busybox", "sh", "-c", f"timeout 5 {outside}"])
            else:
                args = [a.replace("{outside}", lab.outside) for a in args]
                con.print(f"[bold]$ netdiag {' '.join(shlex.quote(a) for a in args)}[/]")
                p = lab.netdiag(*args, timeout=120, env={**lab.env, "COLUMNS": "100"})
                if args[:1] == ["run"] and "-d" in args:
                    _wait_for_health(lab, "web")
            sys.stdout.write(p.stdout)
            sys.stdout.write(p.stderr)
            expected_fail = "bs=64M" in args or args[-1:] == ["80"] and args[:1] == ["trace"]
            if (p.returncode != 0) != expected_fail:
                failures += 1
                con.print(f"[red]unexpected exit code {p.returncode}[/]")
            elif expected_fail:
                why = "not delivered, and diagnosed" if args[:1] == ["trace"] else "killed by the memory limit, as intended"
                con.print(f"[yellow]exit {p.returncode}: {why}[/]")
            con.print()
    finally:
        if not keep:
            lab.destroy()
            left = lab.leaks()
            con.print(f"Lab removed{'; LEFT BEHIND: ' + ', '.join(left) if left else ', nothing left behind'}.")
            failures += bool(left)
    if not keep:
        failures += scenario_tour(con)
    con.print("[bold green]demo finished[/]" if not failures else f"[bold red]demo had {failures} failure(s)[/]")
    return 1 if failures else 0


# The study notes' first failure as a training scenario, from start to fixed: (text, scenario
# arguments, the exit codes that are right at that point).
SCENARIO = "lb_health_check_failed"
SCENARIO_STEPS: list[tuple[str, list[str], tuple[int, ...]]] = [
    ("Training scenarios: broken worlds to diagnose and fix. The library:", ["list"], (0,)),
    ("The notes' three-tier story: the external load balancer says 'Health checks failed'.", ["start", SCENARIO], (0,)),
    ("The grader agrees: it is broken.", ["check"], (1,)),
    ("Ask netdiag, from the scenario's own lab host: why are the LB's servers DOWN?",
     ["shell", SCENARIO, "-c", "netdiag explain --lb haproxy"], (1,)),
    ("A hint costs nothing but pride.", ["hint"], (0,)),
    ("The reference solution, applied.", ["solution", "--apply"], (0,)),
    ("Graded again (HAProxy needs a check or two to see it).", ["check"], (0,)),
    ("And the world is removed.", ["stop"], (0,)),
]


def scenario_tour(con) -> int:
    """Run SCENARIO_STEPS with a netdiag state of their own (never the user's scenarios)."""
    import os
    import subprocess
    import tempfile

    failures = 0
    with tempfile.TemporaryDirectory(prefix="netdiag-demo-") as root:
        env = {**os.environ, "NETDIAG_ROOT": root, "COLUMNS": "100"}

        def run(args):
            return subprocess.run([sys.executable, "-m", "netdiag", "scenario", *args], capture_output=True, text=True,
                                  env=env, timeout=180)
        try:
            for text, args, ok in SCENARIO_STEPS:
                con.print(f"[bold green]#[/] {text}")
                con.print(f"[bold]$ netdiag scenario {' '.join(shlex.quote(a) for a in args)}[/]", soft_wrap=True)
                p = run(args)
                deadline = time.monotonic() + 15
                while args == ["check"] and ok == (0,) and p.returncode == 1 and time.monotonic() < deadline:
                    time.sleep(1)
                    p = run(args)
                sys.stdout.write(p.stdout)
                sys.stdout.write(p.stderr if p.returncode not in ok else "")
                if p.returncode not in ok:
                    failures += 1
                    con.print(f"[red]unexpected exit code {p.returncode}[/]")
                con.print()
        finally:
            run(["stop", "--all"])
    return failures


def _wait_for_health(lab: Lab, name: str, timeout: float = 10) -> bool:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = lab.netdiag("inspect", name)
        if p.returncode == 0 and json.loads(p.stdout)[0]["State"].get("Health", {}).get("Status") == "healthy":
            return True
        time.sleep(0.2)
    return False
