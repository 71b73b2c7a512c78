"""Joining and leaving the cluster, and listing its members.

`join` checks the advertised address before anything is written (Docker's most reported overlay
mistake is a wrong --advertise-addr): it must be one of this host's own unicast addresses, no
other member may advertise it, and every member must reach it (and be reached from it): each
member's agent is asked over TCP 7946 to connect back. A failed check leaves nothing behind.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import socket

from ..errors import Conflict, InvalidArgument, NetdiagError, NotFound
from ..cluster import keys, local
from ..cluster.store import Store

ENV_STORE = "NETDIAG_CLUSTER_STORE"


def store_url(given: str | None) -> str:
    url = given or os.environ.get(ENV_STORE, "")
    if not url:
        raise InvalidArgument("No cluster store given", "overlay networks keep their state in etcd",
                              f"give --store etcd://HOST:2379 (or set {ENV_STORE})")
    return url


def _local_addresses() -> dict[str, tuple[str, int]]:
    """This namespace's IPv4 addresses -> (interface, MTU)."""
    from ..kernel import addr, link

    links = {lk["index"]: lk for lk in link.dump()}
    return {a["local"] or a["address"]: (links[a["index"]]["name"], links[a["index"]]["mtu"] or 1500)
            for a in addr.dump() if a["index"] in links}


def _route_source(host: str, port: int) -> str | None:
    """The address this host would send from to reach the store (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return s.getsockname()[0]
    except OSError:
        return None


def check_advertise(advertise: str | None, store: Store, hosts: list[dict], me: str) -> tuple[str, str, int]:
    """(address, interface, MTU) to advertise as this host's VTEP, or a clear error."""
    mine = _local_addresses()
    if advertise:
        try:
            ip = ipaddress.IPv4Address(advertise)
        except ValueError:
            raise InvalidArgument(f"Invalid --advertise {advertise!r}", "it is an IPv4 address of this host",
                                  "use e.g. --advertise 10.99.0.1") from None
    else:
        src = _route_source(*store.endpoints[0])
        if src is None:
            raise InvalidArgument("Cannot pick an address to advertise", f"this host has no route to {store.url}",
                                  "give --advertise ADDRESS")
        ip = ipaddress.IPv4Address(src)
    text = str(ip)
    usable = sorted(a for a in mine if not ipaddress.IPv4Address(a).is_loopback)
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        raise InvalidArgument(f"Cannot advertise {text}", "other hosts cannot send VXLAN traffic to a loopback, link-local, "
                              "multicast or unspecified address", f"advertise one of this host's addresses: {', '.join(usable) or 'none'}")
    if text not in mine:
        raise InvalidArgument(f"Address {text} is not on this host", "the advertised address is where other hosts send this "
                              "host's VXLAN traffic, so it must be one of its own addresses",
                              f"advertise one of this host's addresses: {', '.join(usable) or 'none'}")
    for h in hosts:
        if h.get("vtep") == text and h.get("id") != me:
            raise Conflict(f"Address {text} is already advertised by member {h.get('name') or h.get('id')}",
                           "two hosts with one VTEP address cannot be told apart (a cloned machine?)",
                           "advertise this host's own address, or make that member leave")
    ifname, mtu = mine[text]
    return text, ifname, mtu


def join(url: str | None, advertise: str | None = None, name: str | None = None) -> dict:
    from .agent import probe

    url = store_url(url)
    store = Store(url)
    current = local.member()
    if current is not None:
        from ..kernel.syscalls import pid_alive

        alive = pid_alive(int(current.get("agent_pid") or 0), current.get("agent_start"))
        if current.get("store") != url:
            raise Conflict(f"This host is already a member of the cluster at {current.get('store')}", "a host belongs to one cluster",
                           "leave it first: netdiag cluster leave")
        if alive:
            return current
    found, _ = store.prefix(keys.HOSTS)
    hosts = [v for _, v, _ in found if isinstance(v, dict)]
    me = (current or {}).get("host") or secrets.token_hex(8)
    vtep, ifname, mtu = check_advertise(advertise, store, hosts, me)
    record = {"store": url, "host": me, "name": name or (current or {}).get("name") or socket.gethostname(), "vtep": vtep,
              "underlay": ifname, "mtu": mtu}
    if record["name"] and not all(ch.isalnum() or ch in "-_." for ch in record["name"]):
        raise InvalidArgument(f"Invalid member name {record['name']!r}", "letters, digits, '-', '_' and '.'", "use e.g. --name host-a")
    local.save(record)
    try:
        start_agent()
        others = [h for h in hosts if h.get("id") != me and h.get("vtep")]
        problems = []
        for h in others:
            answer = _check_peer(vtep, h["vtep"], probe)
            if answer != "ok":
                problems.append(f"member {h.get('name') or h['id']} ({h['vtep']}): {answer}")
        if problems:
            raise NetdiagError(f"Peers cannot reach {vtep}, the address this host advertises", "; ".join(problems),
                               "advertise an address on the network the other members share (--advertise), and let TCP 7946 "
                               "and UDP 4789 through between the hosts")
    except BaseException:
        leave(force=True)
        raise
    return local.member() or record


