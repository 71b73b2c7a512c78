"""`netdiag health`: resolve like the source, check like a load balancer (N times), and when the
check fails, find out why before answering:

- the handshake failed: the trace pipeline (netdiag.diagnose) on the same source, address and
  port names the cause, the hop, the evidence and a checked fix; when it cannot (the path works
  now, or a rule drops packets at random), a burst of handshakes measures the share that gets
  through (PACKET_LOSS);
- the answer did not come in time: while the check keeps listening for the late answer (to
  measure it), a full-size packet is traced from the server back to the source: MTU_BLACKHOLE if
  it dies on the way, SLOW_RESPONSE otherwise.

Everything is read-only; `--fix` lives in the CLI and fix.py.
"""
from __future__ import annotations

import re
import shlex
import threading
import time

from runtime.errors import InvalidArgument, NetdiagError, NotFound, PermissionDenied

from ..probe.handshakes import burst
from ..reason import fixes
from ..reason.fixes import in_ns, owner_cli, recreate
from ..reason.result import Diagnosis, FixClaim, Hop
from . import classify, fix_proofs, resolve
from .lb_probe import LbProbe
from .spec import Spec

GRACE = 2.0          # how long past the deadline a late answer is waited for (and measured)
PROBE_TIMEOUT = 1.0  # the trace pipeline's live probe: a dropped SYN costs this long


def container_of(model, ns: dict) -> dict | None:
    """The container (netdiag's or Docker's) whose namespace `ns` is."""
    return next((c for c in model.containers() if c.get("ns") == ns.get("id")), None)


def find_container(model, ref: str) -> dict | None:
    """A container by name, id or unique id prefix (like Docker), or None; `podman:web` names one
    engine's, `cni:ID` a CNI pod."""
    from netdiag.snapshot_model import ENGINES

    from .spec import MODEL_NAMED

    if ref.partition(":")[0] in ENGINES or ref.startswith(MODEL_NAMED):
        return model.container(ref)
    ref = ref.lstrip("/")
    hits = [c for c in model.containers() if ref in (c["name"], c["id"])]
    if not hits and len(ref) >= 3 and all(ch in "0123456789abcdef" for ch in ref):
        hits = [c for c in model.containers() if c["id"].startswith(ref)]
    if len(hits) > 1:
        raise InvalidArgument(f"{ref!r} matches {len(hits)} containers", "", "give more of the id, or the name")
    return hits[0] if hits else None


class Source:
    """The namespace a check runs from: how to enter it, whose resolver files it reads."""

    def __init__(self, model, target: str):
        from netdiag.snapshot_model import ns_path

        try:
            self.ns = model.resolve(target)
        except NotFound as e:
            raise InvalidArgument(f"Unknown source {target!r}", e.why or str(e.what),
                                  "give a container name or id, ns:NAME, pid:N or host") from None
        self.target, self.model = target, model
        self.path = ns_path(self.ns)
        if self.path is None:
            raise PermissionDenied(f"Cannot enter {self.ns['label']}", "it has no process and no ip netns name to enter it by", "")
        self.container = container_of(model, self.ns)
        self.files = resolve.files_for(self.ns, self.container)
        self.label = self.ns["label"]


def _probe_once(spec: Spec, src: Source) -> tuple[dict, LbProbe | None, dict | None]:
    """One probe: (its result, the LbProbe while an answer may still come, the resolution)."""
    t0 = time.monotonic()
    deadline = t0 + spec.timeout
    resolution, address, dns_time = None, spec.host, None
    try:
        if not spec.is_ip:
            resolution = resolve.resolve(src.path, spec.host, src.files, deadline)
            dns_time = resolution["elapsed"]
            if resolution["address"] is None:
                return ({"ok": False, "stage": "resolve", "error": resolution["error"], "detail": resolution["answer"],
                         "status": None, "address": None, "port": spec.port, "local": None, "received": 0, "body": "",
                         "timings": {"dns": dns_time, "connect": None, "first_byte": None, "total": round(time.monotonic() - t0, 4)}},
                        None, resolution)
            address = resolution["address"]
        c = LbProbe(src.path, address, spec, started=t0, deadline=deadline, dns_time=dns_time)
        res = c.run()
    except PermissionError as e:
        raise PermissionDenied(f"Cannot enter {src.label}'s network namespace", e.strerror or str(e), "run netdiag as root") from None
    except FileNotFoundError as e:
        raise NetdiagError(f"{src.label} is gone", str(e), "") from None
    except OSError as e:  # the namespace vanished under us, or the kernel refused a socket
        raise NetdiagError(f"Cannot check from {src.label}", e.strerror or str(e), "") from None
    if not c.pending:
        c.close()
        c = None
    return res, c, resolution


