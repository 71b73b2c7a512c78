"""Static prediction and live evidence side by side; where the kernel itself says what happened
to the probe (its nftables packet trace names the rule or policy that dropped it), the kernel
decides. Disagreements are reported, never hidden. Pure: works on the probe's result object.

The kernel decides about the probe's own packets only. A verdict on a related packet (its answer,
an ICMP error quoting it) is evidence for the cause the path explains: an ICMP 'fragmentation
needed' that a rule eats is what turns an MTU step into a black hole, so the black hole names that
rule (in the evidence and in the fix); it is never taken for a drop of the probe.

Branches: the static path and the live outcome agree; the kernel's trace names a drop of the probe
(it decides the verdict and the cause, whatever the static path said); the probe got through although the
static path predicted a block (delivered, with the disagreement shown); the static path delivers
but the probe did not (unknown: something outside the model, with the host-wide drop reasons as
hints); a recently failed ARP entry (NO_NEIGHBOR); the probe could not run (the static result
stands, the failure is evidence).
"""
from __future__ import annotations

from dataclasses import replace

from ..rulesets.nft_text import PROTO_NAMES
from . import attribute
from .fixes import Fix
from .nftables import Packet, Step, rule_text
from .result import Diagnosis, Evidence, Hop
from .stop import sentence

# evidence of a published port's listener that only holds the port (Podman's conmon): a TCP
# handshake with it completes although the port is not forwarded (trace_delivery)
HELD_PORT = "port_reservation"
REFUSED_CAUSES = {"NO_LISTENER", "LISTENER_LOOPBACK_ONLY", "PORT_NOT_PUBLISHED"}
DELIVERED = {"connected", "replied"}
LOST = {"timeout", "unreachable", "too_big"}


def _labels(result: Diagnosis) -> list[str]:
    """What a summary may begin with and keeps as spelled: the hops' names and their devices'."""
    return [h.label for h in result.hops] + [h.interface or "" for h in result.hops] + [result.src or ""]


