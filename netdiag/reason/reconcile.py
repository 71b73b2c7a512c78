"""Put the static prediction and the live probe side by side: agree, or say how they differ."""
from __future__ import annotations

REFUSED_CAUSES = {"NO_LISTENER", "LISTENER_LOOPBACK_ONLY", "PORT_NOT_PUBLISHED"}
DELIVERED = {"connected", "replied"}


def merge(result: dict, live) -> dict:
    """`live` is a netdiag.probe.live.LiveResult. Marks hops seen/unseen and reconciles verdicts."""
    seen = {(s["ns_path"], s["ifname"]): s for s in live.seen}
    last_seen = None
    for hop in result["hops"]:
        key = (hop.get("ns_path"), hop["interface"])
        if key in seen:
            hop["seen"] = seen[key]["count"] > 0
            if hop["seen"]:
                last_seen = hop["n"]
    for hop in result["hops"]:
        # frames bridged port-to-port never reach the bridge device's own capture: not a miss
        if hop["kind"] == "bridge" and hop["seen"] is False and last_seen and last_seen > hop["n"]:
            hop["seen"] = None
    result["live"] = {"outcome": live.outcome, "detail": live.detail, "elapsed": round(live.elapsed, 3),
                      "last_seen_hop": last_seen, "drops": live.drops}
    for d in live.drops:
        result["evidence"].append({"kind": "kernel_drop", "detail": f"{d['reason']} at {d.get('location', '?')} x{d.get('count', 1)}"})
    static, outcome, cause = result["verdict"], live.outcome, result["cause"]
    agree = ((static == "delivered" and outcome in DELIVERED)
             or (static == "blocked" and cause in REFUSED_CAUSES and outcome == "refused")
             or (static == "blocked" and cause not in REFUSED_CAUSES and outcome in ("timeout", "unreachable", "too_big"))
             or (static == "blocked" and outcome == "refused" and " rejects " in result["summary"]))
    if agree:
        result["reconciled"] = "static and live agree"
        return result
    result["reconciled"] = f"DISAGREE: the static path says {static}" + (f" ({cause})" if cause else "") + f", the live probe {outcome} ({live.detail})"
    if outcome in DELIVERED:
        result.update(verdict="delivered", cause=None, blocked_at=None, fix="",
                      summary=f"The live probe got through ({outcome}) although the static path predicted {cause or static}: "
                              "a rule or state netdiag could not model decides differently")
    elif static == "delivered" and outcome == "unreachable" and result.get("stale_neighbour"):
        where, nexthop, dev = result["stale_neighbour"]
        result.update(verdict="blocked", cause="NO_NEIGHBOR", blocked_at=1,
                      summary=f"The path is sound, but {where} recently failed to resolve {nexthop} on {dev} (ARP), and the kernel "
                              "refuses new packets to it for a few seconds (No route to host)",
                      fix=f"retry in a few seconds, or clear the entry now: ip neigh flush {nexthop} dev {dev} (in {where})")
        result["reconciled"] = "static and live agree once the failed ARP entry is taken into account"
    elif static == "delivered":
        result.update(verdict="unknown", cause=None, blocked_at=last_seen,
                      summary=f"The static path reaches the destination, but the live probe {outcome}"
                              + (f"; it was last seen at hop {last_seen}" if last_seen else "")
                              + ": something outside the model drops it (see evidence)")
    return result