def _check_peer(source: str, peer: str, probe) -> str:
    """Ask the peer's agent to connect back to `source`; 'ok' or what failed, from either side."""
    forward = probe(source, peer)
    if forward != "ok":
        return f"this host cannot reach it over TCP {peer}:7946 from {source} ({forward.removeprefix('fail: ')})"
    try:
        with socket.create_connection((peer, 7946), timeout=3, source_address=(source, 0)) as s:
            s.sendall(f"check {source}\n".encode())
            s.settimeout(5)
            answer = s.makefile("r").readline().strip()
    except OSError as e:
        return f"the check failed ({e.strerror or e})"
    return "ok" if answer == "ok" else f"it cannot reach this host ({answer.removeprefix('fail: ') or 'no answer'})"


def start_agent(timeout: float = 15.0) -> int:
    """Spawn the agent (its own session, like the DNS resolver) and wait for it to register."""
    from .. import daemon
    from ..kernel.syscalls import proc_start_time

    proc, line = daemon.start("runtime.clusterhost.agent", [], timeout)
    if line == "ok":
        local.update(agent_pid=proc.pid, agent_start=proc_start_time(proc.pid))
        return proc.pid
    proc.kill()
    proc.wait()
    raise NetdiagError("The cluster agent could not start", line.removeprefix("error: ") or "it exited without a word",
                       "check that the store answers and the advertised address is this host's")


def stop_agent(rec: dict, timeout: float = 5.0) -> None:
    """SIGTERM the agent (it revokes the lease: the host and its endpoints leave at once)."""
    from .. import daemon
    from ..kernel.syscalls import pid_alive

    pid, start = int(rec.get("agent_pid") or 0), rec.get("agent_start")
    if not pid_alive(pid, start):
        if rec.get("lease"):  # a dead agent's lease still runs until its TTL: end it now if we can
            try:
                Store(rec["store"]).revoke(int(rec["lease"]))
            except NetdiagError:
                pass
        return
    daemon.stop(pid, lambda: pid_alive(pid, start), timeout, 2.0)


def leave(force: bool = False) -> None:
    from ..networks import enforce, network_records, overlay

    rec = local.member()
    if rec is None:
        raise NotFound("This host is not a cluster member", "", "")
    busy = [f"{e['Name']} on {n['Name']}" for n in network_records.overlays() for e in n["Containers"].values()]
    if busy and not force:
        raise Conflict(f"Containers of this host are on overlay networks ({', '.join(busy)})", "leaving would cut them off",
                       "stop or disconnect them first, or use 'netdiag cluster leave -f'")
    for n in network_records.overlays():
        for cid in list(n["Containers"]):
            overlay.detach(n, cid)
    stop_agent(rec)
    overlay.leave(rec)
    for path in (local.member_path(), local.peers_path()):
        path.unlink(missing_ok=True)
    enforce.apply()  # the VXLAN guard goes with the membership


def members(url: str | None = None) -> list[dict]:
    """Every member with its VTEP, lease (TTL left) and age, and its endpoints; this host marked."""
    from datetime import datetime, timezone

    rec = local.member()
    url = url or (rec or {}).get("store") or store_url(None)
    store = Store(url)
    found, _ = store.prefix(keys.HOSTS)
    eps, _ = store.prefix(keys.ENDPOINTS)
    counts: dict[str, int] = {}
    for _, e, _ in eps:
        if isinstance(e, dict):
            counts[e.get("host", "")] = counts.get(e.get("host", ""), 0) + 1
    out = []
    now = datetime.now(timezone.utc)
    for _, h, meta in found:
        if not isinstance(h, dict):
            continue
        left = None
        if meta.get("lease"):
            res = store.call(lambda c, lease=meta["lease"]: c.post(c.get_url("/kv/lease/timetolive"), json={"ID": lease}))
            left = int(res.get("TTL", -1))
        try:
            age = int((now - datetime.fromisoformat(h.get("joined", "").replace("Z", "+00:00"))).total_seconds())
        except ValueError:
            age = None
        out.append({"id": h.get("id"), "name": h.get("name", ""), "vtep": h.get("vtep"), "lease_ttl": h.get("ttl"),
                    "lease_left": left, "age": age, "endpoints": counts.get(h.get("id"), 0), "self": h.get("id") == (rec or {}).get("host")})
    return sorted(out, key=lambda m: (m["name"], m["id"]))
