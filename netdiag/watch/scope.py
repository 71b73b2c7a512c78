"""Which namespaces `watch` watches, and who an address belongs to.

The kernel's TCP events carry addresses, not namespaces: an event is kept when one of its
addresses is on an interface of a watched namespace (`--ns`, `--container`, `--network`); with no
filter every event is kept. Each address is attributed to the namespace that has it (a container
before the host, as `trace` resolves an address), named as the user names it: the container's
name, `ns:NAME`, `host` or `pid:N`; that name is also what a diagnosis starts from. Where several
namespaces have the address (labs on one machine), the one a veth joins to this host is taken."""
from __future__ import annotations

from runtime.errors import InvalidArgument

from ..snapshot_model import Model, ns_path


def target_of(meta: dict) -> str:
    """How `trace` would name this namespace (a diagnosis's SRC)."""
    if meta["kind"] == "host":
        return "host"
    if meta["kind"] == "container" and meta.get("name"):
        return meta["name"]
    if meta.get("netns_names"):
        return f"ns:{meta['netns_names'][0]}"
    return f"pid:{meta['pids'][0]}" if meta.get("pids") else meta["id"]


def _network_members(model: Model, network: str) -> list[str]:
    names = [c["name"] for c in model.containers() if network in (c.get("networks") or {})]
    if not names:
        known = sorted({n for c in model.containers() for n in (c.get("networks") or {})})
        raise InvalidArgument(f"No running container on network {network!r}", "watch --network follows the "
                              "network's containers" + (f"; containers are on {', '.join(known)}" if known else ""),
                              "list networks with 'netdiag network ls'")
    return names


