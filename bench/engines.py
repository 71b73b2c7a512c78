"""What the benches that compare engines share: a lab host per engine (netdiag's Lab, a DockerLab
with its private dockerd, a PodmanLab with rootful Podman in its own mount namespace), their
removal with what they left, and the signal handling that lets every `finally` run.

    labs = {}
    try:
        engines = open_labs(labs, no_docker=False, no_podman=False)   # what each is, or why not
        ...
    finally:
        hold_signals()
        left = close_labs(labs)
"""
from __future__ import annotations

import os
import signal
import subprocess

import run_bench as rb
from netdiag.worlds import DockerLab, Lab
from netdiag.worlds.podman import PodmanLab, find_podman

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def unwind_on_signals() -> None:
    """Ctrl-C, TERM and HUP raise rb.Interrupted in this process, so its clean-up runs; a forked
    helper of a world that inherited the handler just exits."""
    main = os.getpid()

    def handler(signum, _frame):
        if os.getpid() != main:
            os._exit(128 + signum)
        raise rb.Interrupted(f"interrupted by {signal.Signals(signum).name}")

    for s in SIGNALS:
        signal.signal(s, handler)


def hold_signals() -> None:
    """A second Ctrl-C must not cut the clean-up short."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def open_labs(labs: dict, no_docker: bool = False, no_podman: bool = False) -> dict:
    """Fill `labs` {engine: lab} as each is made (the caller's finally removes what exists if one
    fails or a Ctrl-C comes): netdiag always, Docker and Podman unless skipped or unavailable.
    Returns {engine: its version, or why it is missing}."""
    engines = {}
    labs["netdiag"] = Lab().create()
    if not no_docker:
        try:
            labs["docker"] = DockerLab().create()
            engines["docker"] = labs["docker"].engine.server_version
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            engines["docker"] = f"unavailable: {e}"
    if not no_podman:
        if find_podman() is None:
            engines["podman"] = "not installed"
        else:
            try:
                labs["podman"] = PodmanLab().create()
                engines["podman"] = labs["podman"].podman("version", "--format", "{{.Client.Version}}").stdout.strip()
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                engines["podman"] = f"unavailable: {e}"
    return engines


def close_labs(labs: dict) -> list[str]:
    """Destroy every lab, the last made first, whatever fails; what they left behind."""
    left = []
    for lab in reversed(labs.values()):
        try:
            lab.destroy()
        except Exception as e:  # noqa: BLE001 - every other lab still has to go
            left.append(f"{lab.name}: destroy failed: {e}")
        left += [f"{lab.name}: {x}" for x in lab.leaks()]
    return left
