"""The live host's namespaces, each read when first asked for: a live trace or inspect touches the
namespaces on its path, and on a host with hundreds of containers must not read them all; a full
snapshot reads them all through the same door (`materialize`). Veth peers are found one way for
both: by asking the kernel which namespace has the peer's netnsid. Same interface as a snapshot
file's namespaces (netdiag.snapshot_model.LoadedNamespaces)."""
from __future__ import annotations

from collections.abc import Mapping

from runtime.kernel import addr
from runtime.kernel.ns import NsidQuery, netns
from runtime.kernel.syscalls import open_owned

from . import collect
from .discover import NsRef


def collect_ns(ref: NsRef, errors: list[dict], with_sockets: bool = True, conntrack: bool = False,
               while_inside=None) -> dict | None:
    """One namespace's full state, or None (with the reason in `errors`) when it cannot be entered.
    `conntrack` adds the host's connection table (full snapshots; live diagnoses do not read it).
    `while_inside(data)` runs before leaving the namespace (one visit per namespace, not two)."""
    try:
        if ref.kind == "host":  # where we are already: no setns, so this works without root too
            data = collect.collect_here(errors, ref.id, with_sockets, conntrack=conntrack)
            if while_inside:
                while_inside(data)
        else:
            with netns(ref.path):
                data = collect.collect_here(errors, ref.id, with_sockets)
                if while_inside:
                    while_inside(data)
    except PermissionError as e:
        errors.append({"ns": ref.id, "what": f"cannot enter {ref.label()}",
                       "error": f"{e.strerror}: entering another network namespace needs CAP_SYS_ADMIN (run as root)"})
        return None
    except OSError as e:
        errors.append({"ns": ref.id, "what": f"cannot enter {ref.label()}", "error": str(e)})
        return None
    if with_sockets and data["sockets"]:
        owned = collect.socket_owners(ref.pids)
        for s in data["sockets"]:
            s.update(owned.get(s["inode"], {}))
    if ref.kind != "container":  # a container's namespace runs no host firewall manager
        data["firewall_daemons"] = collect.firewall_daemons(ref.pids)
    return {**meta(ref), "resolv_conf": _resolv_conf(ref), **data}


def meta(ref: NsRef) -> dict:
    return {"id": ref.id, "inode": ref.inode, "kind": ref.kind, "name": ref.name, "label": ref.label(),
            "runtime": ref.runtime, "container": ref.container.get("id", ""), "netns_names": ref.netns_names,
            "pids": ref.pids[:20]}


def _resolv_conf(ref: NsRef) -> str | None:
    if ref.kind != "container" or not ref.pids:
        return None
    from runtime import bounded, fsroot

    try:  # inside the container's root: a link to /etc/shadow must not put the host's file in a snapshot
        data = fsroot.read_in_root(f"/proc/{ref.container.get('pid') or ref.pids[0]}/root", "/etc/resolv.conf", 64 << 10)
    except bounded.Refused:
        return None
    return data.decode("utf-8", errors="replace")




class LazyNamespaces(Mapping):
    def __init__(self, refs: dict[int, NsRef], errors: list[dict], with_sockets: bool = True, conntrack: bool = False,
                 remote_names: dict[str, str] | None = None):
        self.refs = {r.id: r for r in refs.values()}
        # address -> label of overlay containers other hosts run (the cluster store's view): in a lab
        # their namespaces are visible here, and read better by name than as pid:N
        self.remote_names = remote_names or {}
        self.errors, self.with_sockets, self.conntrack = errors, with_sockets, conntrack
        self.cache: dict[str, dict] = {}
        self.failed: set[str] = set()
        self._addr_index: dict[str, list[str]] | None = None

    def __getitem__(self, ns_id: str) -> dict:
        if ns_id in self.cache:
            return self.cache[ns_id]
        if ns_id not in self.refs or ns_id in self.failed:
            raise KeyError(ns_id)
        data = collect_ns(self.refs[ns_id], self.errors, self.with_sockets, conntrack=self.conntrack,
                          while_inside=lambda d: self._find_peers(ns_id, d))
        if data is None:
            self.failed.add(ns_id)
            raise KeyError(ns_id)
        if data["kind"] in ("pid", "netns"):
            named = [self.remote_names[a["address"]] for a in data["addresses"] if a["address"] in self.remote_names]
            if named:
                data["label"] = named[0]
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
        return meta(self.refs[ns_id])

    def materialize(self) -> dict:
        """Every namespace (for a full snapshot or a map of the whole host), host first, with each
        veth peer's name filled in now that both ends are read."""
        out = {}
        for ref in sorted(self.refs.values(), key=lambda r: (r.kind != "host", r.label())):
            data = self.get(ref.id)
            if data is not None:
                out[ref.id] = data
        for ns in out.values():
            for link in ns["links"]:
                peer = link.get("peer")
                if peer and peer.get("ns") in out and not peer.get("name"):
                    other = next((x for x in out[peer["ns"]]["links"] if x["index"] == peer["index"]), None)
                    peer["name"] = other["name"] if other else None
        return out

    def owners_of(self, ip: str) -> list[str]:
        """Ids of the namespaces that have `ip` on an interface (one cheap dump per namespace)."""
        if self._addr_index is None:
            index: dict[str, list[str]] = {}
            for ns_id, ref in self.refs.items():
                try:
                    with netns(None if ref.kind == "host" else ref.path):
                        addrs = addr.ipv4()
                except OSError:
                    continue
                for a in addrs:
                    index.setdefault(a, []).append(ns_id)
            self._addr_index = index
        return self._addr_index.get(ip, [])

    def _find_peers(self, ns_id: str, ns: dict) -> None:
        """Fill link["peer"] for veths: same namespace by index, others by the kernel's nsid. Runs
        inside the namespace (while it is being read)."""
        wanted = {link["link_netnsid"] for link in ns["links"] if link["kind"] == "veth" and link.get("link_netnsid") is not None}
        by_nsid = self._nsid_map(ns_id, wanted) if wanted else {}
        for link in ns["links"]:
            if link["kind"] != "veth" or link.get("link") is None:
                continue
            nsid = link.get("link_netnsid")
            if nsid is None:
                peer = next((x for x in ns["links"] if x["index"] == link["link"]), None)
                link["peer"] = {"ns": ns_id, "index": link["link"], "name": peer["name"] if peer else None}
            elif nsid in by_nsid:
                link["peer"] = {"ns": by_nsid[nsid], "index": link["link"], "name": None}
            else:
                link["peer"] = {"ns": None, "index": link["link"]}

    def _nsid_map(self, ns_id: str, wanted: set[int]) -> dict[int, str]:
        """nsid -> namespace id, asked in the namespace this thread is in (the one being read)."""
        found: dict[int, str] = {}
        try:
            with NsidQuery() as q:
                for other_id, other in self.refs.items():
                    if len(found) == len(wanted):
                        break
                    if other_id == ns_id:
                        continue
                    try:
                        other_file = open_owned(other.path)
                    except OSError:
                        continue
                    with other_file:
                        nsid = q.nsid(other_file.fileno())
                    if nsid in wanted:
                        found[nsid] = other_id
        except OSError:
            pass
        return found
