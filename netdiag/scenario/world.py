"""A scenario's world on netdiag.worlds' interface: what a one-host world (session.Session, on a
host lab) and a world of several hosts (cluster.ClusterSession, on a cluster lab) share.

`start` is the one skeleton: claim the scenario in the registry (refused while it runs; the lab is
recorded before it exists, so a stop from any process finds it), then `create()`: the lab, the
world (`build`), the faults, what starts after them (`after_faults`); on any failure everything
is removed (World.create). Then the diagnosis, the recording and the grader, the same for both:
each runs a scenario command on a host (`on`, where the scenario names one).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from runtime.errors import InvalidArgument

from ..worlds import World
from . import registry, verdict
from .common import STEP_TIMEOUT, StepFailed, checks_of, grader_argv
from .library import Scenario


class ScenarioWorld(World):
    multi_host = False

    def __init__(self, scenario: Scenario, lab):
        self.scenario, self.lab, self.name = scenario, lab, lab.name
        self.root = lab.state_dir.parent  # the scenario's directory: the lab's state, files, grader's files
        self.say = lambda text: None

    # -- life ----------------------------------------------------------------------------------------
    @classmethod
    def start(cls, scenario: Scenario, progress=None):
        """Build the world, plant the faults; refused when that scenario already runs."""
        s = cls.claim(scenario)
        s.say = progress or (lambda text: None)
        s.create()
        registry.built(scenario.name)
        return s

    @classmethod
    def claim(cls, scenario: Scenario):
        raise NotImplementedError

    def _build(self) -> None:
        self.say(self.describe())
        self.create_lab()
        self.build(self.say)
        faults = self.scenario.spec.get("faults", [])
        if faults:  # what each fault is stays for `solution`: the learner is to find it
            self.say("breaking something")
        for step in faults:
            self.step(step)
        self.after_faults(self.say)

    def describe(self) -> str:
        raise NotImplementedError

    def create_lab(self) -> None:
        self.lab.create()

    def build(self, say) -> None:
        raise NotImplementedError

    def after_faults(self, say) -> None:
        """What starts once the faults are in place (nothing by default)."""

    def destroy(self) -> list[str]:
        """Remove the world (from any process); unlike other worlds, say what was left behind
        (should be nothing): `scenario stop` prints it."""
        self.remove()
        registry.forget(self.scenario.name)
        return self.leaks()

    def remove(self) -> None:
        raise NotImplementedError

    # -- running things in the world -----------------------------------------------------------------
    def run(self, argv: list[str], where: str | None = None, check: bool = True, timeout: float = STEP_TIMEOUT,
            on: str | None = None) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def step(self, step: dict, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(step["run"], step.get("in"), check=check, on=step.get("host"))

    def file(self, name: str) -> Path:
        """A file of the scenario's `files`, written (variables expanded) on first use."""
        files = self.scenario.spec.get("files") or {}
        if name not in files:
            raise InvalidArgument(f"${{file:{name}}}: scenario {self.scenario.name} has no such file", f"files: {sorted(files)}", "")
        path = self.root / "files" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.expand(files[name]))
        return path

    def expand(self, text: str, **extra) -> str:
        raise NotImplementedError

    # -- diagnosis and grading -----------------------------------------------------------------------------
    def diagnose(self) -> dict:
        """What netdiag says, run the way a learner would (the scenario's diagnosis command, --json,
        on `diagnosis.host`), and whether it names the planted cause at the right hop."""
        d = self.scenario.spec["diagnosis"]
        p = self.run(list(d["run"]) + ["--json"], on=d.get("host"), check=False)
        if p.returncode not in (0, 1, 3):
            raise StepFailed(f"The diagnosis of {self.scenario.name} did not run (exit {p.returncode})", p.stderr.strip()[-600:], "")
        result = json.loads(p.stdout)
        expected = json.loads(self.expand(json.dumps({"cause": d["cause"], "at": d.get("at") or {}})))
        ok, named = verdict.matches(result, expected)
        return {"ok": ok, "expected": expected, "named": named, "result": result}

    def record(self) -> dict:
        """The broken world's snapshot (of the diagnosis host) with the live probe of the scenario's
        trace (`trace --record`), so `trace --snapshot FILE ARGS...` replays the diagnosis offline."""
        d = self.scenario.spec["diagnosis"]
        argv = list(d.get("replay") or d["run"])
        if argv[:2] != ["netdiag", "trace"]:
            raise InvalidArgument(f"{self.scenario.name} has no trace to record", "its diagnosis is not a `netdiag trace`",
                                  "give the scenario a diagnosis.replay trace")
        out = self.root / "recording.json"
        try:
            p = self.run(argv + ["--json", "--record", str(out)], on=d.get("host"), check=False)
            if p.returncode not in (0, 1, 3) or not out.exists():
                raise StepFailed(f"Recording {self.scenario.name} failed (exit {p.returncode})", p.stderr.strip()[-600:], "")
            snap = json.loads(out.read_text())
        finally:
            out.unlink(missing_ok=True)
        result = json.loads(p.stdout)
        host = {"host": d.get("host") or self.first} if self.multi_host else {}
        snap["recorded"] = {"scenario": self.scenario.name, **host, "argv": [self.expand(a) for a in argv[2:]],
                            "live": {"verdict": result["verdict"], "cause": result["cause"]}}
        return snap

    def grade(self, verify_fix: bool = False) -> list[dict]:
        """The grader: the scenario's checks run by `netdiag check` (on `grade_host`; `verify_fix`:
        each failed check's fix also proven on a replica). One entry per check: name, passed
        (True/False/None for skipped), and the diagnosis of a failure."""
        import yaml

        checks = json.loads(self.expand(json.dumps(self.scenario.spec["checks"])))
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.root, delete=False) as f:
            yaml.safe_dump({"checks": checks}, f, sort_keys=False)
        try:
            p = self.run(grader_argv(f.name, verify_fix), on=self.scenario.spec.get("grade_host"), check=False)
        finally:
            os.unlink(f.name)
        if p.returncode not in (0, 1):
            raise StepFailed(f"The grader of {self.scenario.name} could not run (exit {p.returncode})", p.stderr.strip()[-600:], "")
        return checks_of(json.loads(p.stdout))