def merge(model, result: Diagnosis, live, static_fix=None) -> Fix | None:
    """`live` is a netdiag.probe.live.LiveResult. Marks hops seen/unseen, records the kernel's
    trace, reconciles the verdicts (on `result`'s fields). Returns the fix when the live evidence changed
    it (the kernel's verdict replaced the static one, or named the rule that makes `static_fix`'s
    MTU step a black hole), else None: the static fix stands."""
    last_seen = _mark_hops(result, live.seen)
    events = list(getattr(live, "nftrace", None) or [])
    result.live = {"outcome": live.outcome, "detail": live.detail, "elapsed": round(live.elapsed, 3),
                      "last_seen_hop": last_seen, "drops": live.drops, "drops_scope": getattr(live, "drops_scope", "host-wide"),
                      "nftrace": events, "notes": list(getattr(live, "notes", []) or [])}
    if getattr(live, "nftrace_error", None):
        result.evidence.append(Evidence("nft_trace", f"the kernel's packet trace was incomplete: {live.nftrace_error}"))
    for d in live.drops:  # kfree_skb is not filtered to the probe: every packet dropped on the host meanwhile
        result.evidence.append(Evidence("kernel_drop", _drop_text(d, result), {"scope": "host-wide", "reason": d["reason"]}))
    drop = first_drop(events)
    ns_by_path = {h.ns_path: h.namespace for h in result.hops if h.ns_path}
    for e in events:
        if e.get("verdict") in ("drop", "reject") or e is drop:
            detail = _event_text(e)
            if icmp_error(e):
                p = e.get("packet") or {}
                detail += (f": the ICMP error (type {p.get('icmp_type')} code {p.get('icmp_code')}) that would tell the sender "
                           "was dropped on its way back, so the sender never learns"
                           + (" the path MTU: that is what makes it a black hole" if frag_needed(e) else ""))
            elif related(e):
                detail += ": a packet the probe caused (its answer), not the probe itself"
            result.evidence.append(Evidence("nft_trace", detail, {"namespace": ns_by_path.get(e.get("ns_path")),
                                                                   "packet_role": "related" if related(e) else "probe"}))
    static, outcome, cause = result.verdict, live.outcome, result.cause

    if outcome == "error":
        result.reconciled = f"the live probe could not run ({live.detail}); the static result stands"
        return None
    if drop is not None:
        return _kernel_decides(model, result, drop, ns_by_path, last_seen)
    eaten = next((e for e in events if e.get("verdict") in ("drop", "reject") and e.get("type") in ("rule", "policy")
                  and frag_needed(e)), None)
    if static == "blocked" and cause == "MTU_BLACKHOLE" and eaten is not None and outcome != "too_big":
        return _black_hole(model, result, eaten, ns_by_path, static_fix, outcome)
    if static == "delivered" and outcome in LOST and eaten is not None:
        # an MTU step the model does not see (a link it did not observe): the kernel's ICMP says it is there
        return _black_hole_seen(model, result, eaten, ns_by_path, last_seen, outcome)
    answer = next((e for e in events if e.get("verdict") in ("drop", "reject") and e.get("type") in ("rule", "policy")
                   and related(e) and not icmp_error(e)), None)
    if static == "delivered" and outcome in LOST and answer is not None:
        # the request got through, the kernel dropped its answer: the reply's own hop and cause
        return _kernel_decides(model, result, answer, ns_by_path, None, reply=True)
    if static == "blocked" and cause == "MTU_BLACKHOLE" and result.proto == "tcp" and outcome in DELIVERED:
        return _path_mtu_discovered(result, outcome)
    if static == "blocked" and cause == "HOSTPORT_CONFLICT" and outcome in DELIVERED:
        # the probe gets an answer: from the pod that won the port, where the static path ends
        result.reconciled = f"static and live agree: the probe {outcome}, at the pod that has the port (hop {last_seen})"
        return None
    agree = ((static == "delivered" and outcome in DELIVERED)
             or (static == "blocked" and cause in REFUSED_CAUSES and outcome == "refused")
             or (static == "blocked" and cause not in REFUSED_CAUSES and outcome in LOST)
             or (static == "blocked" and outcome == "refused" and " rejects " in result.summary))
    if agree:
        result.reconciled = "static and live agree"
        return None
    if static == "blocked" and outcome == "connected" and any(e.kind == HELD_PORT for e in result.evidence):
        result.reconciled = ("static and live agree: the handshake completes with the socket that only holds the port "
                             "(the kernel accepts into its backlog), and nothing behind it ever answers")
        return None
    result.reconciled = f"DISAGREE: the static path says {static}" + (f" ({cause})" if cause else "") + \
        f", the live probe {outcome} ({live.detail})"
    if outcome in DELIVERED:
        result.delivered(f"The live probe got through ({outcome}) although the static path predicted {cause or static}: "
                         "a rule or state netdiag could not model decides differently")
    elif static == "delivered" and outcome == "unreachable" and result.stale_neighbour:
        where, nexthop, dev = result.stale_neighbour
        result.verdict, result.cause, result.blocked_at = "blocked", "NO_NEIGHBOR", 1
        result.summary = (f"The path is sound, but {where} recently failed to resolve {nexthop} on {dev} (ARP), and the kernel "
                          "refuses new packets to it for a few seconds (No route to host)")
        result.fix.text = f"retry in a few seconds, or clear the entry now: ip neigh flush {nexthop} dev {dev} (in {where})"
        result.reconciled = "static and live agree once the failed ARP entry is taken into account"
    elif static == "delivered":
        result.verdict, result.cause, result.blocked_at = "unknown", None, last_seen
        result.summary = (f"The static path reaches the destination, but the live probe {outcome}"
                          + (f"; it was last seen at hop {last_seen}" if last_seen else "")
                          + "; no netfilter rule dropped it (the kernel's packet trace saw none): something outside "
                            "the model drops it (see the host-wide drop reasons under evidence)")
    return None


