"""An overlay's forwarding state against the cluster store: which FDB and ARP entries of a VXLAN
device match the endpoints etcd lists, which are stale (pointing at a VTEP etcd does not give that
MAC, or naming an endpoint etcd does not know) and which are missing. Pure: over the model's
namespaces and its cluster view (netdiag.observe reads the store when the host is a member)."""
from __future__ import annotations

from ..model import Model


def network_of(model: Model, dev: dict) -> dict | None:
    """The cluster's overlay network a VXLAN device carries (by VNI)."""
    vni = (dev.get("vxlan") or {}).get("vni")
    return next((n for n in model.cluster()["networks"] if n.get("vni") == vni), None) if vni is not None else None


def expected(model: Model, dev: dict) -> dict[str, dict] | None:
    """MAC -> {ip, vtep, name, host} that the device should forward: the network's endpoints on
    every live member but the device's own host (known by its VTEP). None: not a cluster overlay."""
    net = network_of(model, dev)
    if net is None:
        return None
    cl = model.cluster()
    hosts = {h["id"]: h for h in cl["hosts"]}
    local = (dev.get("vxlan") or {}).get("local")
    out = {}
    for e in cl["endpoints"]:
        h = hosts.get(e["host"])
        if e["network"] != net["id"] or h is None or h["vtep"] == local:
            continue
        out[e["mac"]] = {"ip": e["ip"], "vtep": h["vtep"], "name": e["name"], "host": h.get("name") or e["host"]}
    return out


def report(model: Model, ns: dict, dev: dict) -> dict | None:
    """The device's FDB and ARP entries, each with its status (ok, stale, unknown), and what the
    store lists that the kernel lacks (missing). None when the device carries no cluster network."""
    want = expected(model, dev)
    if want is None:
        return None
    net = network_of(model, dev)
    fdb = [f for f in ns.get("fdb", []) if f["ifname"] == dev["name"] and f.get("dst")]
    arp = [n for n in ns.get("neighbours", []) if n["ifname"] == dev["name"] and n.get("lladdr")]
    entries = []
    for f in fdb:
        w = want.get((f["lladdr"] or "").lower())
        status = "ok" if w and w["vtep"] == f["dst"] else "stale" if w else "unknown"
        entries.append({"mac": f["lladdr"], "dst": f["dst"], "status": status, "expected": w["vtep"] if w else None,
                        "endpoint": w["name"] if w else None, "host": w["host"] if w else None})
    neighbours = []
    by_ip = {w["ip"]: (mac, w) for mac, w in want.items()}
    for n in arp:
        mac, w = by_ip.get(n["address"], (None, None))
        status = "ok" if w and mac == n["lladdr"].lower() else "stale" if w else "unknown"
        neighbours.append({"ip": n["address"], "mac": n["lladdr"], "state": n.get("state"), "status": status,
                           "expected": mac, "endpoint": w["name"] if w else None})
    have_fdb = {e["mac"].lower() for e in entries}
    have_arp = {n["ip"] for n in neighbours}
    missing = [{"mac": mac, **w, "fdb": mac not in have_fdb, "arp": w["ip"] not in have_arp}
               for mac, w in sorted(want.items()) if mac not in have_fdb or w["ip"] not in have_arp]
    return {"device": dev["name"], "network": net["name"], "vni": net["vni"], "fdb": entries, "neighbours": neighbours,
            "missing": missing}


def agent_note(model: Model, dev: dict) -> str:
    """What a fix of a cluster overlay's FDB or ARP entry must say: netdiag's cluster agent owns
    these entries, but it writes them when the store changes, not when the kernel's copy drifts,
    and no netdiag command re-syncs them: the command puts the store's entry back by hand. ""
    for a VXLAN device that carries no cluster network (a plain one, its owner unknown)."""
    net = network_of(model, dev)
    if net is None:
        return ""
    return (f"the store's entry, put back by hand: netdiag's cluster agent programs {dev['name']} (network {net['name']}) "
            "from the cluster store, but only when the store changes (an endpoint attached or detached, a member joining or "
            "leaving); it does not restore an entry removed or changed on the host, and no netdiag command re-syncs it")