class Measured:
    """The checks of one `health` run: their results, the last one whose answer may still come,
    and how the name resolved."""

    def __init__(self):
        self.checks: list[dict] = []
        self.pending: LbProbe | None = None
        self.resolution: dict | None = None

    def close(self) -> None:
        if self.pending is not None:
            self.pending.close()
            self.pending = None


def measure(spec: Spec, src: Source, progress=None) -> Measured:
    """Run the check spec.count times (no model access: safe in a thread of its own).
    `progress(done, count, failed)` is called after each check."""
    m = Measured()
    try:
        for i in range(spec.count):
            started = time.monotonic()
            res, c, m.resolution = _probe_once(spec, src)
            m.checks.append(res)
            if progress is not None:
                progress(i + 1, spec.count, sum(not r["ok"] for r in m.checks))
            if c is not None:
                m.close()
                m.pending = c
            if i + 1 < spec.count:
                time.sleep(max(0.0, started + spec.interval - time.monotonic()))
    except BaseException:
        m.close()
        raise
    return m


def conclude(model, spec: Spec, src: Source, m: Measured, *, probe_timeout: float = PROBE_TIMEOUT) -> dict:
    """The verdict on measured checks; a failure is diagnosed first (the trace pipeline)."""
    try:
        checks = m.checks
        failed = [r for r in checks if not r["ok"]]
        series = _series(checks) if spec.count > 1 else None
        rep = _representative(failed) if failed else checks[-1]
        t_fail = time.monotonic()
        extra = _explain(model, spec, src, rep, m.resolution, m.pending, series, probe_timeout) if failed else {}
    finally:
        m.close()
    verdict = classify.classify(spec, rep, src=src.label, resolution=m.resolution, series=series, **extra)
    out = {**verdict, "target": spec.show(), "from": src.label, "check": spec.to_dict(),
           "address": rep.get("address"), "port": spec.port, "timings": rep["timings"], "status": rep.get("status"),
           "failure": None if rep["ok"] else {"stage": rep["stage"], "error": rep["error"], "detail": rep["detail"]},
           "body": rep.get("body") or None, "resolution": _public(m.resolution),
           "diagnosis": extra.get("diagnosis") or (extra.get("mtu") or {}).get("live"), "series": series}
    if failed:
        out["diagnosed_in"] = round(time.monotonic() - t_fail, 3)
    return out


def run_health(spec: Spec, src_target: str, *, model=None, probe_timeout: float = PROBE_TIMEOUT, progress=None) -> dict:
    from netdiag.observe.snapshot import live_model

    model = model or live_model()
    spec = model_named(model, spec)
    src = Source(model, src_target)
    return conclude(model, spec, src, measure(spec, src, progress), probe_timeout=probe_timeout)


def model_named(model, spec: Spec) -> Spec:
    """A target named as only the model knows it (`cni:ID`: a CNI pod, in no resolver) checked at
    the pod's address, the name kept for what is shown; other specs as they are."""
    from dataclasses import replace

    from .spec import MODEL_NAMED

    if not spec.host.startswith(MODEL_NAMED):
        return spec
    pod = model.container(spec.host)
    ip = next((e.get("ip") for e in ((pod or {}).get("networks") or {}).values() if e.get("ip")), None)
    if pod is None or ip is None:
        raise InvalidArgument(f"Unknown target {spec.host!r}", "no CNI pod with an address has that id on this host",
                              "list the pods with 'netdiag topo' (cni:ID, or the pod's namespace name with --from)")
    header = spec.host_header or (ip if spec.port == 80 else f"{ip}:{spec.port}")
    return replace(spec, host=ip, endpoint=pod["name"], host_header=header)


