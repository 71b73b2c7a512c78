"""The snapshot as an object (the host model): a read-only view over a snapshot, live or loaded
from a file, with the lookups reasoning needs. Pure: no kernel access, so every diagnosis can be
replayed offline."""
from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping

from runtime.errors import InvalidArgument, NetdiagError, NotFound

from .rulesets.iptables_nft import ruleset_for
from .rulesets.nft_text import rule_text
from .schemas import SNAPSHOT

SCHEMA = SNAPSHOT
# the engines whose containers a target may name with a prefix: `podman:web`, `docker:web`, `netdiag:web`
ENGINES = ("netdiag", "docker", "podman")


def ns_path(ns: dict) -> str | None:
    """A path to open a snapshot namespace by, while it still exists: its ip netns name or a pid."""
    if ns.get("netns_names"):
        return f"/run/netns/{ns['netns_names'][0]}"
    if ns.get("pids"):
        return f"/proc/{ns['pids'][0]}/ns/net"
    return None


class UnknownTarget(NotFound, InvalidArgument):
    """A target that names nothing observed: not found, and bad input (exit 2), not a diagnosis."""

    exit_code = 2

    def __init__(self, what: str, why: str = "", fix: str = "", *, target: str = ""):
        super().__init__(what, why, fix)
        self.target = target


def _did_you_mean(word: str, names) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(set(names)), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class LoadedNamespaces(Mapping):
    """The namespaces of a snapshot file: already read, with the same interface as the live,
    lazily read set (netdiag.observe.namespaces.LazyNamespaces), so reasoning never asks which it has."""

    def __init__(self, namespaces: dict[str, dict]):
        self.data = namespaces

    def __getitem__(self, ns_id: str) -> dict:
        return self.data[ns_id]

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def meta(self, ns_id: str) -> dict:
        return self.data[ns_id]

    def materialize(self) -> dict:
        return self.data

    def owners_of(self, ip: str) -> list[str]:
        return list(dict.fromkeys(ns["id"] for ns in self.data.values() for a in ns["addresses"]
                                  if (a.get("local") or a["address"]) == ip))


class Overlay(Mapping):
    """A copy-on-write view of a namespace set: `edit(ns_id)` returns a private deep copy that
    later reads see, the base stays untouched. A fix is checked by applying it to an overlay and
    tracing again."""

    def __init__(self, base):
        self.base, self.changed = base, {}

    def edit(self, ns_id: str) -> dict:
        if ns_id not in self.changed:
            self.changed[ns_id] = copy.deepcopy(self.base[ns_id])
        return self.changed[ns_id]

    def __getitem__(self, ns_id: str) -> dict:
        return self.changed[ns_id] if ns_id in self.changed else self.base[ns_id]

    def __iter__(self):
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)

    def __contains__(self, ns_id) -> bool:
        return ns_id in self.changed or ns_id in self.base

    def meta(self, ns_id: str) -> dict:
        return self.base.meta(ns_id)

    def materialize(self) -> dict:
        return {**self.base.materialize(), **self.changed}

    def owners_of(self, ip: str) -> list[str]:
        found = [i for i in self.base.owners_of(ip) if i not in self.changed]
        return found + [i for i, ns in self.changed.items()
                        if any((a.get("local") or a["address"]) == ip for a in ns["addresses"])]


