"""Integration-test worlds built on netdiag's own Lab (netdiag/lab.py), so tests, the demo and the
scenarios share one way of building and tearing down a host-in-a-host."""
from __future__ import annotations

import subprocess
from pathlib import Path

from netdiag.lab import Lab


class World(Lab):
    """A Lab with test conveniences. `run` returns the CompletedProcess; `ok` asserts exit 0."""

    @property
    def root(self) -> Path:
        return self.state_dir

    def run(self, *args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
        return self.netdiag(*args, timeout=timeout, input=input)

    def ok(self, *args: str, timeout: float = 60) -> str:
        p = self.run(*args, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError(f"netdiag {' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p.stdout

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        import sys

        return subprocess.Popen([sys.executable, "-m", "netdiag", *args], env=self.env, preexec_fn=self.enter(), **kw)

    def in_lab(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, preexec_fn=self.enter())
