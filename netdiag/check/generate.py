"""`netdiag check --generate`: a starting check file from what runs now, so a CI job can pin
today's working network: every container pair that talks today (the host's connection table:
TCP connections that were established, UDP flows that were answered) is reachable on that port,
and resolves by name where they share a user-defined network; every published port stays
published and listened on; every internal network stays internal. Pure over the model.
"""
from __future__ import annotations

TCP, UDP = 6, 17
IPS_SEEN_REPLY, IPS_ASSURED = 0x2, 0x4
DEFAULT_NETWORKS = {"bridge", "host", "none", "default"}


def generate(model) -> dict:
    by_ip: dict[str, tuple[dict, str]] = {}
    for c in model.containers():
        for net, ep in (c.get("networks") or {}).items():
            if ep.get("ip"):
                by_ip[ep["ip"]] = (c, net)
    checks, pairs, resolved = [], set(), set()
    for e in sorted(model.host.get("conntrack") or [], key=lambda e: (e.get("src") or "", e.get("dst") or "", e.get("dport") or 0)):
        proto = {TCP: "tcp", UDP: "udp"}.get(e.get("proto"))
        wanted = IPS_ASSURED if proto == "tcp" else IPS_SEEN_REPLY
        if proto is None or not (e.get("status") or 0) & wanted or e.get("src") not in by_ip or e.get("dst") not in by_ip:
            continue
        (src, _), (dst, dnet) = by_ip[e["src"]], by_ip[e["dst"]]
        key = (src["name"], dst["name"], proto, e["dport"])
        if src["name"] == dst["name"] or key in pairs:
            continue
        pairs.add(key)
        checks.append({"reach": {"from": src["name"], "to": dst["name"], "port": e["dport"], "proto": proto}})
        shared = set(src.get("networks") or {}) & set(dst.get("networks") or {}) - DEFAULT_NETWORKS
        if shared and (src["name"], dst["name"]) not in resolved:
            resolved.add((src["name"], dst["name"]))
            net = dnet if dnet in shared else sorted(shared)[0]
            name = (dst.get("compose") or {}).get("service") or dst["name"]  # what a Compose stack's apps resolve
            checks.append({"dns": {"from": src["name"], "name": name, "address": dst["networks"][net]["ip"]}})
    for c in sorted(model.containers(), key=lambda c: c["name"]):
        for p in c.get("ports") or []:
            checks.append({"published": {"target": c["name"], "port": p["ctr_port"], "proto": p["proto"], "host_port": p["host_port"]}})
            checks.append({"listening": {"target": c["name"], "port": p["ctr_port"], "proto": p["proto"]}})
    for n in sorted(model.snap.get("networks") or [], key=lambda n: n.get("name") or ""):
        if n.get("internal"):
            checks.append({"internal": {"network": n["name"]}})
    return {"version": 1, "checks": checks}


def to_yaml(doc: dict, source: str) -> str:
    import yaml

    head = (f"# netdiag check file generated from {source}: what works today.\n"
            "# Run it with: netdiag check FILE   (the format: netdiag check --help)\n")
    if not doc["checks"]:
        head += "# No container pair talks today and nothing is published: add checks below.\n"
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=140)
