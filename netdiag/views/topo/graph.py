"""The neutral graph every topology view starts from (vocabulary in the package docstring), the
trace overlay on it, and the lookups the renderers share (View)."""
from __future__ import annotations

GRAPH_SCHEMA = "netdiag.topo/1"
ICC_OPTION = "com.docker.network.bridge.enable_icc"  # Docker's driver option; netdiag's networks take the same
_PHYSICAL_KINDS = {"device", "bond", "team", "vlan", "macvlan", "ipvlan", "wireguard"}
_NS_ORDER = {"host": 0, "netns": 1, "pid": 2, "container": 3}


def graph(snapshot: dict, *, trace: dict | None = None) -> dict:
    """The snapshot as namespaces with interfaces, and the wires between them."""
    namespaces = snapshot.get("namespaces") or {}
    host = snapshot.get("host")
    containers = _containers_by_ns(snapshot)
    networks = _networks_by_bridge(snapshot)
    nodes, edges = [], []
    for ns in _ordered_namespaces(namespaces, host):
        nodes.append(_ns_node(ns, host, containers.get(ns["id"])))
        links = sorted(ns.get("links") or [], key=lambda link: (link.get("index") or 0, link.get("name") or ""))
        for link in links:
            nodes.append(_link_node(ns, link, namespaces, host, networks))
    by_id = {n["id"]: n for n in nodes}
    edges += _veth_edges(nodes, by_id, host)
    edges += _member_edges(nodes, by_id)
    edges += _underlay_edges(nodes, by_id)
    g = {"schema": GRAPH_SCHEMA, "host": host, "hostname": snapshot.get("hostname", ""),
         "captured_at": snapshot.get("captured_at", ""), "nodes": nodes, "edges": edges,
         "networks": _bridge_networks(snapshot), "trace": None}
    if trace:
        _overlay_trace(g, trace, namespaces)
    return g


def _containers_by_ns(snapshot: dict) -> dict[str, dict]:
    """Each namespace's container: the one that holds it, not one joined to it (`container:X`, a pod's member)."""
    found = snapshot.get("containers") or []
    joined = [c for c in found if c.get("ns") and str(c.get("network_mode") or "").startswith("container:")]
    return {c["ns"]: c for c in [*joined, *(c for c in found if c.get("ns") and c not in joined)]}


def _bridge_networks(snapshot: dict) -> dict[str, str]:
    """Bridge device name -> runtime network name (e.g. docker0 -> bridge)."""
    return {n["bridge"]: n.get("name", "") for n in snapshot.get("networks") or [] if n.get("bridge")}


def _networks_by_bridge(snapshot: dict) -> dict[str, dict]:
    """Bridge device name -> the network it carries: its name, which engine owns it, and whether it
    is isolated (icc off: its containers may not talk to each other; internal: no way out)."""
    out = {}
    for n in snapshot.get("networks") or []:
        if n.get("bridge"):
            marks = network_marks(n)
            out[n["bridge"]] = {"name": n.get("name", ""), "engine": n.get("runtime", ""), "driver": n.get("driver", ""),
                                "icc": "icc=false" not in marks, "internal": "internal" in marks, "marks": marks}
    return out


def network_marks(net: dict) -> list[str]:
    """A snapshot network's isolation, as the words the pictures show: "icc=false", "internal"."""
    icc = str((net.get("options") or {}).get(ICC_OPTION, "true")).lower() in ("true", "1", "yes")
    return [m for m, on in (("icc=false", not icc), ("internal", bool(net.get("internal")))) if on]


def _ordered_namespaces(namespaces: dict, host: str | None) -> list[dict]:
    def key(ns):
        return (ns["id"] != host, _NS_ORDER.get(ns.get("kind"), 9), _ns_name(ns, None), ns["id"])
    return sorted(namespaces.values(), key=key)


def _ns_name(ns: dict, container: dict | None) -> str:
    if container and container.get("infra") and container.get("pod"):  # a Podman pod, named as Podman names it
        return container["pod"]
    if container and container.get("name"):
        return container["name"]
    return ns.get("name") or ns.get("label") or ns["id"]


