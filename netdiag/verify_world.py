"""Which namespaces a `--verify-fix` replica rebuilds (pure over the model): the path the
diagnosis crossed, broken and fixed, plus what the fix names, rather than every namespace joined
to the host, which on a busy host is most of the cost of a verification."""
from __future__ import annotations

from .verify import Names, NotVerifiable, _where, split


def world_snapshot(model, result: dict | None = None, command: str = "") -> dict:
    """The part of the model a replica rebuilds. With a diagnosis (`result`) whose fix was checked
    on the model: the host, the namespaces its path crosses (the request and the reply, as broken
    and as the model check retraced it with the fix applied), those the fix command names, and the
    far ends of veths the path leaves by; veths to anything else are left out (their routes and
    neighbours with them), so no namespace off the path is read or rebuilt. Otherwise: the host,
    its containers and every namespace joined to them by veth pairs."""
    spaces = model.namespaces
    host = model.snap["host"]
    after = ((result or {}).get("fix_check") or {}).get("after") or {}
    if result is not None and "namespaces" not in after:  # where the fixed path goes is not known: the whole world
        result = None
    if result is None:
        kinds = {i: (spaces.meta(i) if hasattr(spaces, "meta") else spaces[i]).get("kind") for i in spaces}
        start = [host] + sorted(i for i, k in kinds.items() if k == "container" and i != host)
        seen, todo = list(start), list(start)
        while todo:
            ns = spaces.get(todo.pop(0)) or {}
            for link in ns.get("links") or []:
                peer = (link.get("peer") or {}).get("ns") if link.get("kind") == "veth" else None
                if peer not in seen and peer in spaces and spaces.get(peer) is not None:
                    seen.append(peer)
                    todo.append(peer)
        keep, trim = seen, False
    else:
        keep = list(dict.fromkeys([host] + [h["namespace"] for h in result.get("hops") or [] if h.get("namespace") in spaces]
                                  + [i for i in after["namespaces"] if i in spaces] + named_by(model, command)))
        for h in result.get("hops") or []:  # a veth the path leaves by: its far end too
            ns = spaces.get(h.get("namespace")) or {}
            link = next((x for x in ns.get("links") or [] if x["name"] == h.get("interface") and x.get("kind") == "veth"), None)
            peer = ((link or {}).get("peer") or {}).get("ns")
            if peer in spaces and peer not in keep and spaces.get(peer) is not None:
                keep.append(peer)
        trim = True
    snap = {k: v for k, v in model.snap.items() if k != "namespaces"}
    snap["namespaces"] = {i: spaces.get(i) for i in keep if spaces.get(i) is not None}
    if trim:
        snap["namespaces"] = {i: _without_veths_out(ns, snap["namespaces"]) for i, ns in snap["namespaces"].items()}
    snap.pop("probes", None)
    return snap


def _without_veths_out(ns: dict, kept: dict) -> dict:
    """`ns` without its veths to namespaces the replica does not rebuild (each would otherwise be a
    stub namespace of its own), nor the routes, neighbours and addresses on them."""
    gone = {x["name"] for x in ns.get("links") or [] if x.get("kind") == "veth"
            and (x.get("peer") or {}).get("ns") not in kept and (x.get("peer") or {}).get("ns") is not None}
    if not gone:
        return ns
    out = dict(ns)
    out["links"] = [x for x in ns["links"] if x["name"] not in gone]
    for key, dev in (("routes", "dev"), ("neighbours", "ifname"), ("addresses", "ifname"), ("fdb", "ifname")):
        if isinstance(ns.get(key), list):
            out[key] = [r for r in ns[key] if r.get(dev) not in gone]
    return out


def named_by(model, command: str) -> list[str]:
    """Ids of the namespaces a fix command acts in (by `ip netns exec NAME`, `ip -n`, `nsenter -t PID`)."""
    if not command:
        return []
    spaces = model.namespaces
    names = Names(host=(model.snap["host"], ""))
    for i in spaces:
        meta = spaces.meta(i) if hasattr(spaces, "meta") else spaces[i]
        for n in meta.get("netns_names") or []:
            names.netns[n] = (i, "")
        for p in meta.get("pids") or []:
            if isinstance(p, int):
                names.pids[p] = (i, "")
    out = []
    try:
        for argv, _ in split(command):
            try:
                out.append(_where(argv, names)[0])
            except NotVerifiable:
                continue
    except NotVerifiable:
        return []
    return out
