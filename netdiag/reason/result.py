"""The one result type of a diagnosis: a Diagnosis with its Hops, its Evidence and its FixClaim.

Produced by the static trace (static_trace.run_static), completed by netdiag.diagnose (the live
probe reconciled here, the fix checked on a copy of the model) and by `trace --verify-fix` (the
replica's proof), embedded unchanged by health, check and explain. Fields are set on the object;
nothing edits a dict in place. `to_json()` is the one serialiser: its output is the `trace --json`
object of schemas/trace.schema.json; `from_json()` reads one back. Pure: the standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

VERDICTS = ("delivered", "blocked", "unknown")


@dataclass
class Hop:
    """One place the packet passes: a namespace's interface, a firewall hook, the receiving socket."""
    n: int
    namespace: str
    label: str
    interface: str
    kind: str
    direction: str
    seen: bool | None = None      # True/False where a capture ran, None where none could
    detail: str = ""
    leg: str | None = None        # "reply": a hop of the answer's way back (None: the request's)
    ns_path: str | None = None    # how the live probe enters it (diagnose looks it up: Diagnosis.paths_resolved)
    capture_error: str | None = None

    def to_json(self, with_path: bool = False) -> dict:
        """`with_path`: the paths were looked up, so ns_path is said even where there is none (null)."""
        out = {"n": self.n, "namespace": self.namespace, "label": self.label, "interface": self.interface,
               "kind": self.kind, "direction": self.direction, "seen": self.seen, "detail": self.detail}
        if self.leg is not None:
            out["leg"] = self.leg
        if with_path or self.ns_path is not None:
            out["ns_path"] = self.ns_path
        if self.capture_error is not None:
            out["capture_error"] = self.capture_error
        return out

    def brief(self) -> dict:
        """Where, for a result that names the hop (health, check): the hop without its namespace id."""
        return {"n": self.n, "label": self.label, "interface": self.interface, "kind": self.kind,
                "direction": self.direction, "detail": self.detail}

    @classmethod
    def from_json(cls, d: dict) -> Hop:
        where = {"namespace": "", "label": "", "interface": "", "kind": "", "direction": ""}  # a hand-made hop may name less
        return cls(**where | {k: d[k] for k in HOP_KEYS if k in d})


HOP_KEYS = ("n", "namespace", "label", "interface", "kind", "direction", "seen", "detail", "leg", "ns_path", "capture_error")


@dataclass
class Evidence:
    """What a diagnosis rests on: the route, the rule, the sysctl, a capture, a kernel trace event.
    `extra` holds what a kind adds (the rule's table and handle, a drop reason's scope ...)."""
    kind: str
    detail: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "detail": self.detail, **self.extra}

    @classmethod
    def from_json(cls, d: dict) -> Evidence:
        rest = {k: v for k, v in d.items() if k not in ("kind", "detail")}
        return cls(d["kind"], d["detail"], rest)

    @classmethod
    def of(cls, e: Evidence | dict) -> Evidence:
        return e if isinstance(e, Evidence) else cls.from_json(e)


@dataclass
class FixClaim:
    """A fix is a claim, and says which proof was made of it.

    text      what to do ("fix"), a command where one fits
    command   the command, runnable as printed ("fix_command"), or None
    kernel    an owner-level command's kernel change, which a replica runs instead ("fix_kernel")
    check     the proof on a copy of the model: {checked, delivers, detail, after} ("fix_check")
    verified  the proof on a throwaway replica (`--verify-fix`, "fix_verified")
    proof     one line saying which proof was made ("fix_proof")"""
    text: str = ""
    command: str | None = None
    kernel: str | None = None
    check: dict | None = None
    verified: dict | None = None
    proof: str | None = None

    def to_json(self) -> dict:
        out: dict = {"fix_command": self.command}
        for key, value in (("fix_kernel", self.kernel), ("fix_check", self.check), ("fix_verified", self.verified),
                           ("fix_proof", self.proof)):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, d: dict) -> FixClaim:
        """The fix keys of a result that carries them flat: a diagnosis's JSON, a health check's, a
        check's result."""
        return cls(d.get("fix") or "", d.get("fix_command"), d.get("fix_kernel"), d.get("fix_check"),
                   d.get("fix_verified"), d.get("fix_proof"))