def _path_mtu_discovered(result: Diagnosis, outcome: str) -> None:
    """TCP through the MTU step the static path stops at, and no rule ate its ICMP 'fragmentation
    needed': the sender learnt the path MTU and segments to fit, as TCP does. Delivered; the MTU
    step stays in the evidence with its fix, the change that spares every connection that detour."""
    hop = result.hops[result.blocked_at - 1] if result.blocked_at else None
    where = f" at {hop.label} {hop.interface}" if hop else ""
    advice = f" ({result.fix.text})" if result.fix.text else ""
    result.evidence.append(Evidence("mtu", f"path MTU discovery{where}: {result.summary.rstrip('.')}; the live TCP probe "
                                    f"{outcome}, so that ICMP got back and the sender shrank its segments{advice}"))
    result.reconciled = "static and live agree once path MTU discovery is counted: TCP learnt the smaller MTU" + where
    result.delivered(sentence(f"TCP gets through by path MTU discovery: full-size segments do not fit the MTU{where}, the sender "
                              "learns that from the ICMP 'fragmentation needed' and sends smaller ones (see evidence for "
                              "the MTU to lower)", _labels(result)))
    return None


def _mark_hops(result: Diagnosis, seen_list) -> int | None:
    """hop.seen: True/False where a capture ran, None where it could not (never compared as a number)."""
    seen = {(s.get("ns_path"), s.get("ifname")): s for s in seen_list or []}
    last_seen = None
    for hop in result.hops:
        s = seen.get((hop.ns_path, hop.interface))
        if s is not None:
            back = hop.leg == "reply"  # a hop of the reply's way: the capture's count of answers
            count = s.get("replies") if back else s.get("count")
            hop.seen = None if count is None else count > 0
            if s.get("error"):
                hop.capture_error = s["error"]
            if hop.seen and not back:
                last_seen = hop.n
    for hop in result.hops:
        # frames bridged port-to-port never reach the bridge device's own capture: not a miss
        if hop.kind == "bridge" and hop.seen is False and last_seen and last_seen > hop.n:
            hop.seen = None
    return last_seen


def first_drop(events: list[dict]) -> dict | None:
    """The trace event whose verdict ended the probe: a rule or a chain policy that dropped one of
    the probe's own packets (iptables' REJECT shows as a rule with a drop verdict). A related
    packet does not count: an ICMP error on its way back did not kill the probe, it kept the
    sender from learning why; the answer's fate is the way back's, not the probe's."""
    return next((e for e in events if e.get("verdict") in ("drop", "reject") and e.get("type") in ("rule", "policy")
                 and not related(e)), None)


def _proto(p: dict):
    """The trace's events carry the protocol number, a recorded or hand-made one may carry the name."""
    return PROTO_NAMES.get(p.get("proto"), p.get("proto"))


def icmp_error(e: dict) -> bool:
    p = e.get("packet") or {}
    return _proto(p) == "icmp" and p.get("icmp_type") in (3, 11, 12)


def related(e: dict) -> bool:
    """A packet the probe caused, not the probe: its answer, or an ICMP error quoting it."""
    return e.get("direction") == "reply" or icmp_error(e)


def frag_needed(e: dict) -> bool:
    p = e.get("packet") or {}
    return icmp_error(e) and p.get("icmp_type") == 3 and p.get("icmp_code") == 4


def _drop_text(d: dict, result: Diagnosis) -> str:
    text = f"{d['reason']} at {d.get('location', '?')} x{d.get('count', 1)} (host-wide, not only the probe)"
    if d.get("probe_dropped_by"):
        text += f"; the probe itself was dropped by netfilter at {d['probe_dropped_by']}"
    if d.get("related_dropped_by"):
        text += f"; netfilter dropped a packet the probe caused (not the probe) at {d['related_dropped_by']}"
    if d["reason"] == "PKT_TOO_BIG" and result.cause == "MTU_BLACKHOLE":
        text += "; what the MTU step on the path does to a packet too big for it"
    return text


