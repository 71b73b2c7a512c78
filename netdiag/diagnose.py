"""The one diagnosis pipeline: static trace -> live probe (captures per hop, the kernel's own
nftables packet trace, drop reasons) -> counters -> reconcile -> fix check.

`diagnose()` returns the Diagnosis (netdiag.reason.result) that `netdiag trace` prints
(`to_json()`), and that health checks, CI checks and scenarios embed: the CLI only parses
arguments and renders. The static trace makes it; the live probe's evidence and the checked fix
are set on its fields here. Live steps need root; without it (or with
`live=False`, or on a snapshot) the static result stands and says why, unless the snapshot
carries a recorded probe for the same packet (`trace --record`): then that probe's evidence is
reconciled exactly as it was live, so a diagnosis replays offline. `host_evidence=False` leaves
out what is not filtered to the probe (the kernel's drop reasons, counters that moved): a caller
running probes concurrently would get other probes' packets in them.
"""
from __future__ import annotations

import os

from . import driver_plan
from .snapshot_model import Model, ns_path
from .reason import fixes, reconcile, static_trace
from .reason.result import Diagnosis, Evidence


def diagnose(model: Model, src: str, dst: str, *, proto: str = "tcp", port: int = 0, size: int = 0,
             live: bool = True, timeout: float = 2.0, pcap: str | None = None, host_evidence: bool = True,
             record: list | None = None) -> Diagnosis:
    """`record`: a list to which the live probe's raw results are appended (see `recorded_probe`)."""
    result, fix = static_trace.run_static(model, src, dst, proto=proto, port=port, size=size)
    recorded = None if live else recorded_probe(model, result)
    if recorded is not None:
        fix = _replay(model, result, recorded, fix) or fix
    elif live and result.dst_ip:
        fix = _live(model, result, timeout, pcap, host_evidence, record, fix) or fix
    if result.verdict == "delivered":  # the contract: a delivered result names no cause and no hop
        result.delivered()
    result.fix.command = None
    if result.verdict == "blocked" and fix is not None:
        if fix.owner_change:  # what the owner's driver makes of the command: the model check and the replica apply that
            driver_plan.resolve(model, fix)
        result.fix.text, result.fix.command = fix.text(), fix.command or None
        if fix.kernel:  # an owner-level command's kernel change: what a replica can run instead
            result.fix.kernel = fix.kernel
        result.fix.check = fixes.check(model, fix, lambda m: static_trace.run_static(m, src, dst, proto=proto, port=port, size=size)[0])
    return result


def _key(result: Diagnosis) -> dict:
    """What identifies a probe: where it starts, where it goes, and the packet."""
    return {"src_ns": result.hops[0].namespace if result.hops else None, "dst_ip": result.dst_ip,
            "proto": result.proto, "port": result.port, "size": result.size}


def recorded_probe(model: Model, result: Diagnosis) -> dict | None:
    """The snapshot's recorded probe of this same packet, if it has one."""
    key = _key(result)
    return next((p for p in model.snap.get("probes") or [] if all(p.get(k) == v for k, v in key.items())), None)


def _hop_paths(model: Model, result: Diagnosis) -> None:
    """Each hop's namespace path: what the probe entered, and what its evidence names."""
    for hop in result.hops:
        ns = model.namespaces.get(hop.namespace)
        hop.ns_path = ns_path(ns) if ns else None
    result.paths_resolved = True


def _replay(model: Model, result: Diagnosis, recorded: dict, static_fix=None):
    from .probe.live import LiveResult

    _hop_paths(model, result)
    fix = reconcile.merge(model, result, LiveResult(**recorded["live"]), static_fix)
    result.add_evidence(recorded.get("counters") or [])
    result.live["recorded_at"] = model.snap.get("captured_at")
    return fix


def _live(model: Model, result: Diagnosis, timeout: float, pcap: str | None, host_evidence: bool = True,
          record: list | None = None, static_fix=None):
    """Probe for real and reconcile (on `result`). Returns the fix when the live evidence changed the
    static fix (the kernel's verdict replaced it, or named a rule that eats an ICMP error), else None."""
    if os.geteuid() != 0:
        result.live = {"outcome": "skipped", "detail": "the live probe needs root (CAP_SYS_ADMIN, CAP_NET_RAW); static result only"}
        return None
    hops = []
    _hop_paths(model, result)
    src = model.namespaces.get(result.hops[0].namespace) if result.hops else None
    if src is None or ns_path(src) is None:
        result.live = {"outcome": "skipped", "detail": "the source namespace has no path to enter it by"}
        return None
    from .probe import counters, live

    for hop in result.hops:  # one capture per interface: it counts the probe and its answers apart
        if hop.ns_path and hop.kind in ("veth", "bridge", "vxlan", "device", "loopback") and \
                hop.direction in ("egress", "ingress", "forward") and \
                not any((h.ns_path, h.ifname) == (hop.ns_path, hop.interface) for h in hops):
            hops.append(live.Hop(hop.ns_path, hop.interface, f"{hop.label} {hop.interface}"))
    labels = {h.ns_path: h.label for h in result.hops if h.ns_path}
    before = counters.read(list(labels)) if host_evidence else {}
    res = live.probe(ns_path(src), result.dst_ip, proto=result.proto, dport=result.port,
                     size=result.size, hops=hops, timeout=timeout, trace_ns=list(labels), trace_drops=host_evidence)
    fix = reconcile.merge(model, result, res, static_fix)
    deltas = counters.deltas(before, counters.read(list(labels)), labels) if host_evidence else []
    result.add_evidence(deltas)
    if record is not None:
        import dataclasses

        record.append({**_key(result), "live": dataclasses.asdict(res), "counters": deltas})
    if pcap:
        from .probe import pcap as pcap_writer

        try:
            pcap_writer.write(pcap, res)
            result.pcap = pcap
        except (OSError, ValueError) as e:
            result.evidence.append(Evidence("pcap", f"could not write {pcap}: {e}"))
    return fix
