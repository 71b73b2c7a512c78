"""A lab with its own Docker engine: a host lab (host.py) whose host runs a private dockerd
(dockerd.py) with Docker's default networking (docker0, iptables-nft rules, FORWARD policy drop:
the lab starts with ip_forward=0, so dockerd turns forwarding on and sets the policy itself, as on
a Docker host), busybox imported as an image (no registry is reachable), and DOCKER_HOST in the
lab's environment, so netdiag (and a `docker ...` fix pasted in the lab's shell) finds that
engine and never another one.

`destroy()` removes the engine (containers, containerd and its shims, mounts, cgroups, the host
paths dockerd made) and then the lab; `leaks()` adds what the engine's removal could not undo.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from .dockerd import Dockerd, client_env
from .host import Lab

IMAGE = "bbox"  # the busybox image every Docker world has


class DockerLab(Lab):
    """A host lab running a private dockerd; `docker(...)` runs the docker CLI against it."""

    def __init__(self, name: str | None = None, state_dir: Path | None = None, image: str = IMAGE):
        super().__init__(name, state_dir)
        self.image = image
        self.engine: Dockerd | None = None
        self._engine_left: list[str] = []

    def _build(self) -> None:
        super()._build()
        work = Path(tempfile.mkdtemp(prefix="nddock-"))  # short: containerd's socket paths must fit 108 bytes
        try:
            self.engine = Dockerd.installed(self.name, work, f"{self.name}-docker")
        except BaseException:
            work.rmdir()
            raise
        self.engine.start()
        self.engine.import_busybox(self.image)
        self.env.update(client_env(work))  # how netdiag (and the user's shell) find the engine

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The docker CLI against this lab's engine; RuntimeError on a failure when `check`."""
        p = subprocess.run(self.engine.docker(*args), env=self.engine.cli_env(), capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-600:]}")
        return p

    def destroy(self) -> None:
        """The engine first (its containers live in the lab's namespace), then the lab, whatever fails."""
        try:
            if self.engine is not None:
                self._engine_left = self.engine.remove()
        finally:
            super().destroy()

    def _leftovers(self) -> list[str]:
        return [f"docker: {x}" for x in self._engine_left] + super()._leftovers()