def _series(checks: list[dict]) -> dict:
    """Success rate and latency of a series. p50/p95 count every check at the time it took, a
    failed one too (a timeout at its timeout): 12 of 20 timed out is a p95 of the timeout, not of
    the 8 that answered; answered_p50/p95 are those of the answered checks only."""
    ok = [r for r in checks if r["ok"]]
    answered = sorted(r["timings"]["total"] for r in ok)
    totals = sorted(t for t in ((r.get("timings") or {}).get("total") for r in checks) if t is not None)
    failures: dict[str, int] = {}
    for r in checks:
        if not r["ok"]:
            key = f"{r['stage']}:{r['error']}"
            failures[key] = failures.get(key, 0) + 1
    return {"count": len(checks), "ok": len(ok), "success_rate": round(len(ok) / len(checks), 3),
            "p50": _pct(totals, 50), "p95": _pct(totals, 95),
            "answered_p50": _pct(answered, 50), "answered_p95": _pct(answered, 95), "failures": failures}


def _pct(values: list[float], p: int) -> float | None:
    if not values:
        return None
    k = max(0, min(len(values) - 1, -(-len(values) * p // 100) - 1))  # nearest rank
    return values[k]


def _representative(failed: list[dict]) -> dict:
    """The most common way the checks failed (the last of them: the freshest evidence)."""
    counts: dict[tuple, int] = {}
    for r in failed:
        counts[(r["stage"], r["error"])] = counts.get((r["stage"], r["error"]), 0) + 1
    top = max(counts, key=counts.get)
    return [r for r in failed if (r["stage"], r["error"]) == top][-1]


def _explain(model, spec: Spec, src: Source, rep: dict, resolution, pending: LbProbe | None, series, probe_timeout) -> dict:
    from netdiag.diagnose import diagnose

    stage = rep["stage"]
    if stage == "resolve":
        resolution["hint"] = dns_hint(model, src, spec.host)
        if resolution["hint"].get("fix_command"):  # a change of networks makes it resolve: that is the fix
            return {}
        return {"diagnosis": _resolver_path(diagnose, model, src, resolution, probe_timeout)}
    if stage == "connect":
        diag = _diagnose(diagnose, model, src.target, rep["address"], proto="tcp", port=spec.port, timeout=probe_timeout)
        loss = None
        if series and 0 < series["ok"] < series["count"]:
            loss = {"rate": series["success_rate"], "ok": series["ok"], "attempts": series["count"], "source": "series",
                    "errors": series["failures"]}
        elif diag is None or diag.verdict != "blocked" or classify._probabilistic(diag):
            loss = burst(src.path, rep["address"], spec.port)
        rule = classify._probabilistic(diag)
        if loss and rule:
            loss["fix_command"] = _delete_rule_cmd(model, rule, diag)
            ns_id = _rule_ns(model, rule, diag)
            if loss["fix_command"] and ns_id:
                loss["fix_check"] = fix_proofs.loss_check(model, ns_id, rule, lambda m: _static(m, src.target, rep["address"], spec.port))
        return {"diagnosis": diag, "loss": loss}
    if stage == "response" and rep["error"] == "timeout":
        late: dict = {}
        waiter = None
        if pending is not None and pending.pending and rep.get("local") == (list(pending.local) if pending.local else None):
            waiter = threading.Thread(target=lambda: late.update(r=pending.finish(pending.deadline + GRACE)), daemon=True)
            waiter.start()
        mtu = _mtu_trace(diagnose, model, src, rep, probe_timeout)
        if waiter is not None:
            waiter.join()
        rep["waited"] = round(spec.timeout + (GRACE if waiter is not None else 0), 3)
        return {"mtu": mtu, "late": late.get("r")}
    return {}


def _diagnose(diagnose, model, src: str, dst: str, **kw) -> Diagnosis:
    try:
        return diagnose(model, src, dst, **kw)
    except NetdiagError as e:
        return Diagnosis("unknown", summary=f"the trace could not run: {e}", src=src, dst=dst,
                         proto=kw.get("proto", "tcp"), port=kw.get("port", 0), size=kw.get("size", 0))


def _mtu_trace(diagnose, model, src: Source, rep: dict, probe_timeout: float) -> dict | None:
    """A full-size packet from the server back to the source, as ICMP with DF, so an MTU step on the
    way back shows. The server is where the static path delivers the check's SYN (after any DNAT),
    the size what its segments can be: the smaller of the two ends' MTUs."""
    local = rep.get("local")
    if not local:
        return None
    static = _diagnose(diagnose, model, src.target, rep["address"], proto="tcp", port=rep["port"], live=False)
    hops = [h for h in static.hops if h.leg != "reply"]  # the request's way
    if not hops:
        return None
    ns = model.namespaces[hops[-1].namespace]
    ifname = next((h.interface for h in hops if h.namespace == ns["id"] and h.direction == "ingress"), None)
    link = next((x for x in ns["links"] if x["name"] == ifname), {}) if ifname else {}
    sizes = [m for m in (rep.get("path_mtu"), link.get("mtu")) if m]
    server = target_of(model, ns)
    if not sizes or server is None:
        return None
    kw = dict(proto="icmp", size=min(sizes) - 28)
    # the static path names the MTU step; the live probe shows whether the server would learn of it
    # (an ICMP 'fragmentation needed' that a rule drops is what turns the step into a black hole)
    return {"static": _diagnose(diagnose, model, server, local[0], live=False, **kw),
            "live": _diagnose(diagnose, model, server, local[0], timeout=probe_timeout, **kw)}


def target_of(model, ns: dict) -> str | None:
    """A target string (as trace takes it) that names this namespace."""
    if ns.get("kind") == "host":
        return "host"
    c = container_of(model, ns)
    if c is not None:
        return c["name"]
    if ns.get("netns_names"):
        return f"ns:{ns['netns_names'][0]}"
    return f"pid:{ns['pids'][0]}" if ns.get("pids") else None


def _static(model, src: str, dst: str, port: int) -> Diagnosis:
    from ..reason.static_trace import run_static

    return run_static(model, src, dst, proto="tcp", port=port)[0]


def _resolver_path(diagnose, model, src: Source, resolution: dict, probe_timeout: float) -> Diagnosis | None:
    """A nameserver that did not answer (timeout, unreachable): the trace of the query's own path
    (UDP to port 53), whose cause, hop and checked fix say why. None when the resolver answered
    (the name is unknown there) or is on the source's own loopback (Docker's 127.0.0.11)."""
    if (resolution or {}).get("error") not in ("timeout", "unreachable"):
        return None
    server = next((ns for ns in resolution.get("nameservers") or [] if not ns.startswith("127.")), None)
    if server is None:
        return None
    diag = _diagnose(diagnose, model, src.target, server, proto="udp", port=53, timeout=probe_timeout)
    return diag if diag.verdict == "blocked" else None


def _rule_ns(model, rule: dict, diag: Diagnosis) -> str | None:
    """The namespace of the hop the trace found the loss rule in."""
    ns_id = next((h.namespace for h in diag.hops if h.label == rule.get("namespace")), None)
    return ns_id if ns_id in model.namespaces else None


def _delete_rule_cmd(model, rule: dict, diag: Diagnosis) -> str | None:
    """The command that deletes the loss rule, in the namespace of the hop the trace found it in."""
    ns_id = _rule_ns(model, rule, diag)
    if ns_id is None or rule.get("handle") is None:
        return None
    ns = model.namespaces[ns_id]
    return in_ns(ns, ["nft", "delete", "rule", rule["family"], rule["table"], rule["chain"], "handle", str(rule["handle"])])


def dns_hint(model, src: Source, name: str) -> dict:
    """When netdiag knows the name the source cannot resolve: why the source's resolver does not,
    and the change that makes it resolve there."""
    key = name.rstrip(".").lower()
    target = next((c for c in model.containers() if c["name"].lower() == key or c["id"].startswith(key) and len(key) >= 12
                   or any(key in [a.lower() for a in n.get("aliases", [])] for n in (c.get("networks") or {}).values())), None)
    if target is None:
        return {"fix": f"check the name: {src.label} resolves through {src.files.where}; use a name its resolver knows, "
                       "or the address (manual: no container or network alias netdiag knows has that name, so which name "
                       "was meant, and no command, can be given)"}
    nets = target.get("networks") or {}
    where = ", ".join(f"{n['ip']} on network {k}" for k, n in nets.items() if n.get("ip")) or "no network address"
    detail = f"{name} is a {target.get('runtime') or ''} container ({where})".replace("  ", " ")
    mine = set((src.container or {}).get("networks") or {})
    user_nets = [k for k in nets if k not in ("bridge", "host", "none")]
    cli = owner_cli((src.container or {}).get("runtime"))
    if src.container is None:
        return {"detail": detail + f", but {src.label} is no container: it resolves through {src.files.where}",
                "fix": f"use the address ({where}), or add the name to {src.files.hosts} (manual: {src.label} is on no "
                       "network whose DNS could answer, and a hosts-file line is an edit of a file, not a command)"}
    if mine <= {"bridge"}:
        detail += (f"; {src.label} is on the default bridge only, which has no container DNS (exactly like Docker): "
                   f"it asks the host's nameservers, which do not know container names")
        same = target.get("runtime") == src.container.get("runtime")
        net = user_nets[0] if user_nets and same else None
        pre = ""
        if net is None and same:  # neither is on a user network: make one, named after the two
            net = re.sub(r"[^A-Za-z0-9_.-]", "", f"{src.container['name']}-{target['name']}")[:48] or "appnet"
            pre = f"{cli} network create {shlex.quote(net)} && {cli} network connect {shlex.quote(net)} {shlex.quote(target['name'])} && "
        cmd = recreate(src.container, network=net) if net else ""
        if cmd:
            # with `pre`, the new network has the target connected to it first
            check = fix_proofs.dns_check(model, src.container["name"], net, name, joining=[target] if pre else [])
            return {"detail": detail, "fix_command": pre + cmd, "fix_check": check,
                    "fix": f"{pre}{cmd}  # run {src.container['name']} on {net}, whose DNS knows {target['name']}; or use the address"}
        return {"detail": detail, "fix": f"run both on one user-defined network, whose DNS resolves container names; or use the "
                                         f"address ({where}) (manual: " + (fixes.no_command(src.container).removeprefix("manual: ") if same else
                                         "they belong to different runtimes, whose networks the other cannot join") + ")"}
    if not mine & set(nets):
        net = user_nets[0] if user_nets else next(iter(nets), None)
        detail += f"; {src.label} is on {', '.join(sorted(mine))}, not on {', '.join(nets) or 'its network'}: its DNS only knows its own networks' names"
        if net and net != "bridge":
            cmd = f"{cli} network connect {shlex.quote(net)} {shlex.quote(src.container['name'])}"
            return {"detail": detail, "fix_command": cmd, "fix_check": fix_proofs.dns_check(model, src.container["name"], net, name),
                    "fix": f"{cmd}  # then {name} resolves (and is reachable) from it"}
    return {"detail": detail + f"; yet {src.label}'s resolver ({src.files.where}) does not answer for it",
            "fix": "check the network's DNS resolver (netdiag network inspect) and the container's resolv.conf (manual: "
                   "they share a network whose DNS should know the name, so no change of membership helps, and what is "
                   "wrong with the resolver is not in the model)"}


def _public(resolution: dict | None) -> dict | None:
    if resolution is None:
        return None
    keep = ("name", "address", "source", "server", "answer", "error", "where", "resolv_conf", "nameservers", "search", "attempts", "elapsed")
    return {k: resolution.get(k) for k in keep}


def verify_fix(model, result: dict, src: str, timeout: float) -> dict:
    """fix_verified for a failed health check, on a replica: the flow the fix is about (the
    diagnosis's flow: the check's connection, or the query to an unreachable resolver), from SRC;
    PACKET_LOSS counted over a burst of handshakes before and after the fix."""
    from .. import verify as verifier

    diag = result.get("diagnosis")
    dst_ip = diag.dst_ip if diag else None
    if result.get("cause") == "DNS_FAILURE" and not dst_ip:
        return {"replica": None, "detail": "the name does not resolve and no blocked path to the resolver was found: the fix "
                                           "changes which names a network's DNS knows (or is manual), which a replica of plain "
                                           "namespaces cannot probe"}
    if not dst_ip and not result.get("address"):
        return {"replica": None, "detail": "the check reached no address (the name did not resolve): nothing to probe on a replica"}
    hops = (diag.hops if diag else []) or [Hop(1, Source(model, src).ns["id"], result.get("from") or "", "", "", "")]
    fix = FixClaim(result.get("fix") or "", result.get("fix_command"), diag.fix.kernel if diag else None, result.get("fix_check"))
    if dst_ip and result.get("cause") == "DNS_FAILURE":  # the resolver's way
        flow = Diagnosis("blocked", dst_ip=dst_ip, proto=diag.proto, port=diag.port, hops=hops, fix=fix)
    else:
        flow = Diagnosis("blocked", dst_ip=result["address"], proto="tcp", port=result.get("port") or 0, hops=hops, fix=fix)
    count = 20 if result.get("cause") == "PACKET_LOSS" else 1
    return verifier.verify(model, flow, timeout=timeout, count=count)