def _ns_node(ns: dict, host: str | None, container: dict | None) -> dict:
    info = None
    if container:
        info = {"id": container.get("id", ""), "name": container.get("name", ""), "image": container.get("image", ""),
                "runtime": container.get("runtime", ""), "ports": container.get("ports") or [],
                **({"members": container.get("members") or []} if container.get("infra") else {})}
    runtime = ns.get("runtime") or (info or {}).get("runtime") or ""
    # engine: who runs the container in it ("netdiag", "docker"); "" for the host and plain namespaces
    engine = runtime if ns.get("kind") == "container" else ""
    return {"id": ns["id"], "kind": "namespace", "ns_kind": ns.get("kind", ""), "parent": None,
            "label": _ns_name(ns, container), "is_host": ns["id"] == host, "runtime": runtime, "engine": engine,
            "container": info, "trace": None, "hops": []}


def _link_node(ns: dict, link: dict, namespaces: dict, host: str | None, networks: dict) -> dict:
    name = link.get("name") or f"if{link.get('index')}"
    addrs = [f"{a['address']}/{a['prefixlen']}" for a in ns.get("addresses") or []
             if a.get("ifname") == name and a.get("scope") != "link"]
    peer_id, peer_unknown = _peer_id(link, namespaces)
    node = {"id": f"{ns['id']}/{name}", "kind": link.get("kind") or "device", "link_kind": link.get("kind") or "device",
            "parent": ns["id"], "name": name, "index": link.get("index"), "addresses": addrs,
            "mac": link.get("mac") or "", "mtu": link.get("mtu"), "up": bool(link.get("up")),
            "status": _status(link), "master": f"{ns['id']}/{link['master']}" if link.get("master") else None,
            "peer": peer_id, "peer_unknown": peer_unknown, "trace": None, "hops": []}
    node["label"] = " ".join([name, *addrs])
    if link.get("vxlan"):
        node["vxlan"] = dict(link["vxlan"])
    if node["kind"] == "bridge" and name in networks and ns.get("kind") != "container":
        node["network"] = networks[name]
    if ns["id"] == host and _is_uplink(link, namespaces, _default_devices(ns)):
        node["kind"] = "uplink"
    return node


def _status(link: dict) -> str | None:
    """None when the link works, "DOWN" when switched off, "NO-CARRIER" when up without a carrier."""
    if not link.get("up"):
        return "DOWN"
    if link.get("state") in ("DOWN", "LOWERLAYERDOWN", "NOTPRESENT"):
        return "NO-CARRIER"
    return None


def _peer_id(link: dict, namespaces: dict) -> tuple[str | None, bool]:
    """The other end of a veth as a node id, and whether the veth's peer is unknown."""
    if link.get("kind") != "veth":
        return None, False
    peer = link.get("peer") or {}
    other = namespaces.get(peer.get("ns"))
    if other is None:
        return None, True
    name = peer.get("name") or next((x.get("name") for x in other.get("links") or []
                                     if x.get("index") == peer.get("index")), None)
    return (f"{other['id']}/{name}", False) if name else (None, True)


def _default_devices(ns: dict) -> set[str]:
    return {r.get("dev") for r in ns.get("routes") or [] if r.get("dst") == "default" and r.get("type", "unicast") == "unicast"}


def _is_uplink(link: dict, namespaces: dict, default_devs: set[str]) -> bool:
    """The host's way out: a physical-ish device, or a veth to a non-container namespace (a lab's
    "outside") that is on no bridge and, where the host has a default route, is its device (a
    plain namespace wired to the host by hand is not the way out)."""
    kind = link.get("kind")
    if kind in _PHYSICAL_KINDS:
        return True
    if kind != "veth" or link.get("master"):
        return False
    other = namespaces.get((link.get("peer") or {}).get("ns"))
    outside = other is not None and other.get("kind") not in ("container", "host")
    return outside and (not default_devs or link.get("name") in default_devs)


def _edge(kind: str, source: str, target: str, by_id: dict) -> dict:
    down = bool(by_id[source]["status"] or by_id[target]["status"])
    return {"id": f"{kind}:{source}|{target}", "kind": kind, "source": source, "target": target,
            "down": down, "trace": None}