def _black_hole(model, result: Diagnosis, e: dict, ns_by_path: dict, static_fix, outcome: str):
    """The static path's MTU step, and the kernel saw the ICMP 'fragmentation needed' it causes
    dropped by a rule: the black hole is explained, and that rule is named in the evidence, the
    summary and the fix (letting the ICMP through lets path MTU discovery shrink the packets)."""
    ns = model.namespaces.get(ns_by_path.get(e.get("ns_path")) or "")
    rule = attribute.find_rule(ns, e.get("family"), e.get("table"), e.get("chain"), e.get("handle")) \
        if ns is not None and e.get("type") == "rule" else None
    where = f"{e.get('family')} {e.get('table')} {e.get('chain')}" + (f" (handle {e.get('handle')})" if e.get("type") == "rule" else "")
    what = (rule or {}).get("iptables") or (rule_text(rule) if rule else "its policy drop" if e.get("type") == "policy"
                                           else f"rule handle {e.get('handle')}")
    label = ns["label"] if ns is not None else e.get("ns_path")
    result.evidence.append(Evidence("nft_rule", f"{label}: {where}: {what}: drops the ICMP 'fragmentation needed' "
                                    "that would tell the sender the path MTU",
                                    {"table": f"{e.get('family')} {e.get('table')}", "chain": e.get("chain"),
                                     "handle": e.get("handle") if e.get("type") == "rule" else None, "rule": what,
                                     "namespace": ns["id"] if ns is not None else None, "role": "eats the ICMP error"}))
    result.summary += (f"; here it is lost: {label} drops the ICMP 'fragmentation needed' ({where}: {what}), "
                          "so the sender never learns the path MTU")
    result.reconciled = (f"static and live agree (the probe {outcome}): the kernel's packet trace saw the ICMP "
                         f"'fragmentation needed' dropped at {where} in {label}, not the probe")
    cmd = attribute.pass_icmp_command(ns, e, rule) if ns is not None else ""
    if not cmd:
        return None
    why = "lets the ICMP 'fragmentation needed' through, so path MTU discovery makes TCP send smaller segments"
    if static_fix is None:
        fix = Fix(cmd, advice=why, why_unchecked="the model does not follow path MTU discovery")
    else:
        fix = replace(static_fix, alternatives=[*static_fix.alternatives, f"{cmd} ({why})"])
    result.fix.text = fix.text()
    return fix


def _black_hole_seen(model, result: Diagnosis, e: dict, ns_by_path: dict, last_seen: int | None, outcome: str):
    """The static path delivers, but the kernel's trace saw a router answer the probe with ICMP
    'fragmentation needed' and a rule drop that answer: an MTU step the model does not show (a
    link it did not observe), made a black hole by that rule. The hop is the router's."""
    p = e.get("packet") or {}
    origin = model.owner_of_ip(p.get("src") or "")
    if origin is None or not any(h.namespace == origin["id"] for h in result.hops):
        return None
    static = result.verdict
    result.verdict, result.cause, result.blocked_at = "blocked", "MTU_BLACKHOLE", _hop_in(result, origin["id"], last_seen)
    result.summary = sentence(f"{origin['label']} cannot forward the probe: the link it would leave by has a smaller MTU "
                              "than the packet (a link netdiag does not see), and it answered with ICMP 'fragmentation "
                              "needed'", _labels(result))
    fix = _black_hole(model, result, e, ns_by_path, None, outcome)
    result.reconciled = (f"the kernel's packet trace decides: the static path said {static}, the kernel saw "
                         f"{origin['label']} answer the probe with ICMP 'fragmentation needed' and that answer dropped, not the probe")
    return fix


def _event_text(e: dict) -> str:
    what = f"rule handle {e.get('handle')}" if e.get("type") == "rule" else "policy"
    p = e.get("packet") or {}
    return (f"kernel trace: {e.get('family')} {e.get('table')} {e.get('chain')} {what}: verdict {e.get('verdict')} "
            f"for {p.get('src')}:{p.get('sport')} -> {p.get('dst')}:{p.get('dport')} "
            f"(iif {e.get('iif') or '-'}, oif {e.get('oif') or '-'})")