class Model:
    def __init__(self, snap: dict):
        if snap.get("schema") != SCHEMA:
            raise InvalidArgument(f"Unsupported snapshot format {snap.get('schema')!r}", f"this netdiag reads {SCHEMA}",
                                  "take the snapshot again with this version ('netdiag snapshot -o FILE')")
        self.snap = snap
        spaces = snap["namespaces"]
        self.namespaces = LoadedNamespaces(spaces) if isinstance(spaces, dict) else spaces

    @property
    def host(self) -> dict:
        """The host namespace as it is now: in an overlay, the edited copy once a fix changed it
        (a copy taken when the overlay was made would hide the fix from a trace that starts there)."""
        return self.namespaces[self.snap["host"]]

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | list[str]) -> "Model":
        """One snapshot file, or several merged into one model (hosts of a cluster: see merge())."""
        paths = [path] if isinstance(path, str) else list(path)
        snaps = [read_snapshot(p) for p in paths]
        return cls(merge(snaps) if len(snaps) > 1 else snaps[0])

    def overlay(self) -> tuple["Model", Overlay]:
        """A model whose namespaces can be edited without touching this one's (for fix checks)."""
        ov = Overlay(self.namespaces)
        other = Model.__new__(Model)
        other.snap, other.namespaces = {**self.snap, "namespaces": ov}, ov
        return other, ov

    def full(self) -> dict:
        """The snapshot with every namespace read (for a map of the whole host, or to save)."""
        if isinstance(self.namespaces, LoadedNamespaces):
            return self.snap
        return {**self.snap, "namespaces": self.namespaces.materialize()}

    def metas(self):
        """Every namespace's identity (id, kind, name, label, netns_names, pids) without reading its state."""
        return [self.namespaces.meta(i) for i in self.namespaces]

    # -- lookups -----------------------------------------------------------------------------------
    def containers(self) -> list[dict]:
        return self.snap.get("containers", [])

    def cluster(self) -> dict:
        """The overlay cluster as the store listed it (empty lists when the host is no member)."""
        return self.snap.get("cluster") or {"hosts": [], "networks": [], "endpoints": [], "host": "", "store": ""}

    def cluster_endpoint(self, ref: str) -> dict | None:
        """An overlay endpoint anywhere in the cluster by container name, id (prefix) or address,
        with its host's name and VTEP."""
        cl = self.cluster()
        hits = [e for e in cl["endpoints"] if ref in (e["name"], e["ip"], e["container"])
                or (len(ref) >= 3 and e["container"].startswith(ref))]
        if not hits:
            return None
        hosts = {h["id"]: h for h in cl["hosts"]}
        e = hits[0]
        h = hosts.get(e["host"], {})
        return {**e, "host_name": h.get("name", ""), "vtep": h.get("vtep"), "local": e["host"] == cl["host"]}

    def ns(self, ns_id: str) -> dict:
        """A namespace's state, or a clear error saying why it could not be read."""
        try:
            return self.namespaces[ns_id]
        except KeyError:
            why = next((e["error"] for e in self.snap.get("errors", []) if e.get("ns") == ns_id), "it is not in the snapshot")
            from runtime.errors import PermissionDenied

            err = PermissionDenied if "CAP_SYS_ADMIN" in why else NetdiagError
            raise err(f"Cannot read namespace {ns_id}", why, "run netdiag as root" if "CAP_SYS_ADMIN" in why else "") from None

    def container(self, ref: str) -> dict | None:
        engine, _, name = ref.partition(":")
        if name and engine in ENGINES:  # `podman:web`: that engine's container, where names of two engines meet
            return self._engine_container(engine, name)
        hits = [c for c in self.containers() if c["name"] == ref.lstrip("/") or c["id"] == ref] or \
            [c for c in self.containers() if c.get("infra") and c.get("pod") == ref]  # a Podman pod: its infra container
        if not hits and len(ref) >= 3 and all(ch in "0123456789abcdef" for ch in ref):
            hits = [c for c in self.containers() if c["id"].startswith(ref)]
        if not hits and ref.startswith("cni:") and len(ref) >= 7:  # a CNI pod by more (or less) of its id
            hits = [c for c in self.containers() if c["runtime"] == "cni" and c["id"].startswith(ref[4:])]
        if not hits:  # a CNI pod by its namespace's name, as a kubelet's runtime named it (cni-<uuid>)
            hits = [c for c in self.containers() if ref in c.get("netns_names", ())]
        if not hits:
            hits = self._compose_service(ref)
        if len(hits) > 1:
            engines = sorted({c.get("runtime") or "netdiag" for c in hits})
            raise InvalidArgument(f"{ref!r} matches {len(hits)} containers", "", "name it with its engine: " + ", ".join(
                f"{e}:{ref}" for e in engines) if len(engines) == len(hits) else "give more of the id, or the name")
        return hits[0] if hits else None

    def _engine_container(self, engine: str, ref: str) -> dict | None:
        mine = [c for c in self.containers() if c.get("runtime") == engine]
        hits = [c for c in mine if c["name"] == ref or c["id"] == ref] or \
            [c for c in mine if c.get("infra") and c.get("pod") == ref] or \
            [c for c in mine if len(ref) >= 3 and c["id"].startswith(ref)]
        if len(hits) > 1:
            raise InvalidArgument(f"{engine}:{ref!r} matches {len(hits)} containers", "", "give more of the id, or the name")
        return hits[0] if hits else None

    def _compose_service(self, ref: str) -> list[dict]:
        """A Compose service's container by service name (`web`) or Docker Compose's short name
        (`web-1`); one of one project. Two projects with the service: the name is ambiguous."""
        service, _, number = ref.rpartition("-")
        hits = [c for c in self.containers() if c.get("compose") and (c["compose"]["service"] == ref or (
            number.isdigit() and c["compose"]["service"] == service and c["compose"]["number"] == int(number)))]
        projects = sorted({c["compose"]["project"] for c in hits})
        if len(projects) > 1:
            raise InvalidArgument(f"{ref!r} is a service of {len(projects)} compose projects ({', '.join(projects)})", "",
                                  f"name the container, e.g. {hits[0]['name']}")
        return hits

    def resolve(self, target: str) -> dict:
        """A target (container name/id, ns:NAME, pid:N, host, or an IP address) -> its namespace."""
        if target == "host":
            return self.host
        if target.startswith("ns:"):
            name = target[3:]
            for ns in self.metas():
                if name in ns.get("netns_names", []):
                    return self.ns(ns["id"])
            known = [n for ns in self.metas() for n in ns.get("netns_names", [])]
            raise UnknownTarget(f"No network namespace named {name!r}", _did_you_mean(name, known),
                                "list them with 'ip netns list'", target=target)
        if target.startswith("pid:"):
            pid = target[4:]
            if not pid.isdigit():
                raise InvalidArgument(f"Invalid target {target!r}", "pid:N takes a process id", "e.g. pid:1234")
            for ns in self.metas():
                if int(pid) in ns.get("pids", []):
                    return self.ns(ns["id"])
            raise UnknownTarget(f"No process {pid} in any observed namespace", "", "check the pid (it may have exited)",
                                target=target)
        c = self.container(target)
        if c is not None:
            if c.get("ns") in self.namespaces:
                return self.ns(c["ns"])
            if c.get("network_mode") == "host":
                return self.host
            raise NotFound(f"Container {target} has no observable network namespace", "it may have just exited", "")
        try:
            ip = ipaddress.ip_address(target)
        except ValueError:
            names = [c["name"] for c in self.containers()] + [c["compose"]["service"] for c in self.containers() if c.get("compose")]
            raise UnknownTarget(f"No such target: {target}", _did_you_mean(target, names) or
                                "a target is a running container's name or id, cni:ID (a CNI pod), ns:NAME, pid:N, host, or an IP address",
                                "list containers with 'netdiag ps' and namespaces with 'ip netns list'", target=target) from None
        owner = self.owner_of_ip(str(ip))
        if owner is None:
            raise NotFound(f"No observed namespace has the address {ip}", "", "")
        return owner

    def owners_of(self, ip: str) -> list[str]:
        """Ids of the namespaces with `ip` on an interface."""
        return [i for i in self.namespaces.owners_of(ip) if i in self.namespaces]

    def owner_of_ip(self, ip: str) -> dict | None:
        """The namespace with `ip` on an interface; a container beats the host (hairpin DNAT aside)."""
        hits = [self.namespaces[i] for i in self.owners_of(ip)]
        hits.sort(key=lambda ns: ns["kind"] != "container")
        return hits[0] if hits else None

    def link(self, ns: dict, name: str) -> dict | None:
        return next((link for link in ns["links"] if link["name"] == name), None)

    def peer(self, ns: dict, link: dict) -> tuple[dict, dict] | None:
        p = link.get("peer") or {}
        other = self.namespaces.get(p.get("ns"))
        if not other:
            return None
        peer = next((x for x in other["links"] if x["index"] == p["index"]), None)
        return (other, peer) if peer else None

    def addresses(self, ns: dict, ifname: str) -> list[str]:
        return [f"{a['address']}/{a['prefixlen']}" for a in ns["addresses"] if a["ifname"] == ifname]

    def container_of(self, ns: dict) -> dict | None:
        return next((c for c in self.containers() if c.get("ns") == ns["id"]), None)

    def nft_rules(self, ns: dict) -> list[dict]:
        """Every rule of the namespace's nftables ruleset as {family, table, chain, handle, text, expr}
        (iptables-nft rules with their xt parts translated, as reasoning sees them)."""
        rules = []
        for item in ruleset_for(ns).get("nftables", []):
            rule = item.get("rule")
            if rule:
                rules.append({"family": rule["family"], "table": rule["table"], "chain": rule["chain"],
                              "handle": rule.get("handle"), "comment": rule.get("comment", ""), "expr": rule.get("expr", []),
                              "text": rule_text(rule)})
        return rules