def _veth_edges(nodes: list[dict], by_id: dict, host: str | None) -> list[dict]:
    edges, seen = [], set()
    for n in nodes:
        peer = n.get("peer")
        if not peer or peer not in by_id or frozenset((n["id"], peer)) in seen:
            continue
        seen.add(frozenset((n["id"], peer)))
        a, b = sorted((n["id"], peer), key=lambda i: (by_id[i]["parent"] != host, i))
        edges.append(_edge("veth", a, b, by_id))
    return edges


def _member_edges(nodes: list[dict], by_id: dict) -> list[dict]:
    edges = []
    for n in nodes:
        master = by_id.get(n.get("master") or "")
        if master:
            edges.append(_edge("bridge" if master["link_kind"] == "bridge" else "master", n["id"], master["id"], by_id))
    return edges


def _underlay_edges(nodes: list[dict], by_id: dict) -> list[dict]:
    edges = []
    for n in nodes:
        dev = (n.get("vxlan") or {}).get("dev")
        if dev and f"{n['parent']}/{dev}" in by_id:
            edges.append(_edge("underlay", n["id"], f"{n['parent']}/{dev}", by_id))
    return edges


# --------------------------------------------------------------------------- trace overlay

def _overlay_trace(g: dict, trace: dict, namespaces: dict) -> None:
    """Mark hop nodes: "path" (passed, or seen by the live probe), "blocked" (where it failed),
    "unreached" (after that); and the edges between consecutive hops."""
    by_id = {n["id"]: n for n in g["nodes"]}
    blocked_at, verdict = trace.get("blocked_at"), trace.get("verdict", "")
    ordered = sorted(trace.get("hops") or [], key=lambda h: h.get("n") or 0)
    last_seen = max((h.get("n") or 0 for h in ordered if h.get("seen") is True), default=None)
    hops, missing = [], []
    for hop in ordered:
        node_id = _hop_node(hop, namespaces, g["nodes"])
        state = _hop_state(hop, blocked_at, verdict, last_seen)
        hops.append({"n": hop.get("n"), "node": node_id, "state": state, "seen": hop.get("seen")})
        if node_id is None:
            missing.append(hop.get("n"))
            continue
        node = by_id[node_id]
        node["hops"].append(hop.get("n"))
        node["trace"] = _stronger(node["trace"], state)
        _add_mark(node, hop, state, verdict)
    steps = []
    for a, b in zip(hops, hops[1:]):
        edge = _edge_between(g["edges"], a["node"], b["node"])
        reached = a["state"] != "unreached" and b["state"] != "unreached"
        if edge is not None:
            edge["trace"] = _stronger(edge["trace"], "path" if reached else "unreached")
        steps.append({"from": a["node"], "to": b["node"], "edge": edge["id"] if edge else None,
                      "trace": "path" if reached else "unreached"})
    blocked_node = next((h["node"] for h in hops if h["state"] == "blocked"), None)
    g["trace"] = {"verdict": verdict, "blocked_at": blocked_at, "blocked_node": blocked_node,
                  "failed": blocked_at is not None or blocked_node is not None,
                  "reason": _reason(trace), "hops": hops, "steps": steps, "missing": missing}


def _hop_state(hop: dict, blocked_at, verdict: str, last_seen: int | None) -> str:
    """Where the trace names the failing hop, every hop before it was passed (whatever its capture
    said: a bridge's own capture never sees bridged frames, a capture may fail), every hop after it
    was not reached. Without a failing hop: a delivered trace passed every hop; otherwise a hop
    the live probe missed after the last hop it was seen at was not reached."""
    n = hop.get("n") or 0
    if blocked_at is not None:
        return "blocked" if n == blocked_at else "path" if n < blocked_at else "unreached"
    if verdict != "delivered" and hop.get("seen") is False and (last_seen is None or n > last_seen):
        return "unreached"
    return "path"


def _add_mark(node: dict, hop: dict, state: str, verdict: str) -> None:
    """node["trace_marks"]: its hops grouped by what they say, in path order, e.g. a bridge passed
    at hop 3 whose firewall dropped the packet at hop 4: [passed [3], failed [4]]."""
    word = _trace_word(state, hop.get("seen") is True, verdict)
    marks = node.setdefault("trace_marks", [])
    if marks and (marks[-1]["state"], marks[-1]["word"]) == (state, word):
        marks[-1]["hops"].append(hop.get("n"))
    else:
        marks.append({"state": state, "word": word, "hops": [hop.get("n")]})