@dataclass
class Reply:
    """A delivered request's answer followed back to the source (its hops are not the request's)."""
    verdict: str
    hops: list[Hop] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "hops": [h.to_json() for h in self.hops]}


@dataclass
class Diagnosis:
    """One flow's diagnosis (DESIGN.md, "Diagnosis contract"). A delivered one names no cause and
    no hop (`delivered()` makes it so)."""
    verdict: str
    cause: str | None = None
    summary: str = ""
    src: str = ""
    dst: str = ""
    dst_ip: str | None = None
    proto: str = "tcp"
    port: int = 0
    size: int = 0
    hops: list[Hop] = field(default_factory=list)
    blocked_at: int | None = None
    evidence: list[Evidence] = field(default_factory=list)
    fix: FixClaim = field(default_factory=FixClaim)
    unevaluated_rules: list[dict] = field(default_factory=list)
    mode: str = "static"
    stale_neighbour: list | None = None   # [where, nexthop, device] of an ARP entry that recently failed
    reply: Reply | None = None
    live: dict | None = None              # the live probe: outcome, detail, last_seen_hop, nftrace, drops ...
    reconciled: str | None = None         # static vs live, in one sentence
    pcap: str | None = None
    paths_resolved: bool = False          # each hop's ns_path was looked up (for a live or recorded probe)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")

    @property
    def blocked_hop(self) -> Hop | None:
        """The hop where the packet died, or None."""
        n = self.blocked_at
        return self.hops[n - 1] if n and 0 < n <= len(self.hops) else None

    def add_evidence(self, items) -> None:
        self.evidence.extend(Evidence.of(e) for e in items)

    def delivered(self, summary: str | None = None) -> None:
        """The flow gets through: no cause, no hop, no fix."""
        self.verdict, self.cause, self.blocked_at = "delivered", None, None
        if summary is not None:
            self.summary, self.fix.text = summary, ""

    def to_json(self) -> dict:
        """The `trace --json` object (schemas/trace.schema.json)."""
        out = {"verdict": self.verdict, "cause": self.cause, "summary": self.summary, "src": self.src, "dst": self.dst,
               "dst_ip": self.dst_ip, "proto": self.proto, "port": self.port, "size": self.size,
               "hops": [h.to_json(self.paths_resolved) for h in self.hops], "blocked_at": self.blocked_at,
               "evidence": [e.to_json() for e in self.evidence], "fix": self.fix.text,
               "unevaluated_rules": self.unevaluated_rules, "mode": self.mode, "stale_neighbour": self.stale_neighbour}
        for key, value in (("reply", self.reply.to_json() if self.reply else None), ("live", self.live),
                           ("reconciled", self.reconciled), ("pcap", self.pcap)):
            if value is not None:
                out[key] = value
        return out | self.fix.to_json()

    @classmethod
    def from_json(cls, d: dict) -> Diagnosis:
        reply = d.get("reply")
        return cls(
            verdict=d["verdict"], cause=d.get("cause"), summary=d.get("summary", ""), src=d.get("src", ""),
            dst=d.get("dst", ""), dst_ip=d.get("dst_ip"), proto=d.get("proto", "tcp"), port=d.get("port", 0),
            size=d.get("size", 0), hops=[Hop.from_json(h) for h in d.get("hops") or []], blocked_at=d.get("blocked_at"),
            evidence=[Evidence.from_json(e) for e in d.get("evidence") or []],
            fix=FixClaim.from_json(d),
            unevaluated_rules=list(d.get("unevaluated_rules") or []), mode=d.get("mode", "static"),
            stale_neighbour=d.get("stale_neighbour"),
            reply=Reply(reply["verdict"], [Hop.from_json(h) for h in reply.get("hops") or []]) if reply else None,
            live=d.get("live"), reconciled=d.get("reconciled"), pcap=d.get("pcap"),
            paths_resolved=any("ns_path" in h for h in d.get("hops") or []))


def as_json(o):
    """`json.dumps(..., default=as_json)`: a result that embeds a Diagnosis (health, check, explain)
    serialises it through its one serialiser."""
    if hasattr(o, "to_json"):
        return o.to_json()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