def read_snapshot(path: str) -> dict:
    """A snapshot or recording (`snapshot -o`, `trace --record`) from a file, bounded (see
    runtime.bounded) and checked against snapshot.schema.json before anything uses it: any
    mistake is an InvalidArgument naming the file and the field, never a traceback later."""
    from runtime import bounded

    from .schemas import validate

    snap = bounded.load_json(path, bounded.MAX_SNAPSHOT)
    fix = "take it again with 'netdiag snapshot -o FILE' (or 'netdiag trace --record FILE')"
    if isinstance(snap, dict) and "schema" in snap and snap["schema"] != SCHEMA:
        raise InvalidArgument(f"{path}: unsupported snapshot format {bounded.excerpt(snap['schema'])}",
                              f"this netdiag reads {SCHEMA}", fix)
    validate(snap, "snapshot", path, fix)
    if snap["host"] not in snap["namespaces"]:
        raise InvalidArgument(f"{path}: host: {snap['host']} is not one of its namespaces", "", fix)
    for ns_id, ns in snap["namespaces"].items():  # what the schema cannot say: names that refer to each other
        names = {link["name"] for link in ns["links"]}
        for i, link in enumerate(ns["links"]):
            if link["master"] is not None and link["master"] not in names:
                raise InvalidArgument(f"{path}: namespaces.{ns_id}.links[{i}].master: {bounded.excerpt(link['master'])} "
                                      "is no link of its namespace", "", fix)
    return snap