def _trace_word(state: str, seen: bool, verdict: str) -> str:
    """What a hop says for people: passed, or seen (captured by the live probe); failed (only "last
    seen" when the trace could not tell why the packet went no further); not reached."""
    if state == "blocked":
        return "last seen" if verdict == "unknown" else "failed"
    if state == "path":
        return "seen" if seen else "passed"
    return "not reached"


def _stronger(old: str | None, new: str) -> str:
    rank = {None: 0, "unreached": 1, "path": 2, "blocked": 3}
    return new if rank[new] > rank[old] else old


def _hop_node(hop: dict, namespaces: dict, nodes: list[dict]) -> str | None:
    """A hop names a namespace (by id, or failing that by name or label) and maybe an interface
    ("-" for none: a drop the kernel's packet trace saw in a namespace, not at a device)."""
    refs = [r for r in (hop.get("namespace"), hop.get("label")) if r]
    ns_id = next((r for r in refs if r in namespaces), None) or next(
        (n["id"] for r in refs for n in nodes
         if n["kind"] == "namespace" and r in (n["label"], namespaces[n["id"]].get("name"), namespaces[n["id"]].get("label"))), None)
    if ns_id is None:
        return None
    if hop.get("interface") in (None, "", "-"):
        return ns_id
    node_id = f"{ns_id}/{hop['interface']}"
    # not a device there (a socket hop "tcp/80", a link gone since): the hop is still in that namespace
    return node_id if any(n["id"] == node_id for n in nodes) else ns_id


def _edge_between(edges: list[dict], a: str | None, b: str | None) -> dict | None:
    return next((e for e in edges if {e["source"], e["target"]} == {a, b}), None) if a and b else None


def _reason(trace: dict) -> str:
    for key in ("summary", "reason", "cause"):
        if isinstance(trace.get(key), str):
            return trace[key]
    return ""


# --------------------------------------------------------------------------- graph queries

class View:
    """Lookups the renderers share: children per namespace, ports per bridge, who is where."""

    def __init__(self, g: dict):
        self.g = g
        self.by_id = {n["id"]: n for n in g["nodes"]}
        self.namespaces = [n for n in g["nodes"] if n["kind"] == "namespace"]
        self.ifaces: dict[str, list[dict]] = {ns["id"]: [] for ns in self.namespaces}
        for n in g["nodes"]:
            if n["parent"]:
                self.ifaces[n["parent"]].append(n)

    def ports(self, bridge: dict) -> list[dict]:
        return [n for n in self.ifaces[bridge["parent"]] if n["master"] == bridge["id"]]

    def visible(self, ns_id: str) -> list[dict]:
        """Interfaces worth drawing: all but loopback, unless loopback is all there is."""
        rows = [n for n in self.ifaces[ns_id] if n["kind"] != "loopback"]
        return rows or list(self.ifaces[ns_id])

    def is_hub(self, ns: dict) -> bool:
        """The host, and other non-container namespaces that hold a bridge (e.g. an overlay netns)."""
        return ns["is_host"] or (ns["ns_kind"] != "container" and any(n["kind"] == "bridge" for n in self.ifaces[ns["id"]]))

    def on_bridge(self, ns: dict) -> bool:
        """Some interface of this namespace is the peer of a bridge port elsewhere."""
        for n in self.ifaces[ns["id"]]:
            peer = self.by_id.get(n["peer"] or "")
            if peer and peer["master"] and peer["parent"] != ns["id"]:
                return True
        return False

    def hub_sections(self, ns_id: str) -> tuple[list, list, list, list]:
        """(uplinks, [(bridge, ports)], lone vxlans, other interfaces) of a hub namespace."""
        ifaces = self.ifaces[ns_id]
        bridges = [(b, self.ports(b)) for b in ifaces if b["kind"] == "bridge"]
        in_bridge = {p["id"] for _, ports in bridges for p in ports}
        uplinks = [n for n in ifaces if n["kind"] == "uplink" and n["id"] not in in_bridge]
        vxlans = [n for n in ifaces if n["kind"] == "vxlan" and n["id"] not in in_bridge]
        other = [n for n in ifaces if n["kind"] not in ("uplink", "bridge", "vxlan", "loopback") and n["id"] not in in_bridge]
        return uplinks, bridges, vxlans, other