class Scope:
    """The watched namespaces of a model (all when `targets` is empty) and the owners of addresses."""

    def __init__(self, model: Model, namespaces=(), containers=(), networks=()):
        self.args = (tuple(namespaces), tuple(containers), tuple(networks))
        self.filtered = bool(namespaces or containers or networks)
        self._resolve(model, strict=True)

    def _resolve(self, model: Model, strict: bool) -> None:
        """Read the watched namespaces from `model`. Strict (at the start): a name that names nothing
        is bad input; later (a rescan) a network may have no container left, or a container be gone."""
        namespaces, containers, networks = self.args
        self.model = model
        targets = [f"ns:{n}" for n in namespaces] + list(containers)
        for net in networks:
            try:
                targets += _network_members(model, net)
            except InvalidArgument:
                if strict:
                    raise
        self.watched: dict[str, str] = {}  # address -> target of the watched namespace that has it
        self.paths: dict[str, str] = {}  # address -> a path to enter that namespace by
        self.others: dict[str, str | None] = {}  # watched target (not the host) -> its path
        self.ns_ids: set[str] = set()  # the watched namespaces' ids ("ns-INODE")
        for target in dict.fromkeys(targets):
            try:
                ns = model.resolve(target)  # raises UnknownTarget (exit 2) for a name that names nothing
            except InvalidArgument:
                if strict:
                    raise
                continue
            meta = model.namespaces.meta(ns["id"])
            self.ns_ids.add(ns["id"])
            for a in ns["addresses"]:  # IPv4, as the events are
                ip = a.get("local") or a["address"]
                if not ip.startswith("127."):
                    self.watched[ip] = target_of(meta)
                    self.paths[ip] = ns_path(meta)
            if meta["kind"] != "host":
                self.others[target_of(meta)] = ns_path(meta)
        self._owners: dict[str, dict] = {}
        self._places: dict[tuple[int, int], dict | None] = {}

    def rescan(self, model: Model) -> list[str]:
        """The scope again from a newer model (containers started since, or gone): the targets
        watched now that were not before."""
        before = set(self.watched.values())
        self._resolve(model, strict=False)  # (the places of drops are looked up again too)
        return sorted(set(self.watched.values()) - before)

    def conntrack_paths(self) -> list[str | None]:
        """The namespaces whose conntrack events count: watch's own (None: the host, which routes and
        NATs its containers' flows) and the watched ones, or every one the model has without a filter."""
        if self.filtered:
            paths = self.others.values()
        else:
            paths = (ns_path(m) for m in self.model.metas() if m["kind"] != "host")
        return list(dict.fromkeys([None, *(p for p in paths if p)]))

    def _beside_host(self, ns_id: str) -> bool:
        """Whether a veth joins this namespace to the host's (where netdiag runs): of two namespaces
        with one address (labs on one machine, each with its own "outside"), the one this host reaches."""
        ns = self.model.namespaces.get(ns_id)
        host = self.model.snap["host"]
        return ns is not None and any((link.get("peer") or {}).get("ns") == host for link in ns["links"])

    def keeps(self, src: str, dst: str) -> bool:
        return not self.filtered or src in self.watched or dst in self.watched

    def confirms(self, ev: dict) -> bool:
        """Whether a new flow's first event is a watched namespace's own. Another namespace may have
        the same address (labs on one machine, pods of two nodes): an unanswered connect from a
        watched address counts only if that namespace has the socket, still waiting (SYN_SENT). A
        reset leaves no socket to ask, and a connect to a watched namespace comes from elsewhere:
        those are taken by their address."""
        waiting = self._connecting(ev) if ev["kind"] == "unanswered" else None
        return waiting is None or (ev["src"], ev["sport"], ev["dst"], ev["dport"]) in waiting

    def connecting_port(self, ev: dict) -> int | None:
        """The source port of the source namespace's socket still connecting to the event's
        destination; 0 when no namespace of the scope is asked; None when it has no such socket."""
        waiting = self._connecting(ev)
        if waiting is None:
            return 0
        return next((sport for src, sport, dst, dport in waiting if (src, dst, dport) == (ev["src"], ev["dst"], ev["dport"])), None)

    def _connecting(self, ev: dict) -> set | None:
        """The connects under way in the watched namespace with the event's source address; None
        when the scope is not filtered, or that namespace is gone (the address is all there is)."""
        path = self.paths.get(ev["src"]) if self.filtered else None
        if path is None:
            return None
        from runtime.kernel import sockdiag
        from runtime.kernel.ns import netns

        try:
            with netns(path):
                return sockdiag.connecting()
        except OSError:
            return None

    def endpoint(self, ip: str) -> dict:
        """{"ip", "label", "target"}: the namespace that has `ip` (target None: nobody seen here)."""
        if ip not in self._owners:
            if ip in self.watched:
                target = self.watched[ip]
                meta = self.model.namespaces.meta(self.model.resolve(target)["id"])
            else:
                owners = self.model.owners_of(ip)
                if len(owners) > 1:
                    owners.sort(key=lambda i: (not self._beside_host(i), self.model.namespaces.meta(i)["kind"] != "container"))
                meta = self.model.namespaces.meta(owners[0]) if owners else None
                target = target_of(meta) if meta else None
            self._owners[ip] = {"ip": ip, "label": target or ip, "target": target}
        return self._owners[ip]

    def drop_place(self, inode: int, ifindex: int) -> dict | None:
        """Where a drop happened, from its namespace inode and ifindex (runtime.kernel.dropwatch):
        {"endpoint": the namespace as trace names it, "device": the link's name or None, "device_of":
        for a host-side veth the namespace at its other end, for a bridge its network}. Inode 0
        (neither a device nor a socket) is {"endpoint": None} (unattributed). With a filter, None for
        a drop outside the watched namespaces and their host-side veths and bridges (and for an
        unattributed one: it may be anyone's)."""
        key = (inode, ifindex)
        if key not in self._places:
            self._places[key] = self._place(inode, ifindex)
        return self._places[key]

    def _place(self, inode: int, ifindex: int) -> dict | None:
        ns_id = f"ns-{inode}"
        if not inode or ns_id not in self.model.namespaces:
            # a namespace not seen when watch looked (or gone): named by its inode
            return None if self.filtered else {"endpoint": f"netns:{inode}" if inode else None, "device": None, "device_of": None}
        data = self.model.namespaces.get(ns_id) or {"links": []}
        links = data["links"]
        link = next((link for link in links if link["index"] == ifindex), None) if ifindex else None
        peer_ns = ((link or {}).get("peer") or {}).get("ns")
        device_of = None
        watched = ns_id in self.ns_ids
        host_side = ns_id == self.model.snap["host"]  # the host's end of a container's veth, its bridge
        if host_side and peer_ns and peer_ns != ns_id and peer_ns in self.model.namespaces:
            device_of = target_of(self.model.namespaces.meta(peer_ns))
            watched = watched or peer_ns in self.ns_ids
        elif host_side and link and link["kind"] == "bridge":
            device_of = next((n["name"] for n in self.model.snap.get("networks", []) if n.get("bridge") == link["name"]), None)
            members = (((m.get("peer") or {}).get("ns")) for m in links if m["master"] == link["name"])
            watched = watched or any(m in self.ns_ids for m in members)
        if self.filtered and not watched:
            return None
        return {"endpoint": target_of(self.model.namespaces.meta(ns_id)), "device": link["name"] if link else None,
                "device_of": device_of}