def merge(snaps: list[dict]) -> dict:
    """Several hosts' snapshots as one. Namespaces are known by inode: snapshots of one kernel (the
    same boot id, e.g. the hosts of a lab) share ids and are united; another kernel's ids get its
    hostname appended wherever they appear, so they never collide. Containers, networks, errors
    and cluster views add up. The first snapshot's host stays the model's host."""
    out = copy.deepcopy(snaps[0])
    seen_containers = {(c.get("runtime"), c.get("id")) for c in out.get("containers", [])}
    seen_networks = {(n.get("runtime"), n.get("id")) for n in out.get("networks", [])}
    for i, snap in enumerate(snaps[1:], 1):
        snap = copy.deepcopy(snap)
        if not (snap.get("boot_id") and snap.get("boot_id") == out.get("boot_id")):
            tag = f"@{snap.get('hostname') or 'host'}-{i}"
            snap = _renamed(snap, {ns_id: ns_id + tag for ns_id in snap["namespaces"]})
        for ns_id, ns in snap["namespaces"].items():
            out["namespaces"].setdefault(ns_id, ns)
        for c in snap.get("containers", []):
            if (c.get("runtime"), c.get("id")) not in seen_containers:
                out.setdefault("containers", []).append(c)
                seen_containers.add((c.get("runtime"), c.get("id")))
        for n in snap.get("networks", []):
            if (n.get("runtime"), n.get("id")) not in seen_networks:
                out.setdefault("networks", []).append(n)
                seen_networks.add((n.get("runtime"), n.get("id")))
        out.setdefault("errors", []).extend(snap.get("errors", []))
        if not out.get("cluster") and snap.get("cluster"):
            out["cluster"] = snap["cluster"]
    return out


def _renamed(snap: dict, names: dict[str, str]) -> dict:
    """A snapshot whose namespace ids are replaced everywhere they are referenced."""
    spaces = {}
    for ns_id, ns in snap["namespaces"].items():
        ns["id"] = names.get(ns_id, ns_id)
        for link in ns.get("links", []):
            peer = link.get("peer")
            if isinstance(peer, dict) and peer.get("ns") in names:
                peer["ns"] = names[peer["ns"]]
        spaces[ns["id"]] = ns
    snap["namespaces"] = spaces
    snap["host"] = names.get(snap["host"], snap["host"])
    for c in snap.get("containers", []):
        if c.get("ns") in names:
            c["ns"] = names[c["ns"]]
    for e in snap.get("errors", []):
        if e.get("ns") in names:
            e["ns"] = names[e["ns"]]
    return snap