def _kernel_decides(model, result: Diagnosis, e: dict, ns_by_path: dict, last_seen: int | None, reply: bool = False):
    """The kernel's packet trace names the drop: that is the verdict, and the rule says the cause.
    With `reply`, the dropped packet is the probe's answer (an established flow): the reply's own
    hop, and a fix that accepts the connection's answers, never the client's port."""
    ns_id = ns_by_path.get(e.get("ns_path"))
    ns = model.namespaces.get(ns_id) if ns_id else None
    static = (result.verdict, result.cause)
    if ns is None:
        result.reconciled = f"the kernel's trace saw a drop in a namespace the static path did not visit: {_event_text(e)}"
        result.verdict, result.cause, result.summary = "blocked", "FIREWALL_DROP", sentence(_event_text(e), _labels(result))
        return None
    rule = attribute.find_rule(ns, e.get("family"), e.get("table"), e.get("chain"), e.get("handle"))
    text = rule_text(rule) if rule else ("policy drop" if e.get("type") == "policy" else f"rule handle {e.get('handle')}")
    step = Step(e.get("family"), e.get("table"), e.get("chain"), e.get("handle") if e.get("type") == "rule" else None,
                text, (rule or {}).get("comment", ""), "drop" if e.get("type") == "rule" else "policy drop")
    p = e.get("packet") or {}
    probe_dst = result.dst_ip
    proto = PROTO_NAMES.get(p.get("proto"), p.get("proto"))  # the trace's events carry the number
    pkt = Packet(src=p.get("src") or "0.0.0.0", dst=p.get("dst") or probe_dst, proto=proto or result.proto,
                 sport=p.get("sport") or 0, dport=p.get("dport") or 0, iif=e.get("iif"), oif=e.get("oif"),
                 ct_status=frozenset({"dnat"}) if p.get("dst") and p.get("dst") != probe_dst and not reply else frozenset(),
                 ct_state="established" if reply else "new")
    hook = e.get("hook") or ("forward" if e.get("iif") and e.get("oif") else "input" if e.get("iif") else "output")
    src_ns = model.namespaces.get(result.hops[0].namespace) if result.hops else None
    stop = attribute.explain_drop(model, ns, hook, pkt, step, src_ns)
    same = static == ("blocked", stop.cause) and any(ev.extra.get("handle") == step.handle and ev.kind == "nft_rule"
                                                     for ev in result.evidence)
    if same:
        result.reconciled = "static and live agree: the kernel's packet trace names the same rule"
        return None
    if reply:
        result.hops.append(Hop(len(result.hops) + 1, ns_id, ns["label"], e.get("oif") or e.get("iif") or "-", "firewall", hook,
                               None, "where the kernel dropped the reply", leg="reply"))
        result.reconciled = (f"the kernel's packet trace decides: the static path said delivered, the kernel dropped the "
                             f"probe's answer (not the probe) at {e.get('family')} {e.get('table')} {e.get('chain')}")
        _blocked_by(result, stop, len(result.hops),
                    sentence("the request gets through, but its answer does not get back: " + stop.summary, _labels(result)))
        return stop.fix
    hop_n = _hop_in(result, ns_id, last_seen)
    result.reconciled = (f"the kernel's packet trace decides: the static path said {static[0]}"
                         + (f" ({static[1]})" if static[1] else "") + f", the kernel dropped the probe at {e.get('family')} "
                         f"{e.get('table')} {e.get('chain')} ({'handle ' + str(e.get('handle')) if e.get('type') == 'rule' else 'policy'})")
    _blocked_by(result, stop, hop_n, sentence(stop.summary, _labels(result)))
    return stop.fix


def _blocked_by(result: Diagnosis, stop, hop_n: int, summary: str) -> None:
    """The kernel's verdict replaces the static one: blocked at `hop_n`, for the stop's cause and fix."""
    result.verdict, result.cause, result.blocked_at, result.summary = "blocked", stop.cause, hop_n, summary
    result.fix.text = stop.fix.text() if stop.fix else ""
    result.evidence.extend(stop.evidence)


def _hop_in(result: Diagnosis, ns_id: str, last_seen: int | None) -> int:
    """The hop where the kernel dropped it: in that namespace, the first hop after the last one the
    probe was seen at (or the last hop there); a new hop when the static path never went there."""
    here = [h for h in result.hops if h.namespace == ns_id]
    if here:
        after = [h for h in here if last_seen is None or h.n >= last_seen]
        return (after or here)[0].n if after else here[-1].n
    result.hops.append(Hop(len(result.hops) + 1, ns_id, ns_id, "-", "firewall", "forward", None, "where the kernel dropped the probe"))
    return len(result.hops)


__all__ = ["merge", "first_drop"]
