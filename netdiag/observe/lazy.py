"""Namespaces read on demand. A live trace or inspect touches the namespaces on its path; on a host
with hundreds of containers it must not read them all. Veth peers are found by asking the kernel
which namespace has the peer's netnsid, instead of matching every veth on the host."""
from __future__ import annotations

import os
from collections.abc import Mapping

from . import collect
from .owners import NsRef


class LazyNamespaces(Mapping):
    def __init__(self, refs: dict[int, NsRef], errors: list[dict], with_sockets: bool = True):
        self.refs = {r.id: r for r in refs.values()}
        self.errors, self.with_sockets = errors, with_sockets
        self.cache: dict[str, dict] = {}
        self.failed: set[str] = set()
        self._addr_index: dict[str, list[str]] | None = None

    def __getitem__(self, ns_id: str) -> dict:
        if ns_id in self.cache:
            return self.cache[ns_id]
        if ns_id not in self.refs or ns_id in self.failed:
            raise KeyError(ns_id)
        from .snapshot import collect_ns

        data = collect_ns(self.refs[ns_id], self.errors, self.with_sockets)
        if data is None:
            self.failed.add(ns_id)
            raise KeyError(ns_id)
        self._find_peers(data)
        self.cache[ns_id] = data
        return data

    def __iter__(self):
        return iter(self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __contains__(self, ns_id) -> bool:
        return ns_id in self.refs and ns_id not in self.failed

    def get(self, ns_id, default=None):
        try:
            return self[ns_id]
        except KeyError:
            return default

    def meta(self, ns_id: str) -> dict:
        from .snapshot import meta

        return meta(self.refs[ns_id])

    def materialize(self) -> dict:
        """Every namespace (for a full snapshot or a map of the whole host)."""
        out = {}
        for ns_id in self.refs:
            data = self.get(ns_id)
            if data is not None:
                out[ns_id] = data
        return out

    def owners_of(self, ip: str) -> list[str]:
        """Ids of the namespaces that have `ip` on an interface (one cheap dump per namespace)."""
        if self._addr_index is None:
            index: dict[str, list[str]] = {}
            for ns_id, ref in self.refs.items():
                try:
                    if ref.kind == "host":
                        addrs = collect.ipv4_addresses()
                    else:
                        with collect.inside(ref.path):
                            addrs = collect.ipv4_addresses()
                except OSError:
                    continue
                for a in addrs:
                    index.setdefault(a, []).append(ns_id)
            self._addr_index = index
        return self._addr_index.get(ip, [])

    def _find_peers(self, ns: dict) -> None:
        """Fill link["peer"] for veths: same namespace by index, others by the kernel's nsid."""
        wanted = {link["link_netnsid"] for link in ns["links"] if link["kind"] == "veth" and link.get("link_netnsid") is not None}
        by_nsid = self._nsid_map(ns, wanted) if wanted else {}
        for link in ns["links"]:
            if link["kind"] != "veth" or link.get("link") is None:
                continue
            nsid = link.get("link_netnsid")
            if nsid is None:
                peer = next((x for x in ns["links"] if x["index"] == link["link"]), None)
                link["peer"] = {"ns": ns["id"], "index": link["link"], "name": peer["name"] if peer else None}
            elif nsid in by_nsid:
                link["peer"] = {"ns": by_nsid[nsid], "index": link["link"], "name": None}
            else:
                link["peer"] = {"ns": None, "index": link["link"]}

    def _nsid_map(self, ns: dict, wanted: set[int]) -> dict[int, str]:
        from .rawlink import NsidQuery

        ref = self.refs[ns["id"]]
        found: dict[int, str] = {}
        try:
            with collect.inside(ref.path) if ref.kind != "host" else _nothing(), NsidQuery() as q:
                for other_id, other in self.refs.items():
                    if other_id == ns["id"] or len(found) == len(wanted):
                        continue
                    try:
                        fd = os.open(other.path, os.O_RDONLY | os.O_CLOEXEC)
                    except OSError:
                        continue
                    try:
                        nsid = q.nsid(fd)
                    finally:
                        os.close(fd)
                    if nsid in wanted:
                        found[nsid] = other_id
        except OSError:
            pass
        return found


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
