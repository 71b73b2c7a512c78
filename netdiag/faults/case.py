"""One fault-injection case, end to end, and the plan of many.

A case is (seed, kind, shape): build the world (netdiag.worlds' interface: create, run in, destroy, leaks), plant the fault, prove it breaks the flow with a
real connection, run `netdiag trace --json` on the lab host, compare the top-level cause and the
hop, apply `fix_command` exactly as printed (bash, on the lab host, as a user would paste it), then
prove with real connections (busybox wget, ping; never netdiag) that the flow works again and that
a control flow of the same world still works. The world is torn down whatever happens, and what it
left behind (leaks()) is that case's failure.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import containers, docker, overlay
from .catalogue import KINDS, Expect
from .world import build as build_plain


def build(seed: int, shape: str):
    if shape == containers.SHAPE:
        return containers.build(seed)
    if shape == docker.SHAPE:
        return docker.build(seed)
    if shape == overlay.SHAPE:
        return overlay.build(seed)
    return build_plain(seed, shape)


@dataclass
class Case:
    seed: int
    kind: str
    shape: str

    @property
    def id(self) -> str:
        return f"{self.kind}[{self.shape}]-seed{self.seed}"


@dataclass
class Result:
    case: Case
    expected: str = ""
    expected_at: str = ""
    cause: str | None = None
    at: str | None = None
    fix_command: str | None = None
    fix: str = ""
    checked: str = ""
    fix_works: bool | None = None  # None: no command (and none expected), or not tried
    control_works: bool | None = None  # after the fix; it must, where it worked with the fault in place
    replica: bool | None = None  # with verify_fix: trace --verify-fix's verdict, made before the fix is applied for real
    replica_detail: str = ""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def diagnosed(self) -> bool:
        return self.cause == self.expected and self.at == self.expected_at

    @property
    def ok(self) -> bool:
        return not self.problems

    def explain(self) -> str:
        head = f"{self.case.id}: expected {self.expected} at {self.expected_at}, got {self.cause} at {self.at}"
        tail = f"\n  fix_command: {self.fix_command!r} ({self.checked})" if self.fix_command else f"\n  fix: {self.fix!r}"
        if self.replica_detail:
            tail += f"\n  on a replica: {self.replica_detail}"
        return head + tail + "".join(f"\n  - {p}" for p in self.problems) + \
            f"\n  reproduce: python -m netdiag.faults --seed {self.case.seed} --kind {self.case.kind} --shape {self.case.shape}"


def plan(seed: int, count: int, kinds: list[str] | None = None) -> list[Case]:
    """`count` cases from `seed`: kinds in turn, round after round (the first round covers every
    kind; a kind with `every` N takes part in every Nth round only: its worlds are slow to build),
    shapes and world seeds drawn from the seed."""
    rng = random.Random(seed)
    names = kinds or sorted(KINDS)
    out: list[Case] = []
    rounds = 0
    while len(out) < count:
        for name in names:
            k = KINDS[name]
            if rounds % k.every == 0 and len(out) < count:
                out.append(Case(rng.randrange(1, 2**31), k.name, rng.choice(k.shapes)))
        rounds += 1
    return out


def run(case: Case, trace_timeout: float = 1.5, verify_fix: bool = False) -> Result:
    """`verify_fix`: trace with --verify-fix too; where the replica gave a verdict, it must be the
    one the real world gives when the fix is applied (a replica that disagrees is a bug of its own)."""
    started = time.monotonic()
    res = Result(case)
    rng = random.Random(case.seed ^ 0x5EED)
    w = build(case.seed, case.shape)
    try:
        try:
            exp = KINDS[case.kind].plant(w, rng)
        except Exception as e:  # noqa: BLE001 - a generator bug, reported as this case's failure
            res.problems.append(f"planting failed: {e}")
            return res
        res.expected, res.expected_at = exp.cause, w.label(exp.at)
        if _flow_works(w, exp):
            res.problems.append(f"the planted fault ({exp.detail}) does not break the flow: a generator bug")
            return res
        control_before = w.connects(w.control_port)  # what the fault left working, a fix must not break
        r = _trace(w, exp, trace_timeout, verify_fix)
        if r is None or "_no_json" in r:
            res.problems.append("trace printed no JSON" + (f": {r['_no_json']}" if r else ""))
            return res
        keep = os.environ.get("NETDIAG_FAULT_TRACES")  # a directory: each case's trace JSON, to read afterwards
        if keep:
            Path(keep, f"{case.id}.json").write_text(json.dumps(r, indent=1))
        res.cause, res.fix_command, res.fix = r.get("cause"), r.get("fix_command"), r.get("fix") or ""
        res.checked = _checked(r)
        verified = r.get("fix_verified") or {}
        res.replica, res.replica_detail = verified.get("replica"), verified.get("detail") or ""
        hop = next((h for h in r.get("hops", []) if h.get("n") == r.get("blocked_at")), None)
        res.at = hop.get("label") if hop else None
        if r.get("verdict") == "delivered":
            res.problems.append("trace says delivered")
        if res.cause != exp.cause:
            res.problems.append(f"top-level cause {res.cause}, planted {exp.cause} ({exp.detail})")
        elif res.at != res.expected_at:
            res.problems.append(f"blocked at {res.at}, planted at {res.expected_at}")
        if exp.no_command:
            if res.fix_command:
                res.problems.append(f"a command where none can exist ({exp.no_command})")
            elif not res.fix:
                res.problems.append("no fix text: say what to change and why no command is given")
        elif not res.fix_command:
            res.problems.append("no fix_command")
        else:
            applied = w.run_in(None, ["bash", "-c", res.fix_command], timeout=120, env=w.fix_env())
            if applied.returncode != 0:
                res.problems.append(f"fix_command failed: {applied.stderr.strip()[:300]}")
            before = w.server_ip
            w.refresh()  # a recreated server may have a new address: the flow goes to the server
            if exp.flow.dst == before:
                exp.flow.dst = w.server_ip
            res.fix_works = _flow_works(w, exp, settle=True)
            if not res.fix_works:
                res.problems.append("after fix_command the real flow still fails")
            res.control_works = w.connects(w.control_port)
            if control_before and not res.control_works:
                res.problems.append("fix_command broke the control flow, which worked with the fault in place")
            if res.replica is not None and res.replica != res.fix_works:
                res.problems.append(f"the replica said the fix {'works' if res.replica else 'fails'} "
                                    f"({res.replica_detail}); applied for real it {'works' if res.fix_works else 'fails'}")
        return res
    finally:
        res.seconds = round(time.monotonic() - started, 2)
        try:
            w.destroy()
        finally:
            left = w.leaks()
            if left:
                res.problems.append("the world left behind: " + "; ".join(left))


def _flow_works(w, exp: Expect, settle: bool = False) -> bool:
    """The flow for real: an HTTP request and its answer (tcp; full-size segments where the flow
    has a size), a datagram and the echo's answer (udp), an echo and its reply (icmp).
    `settle`: a fix may take a moment (a route's neighbour resolving, a re-created container's
    server starting: `docker run -d` returns before it listens), so try again for a few seconds."""
    f = exp.flow
    until = time.monotonic() + (5 if settle else 0)
    while True:
        if f.proto == "icmp":
            ok = w.pings(f.src, f.dst)
        elif f.proto == "udp":
            ok = w.answers_udp(f.port, src=f.src, dst=f.dst, size=f.size)
        else:
            ok = w.connects(f.port, src=f.src, dst=f.dst, timeout=2, **({"pad": f.size} if f.size else {}))
        if ok:
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.3)


def _trace(w, exp: Expect, timeout: float, verify_fix: bool = False) -> dict | None:
    p = w.lab.netdiag("trace", *exp.flow.argv(), "--json", "--timeout", str(timeout),
                      *(["--verify-fix"] if verify_fix else []), timeout=120)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {"_no_json": (p.stderr or p.stdout).strip()[-400:]}


def _checked(r: dict) -> str:
    fc = r.get("fix_check") or {}
    if not fc:
        return "unchecked"
    return "checked on the model: " + ("delivers" if fc.get("delivers") else "does not deliver" if fc.get("checked") else "could not check")


def as_json(res: Result) -> dict:
    d = asdict(res)
    d["ok"], d["diagnosed"] = res.ok, res.diagnosed
    return d
