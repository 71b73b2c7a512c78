"""The installed netdiag CLI run inside a host lab (netdiag.worlds.Lab) the way a user would run it:
shared by the network, observation, check and health benchmarks. Commands run through the world's
interface (`run_in`); `argv()`/`enter` spell the same command as an `nsenter` command line, for
the series that time a whole invocation against a reference measured the same way."""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

from netdiag.worlds import Lab


class NdLab:
    """A netdiag Lab plus a way to run the installed `netdiag` CLI and shell commands in it."""

    def __init__(self, lab: Lab, netdiag_bin: str):
        self.lab, self.bin = lab, netdiag_bin
        self.enter = ["nsenter", f"--net={lab.namespace()}", "--"]

    def argv(self, *args: str) -> list[str]:
        return self.enter + [self.bin, *args]

    def nd(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        p = self.lab.run_in(None, [self.bin, *args], env=self.lab.env, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"netdiag {' '.join(args[:6])} exited {p.returncode}: {p.stderr.strip()[-600:]}")
        return p

    def sh(self, script: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        p = self.lab.run_in(None, ["sh", "-c", script], timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"in lab: {script[:120]!r} exited {p.returncode}: {p.stderr.strip()[-400:]}")
        return p

    def rm(self, refs: list[str], chunk: int = 50, workers: int = 2) -> None:
        chunks = [refs[i:i + chunk] for i in range(0, len(refs), chunk)]
        with ThreadPoolExecutor(workers) as ex:
            for p in ex.map(lambda c: self.nd("rm", "-f", *c, check=False), chunks):
                if p.returncode != 0:
                    raise RuntimeError(f"netdiag rm -f exited {p.returncode}: {p.stderr.strip()[-400:]}")

    def inspect(self, ref: str) -> dict:
        return json.loads(self.nd("inspect", ref).stdout)[0]

    def ps_ids(self) -> list[str]:
        return self.nd("ps", "-aq").stdout.split()
