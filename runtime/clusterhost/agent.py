"""The per-host cluster agent: `python -m runtime.clusterhost.agent --ready-fd N` (NETDIAG_ROOT from the
environment), started by `netdiag cluster join`, in the host's network namespace.

  * membership: a lease (TTL NETDIAG_CLUSTER_TTL, 10 s) kept alive every TTL/3, the host's key on
    it; a lease that expired (the store was away too long) is replaced and this host's endpoints
    are registered again on the new one;
  * state: one read of everything under the layout's root, then a watch from that revision; every
    change updates the view and the kernel: this host's mirrors of the overlay networks, the FDB
    and ARP entries of each local sandbox, the names the overlays' DNS resolver gives for the other
    hosts' endpoints, the members' VTEPs for the firewall guard. The view is read again every
    NETDIAG_CLUSTER_RESYNC seconds (5), which also covers a watch stream that died (and a resolver
    that died: it is started again);
  * reachability: a TCP responder on VTEP:7946 (Docker's control port) that answers `ping` and,
    asked `check ADDR`, connects back to ADDR:7946: how `join` proves peers can reach its address.

SIGTERM (cluster leave) revokes the lease, so the host and its endpoints leave at once; a killed
agent's lease expires within its TTL. A restarted agent syncs everything from the store again.
"""
from __future__ import annotations

import os
import queue
import signal
import socket
import sys
import threading
import time

REACH_PORT = 7946
ORPHAN_GRACE = 10.0  # seconds an endpoint of this host may be in the store without a local record:
# an attach claims its address in the store before it writes the record, and must not lose it


def ttl() -> int:
    return max(2, int(os.environ.get("NETDIAG_CLUSTER_TTL", "10")))


def resync_every() -> float:
    return float(os.environ.get("NETDIAG_CLUSTER_RESYNC", "5"))


def log(msg: str) -> None:
    from ..cluster import local

    path = local.directory() / "agent.log"
    try:
        if path.exists() and path.stat().st_size > 1 << 20:
            path.unlink()
        with open(path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
    except OSError:
        pass


class Agent:
    def __init__(self, member: dict):
        from ..cluster.store import Store

        self.member = member
        self.me = member["host"]
        self.store = Store(member["store"])
        self.lease = 0
        self.view: dict[str, object] = {}
        self.events: queue.Queue = queue.Queue()
        self.cancel_watch = None
        self.stopping = threading.Event()
        self.orphans: dict[str, float] = {}  # endpoint id -> when first seen without a local record

    # -- membership ------------------------------------------------------------------------------
    def register(self) -> None:
        """A new lease, this host's key on it, and its endpoints on it again."""
        from datetime import datetime, timezone

        from ..cluster import keys, local
        from ..cluster.store import put

        self.lease = self.store.grant(ttl())
        rec = {"id": self.me, "name": self.member.get("name", ""), "vtep": self.member["vtep"], "mtu": self.member.get("mtu"),
               "joined": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"), "lease": self.lease,
               "ttl": ttl()}
        self.store.txn([], [put(keys.host(self.me), rec, self.lease)], what="register this host")
        local.update(lease=self.lease, agent_pid=os.getpid(), agent_start=_start_time())
        self.reregister_endpoints()
        log(f"registered with lease {self.lease:x}")

    def reregister_endpoints(self) -> None:
        from ..networks import network_records
        from ..cluster import alloc

        for net in network_records.overlays():
            for cid, e in net["Containers"].items():
                ep = {"id": e["EndpointID"], "container": cid, "name": e["Name"], "host": self.me, "ip": e["IPv4Address"],
                      "mac": e["MacAddress"], "aliases": e.get("Aliases", [])}
                if not alloc.register(self.store, net["Id"], ep, self.lease):
                    log(f"endpoint {e['Name']} on {net['Name']}: its address {e['IPv4Address']} now belongs to another endpoint")

    # -- the view ----------------------------------------------------------------------------------
    def read_all(self) -> int:
        from ..cluster import keys

        found, rev = self.store.prefix(keys.ROOT)
        self.view = {k: v for k, v, _ in found}
        return rev

    def apply(self) -> None:
        """Bring this host in line with the view: mirrors, peers (firewall guard), sandboxes."""
        from ..networks import enforce, network_records, overlay
        from ..networks.dns import records as dns_records
        from ..cluster import alloc, keys, local

        hosts, networks, endpoints = {}, [], {}
        for key, value in self.view.items():
            kind, rest = keys.split(key)
            if not isinstance(value, dict):
                continue
            if kind == "hosts" and value.get("id"):
                hosts[value["id"]] = value
            elif kind == "networks":
                networks.append(value)
            elif kind == "endpoints" and len(rest) == 2:
                endpoints.setdefault(rest[0], []).append(value)
        if self.me not in hosts and self.lease:
            log("this host's key is gone from the store: registering again")
            self.register()
            self.read_all()
            return self.apply()
        if local.save_peers([{"id": h["id"], "name": h.get("name", ""), "vtep": h.get("vtep")} for h in hosts.values()]):
            enforce.apply()
        overlay.mirror(networks)
        now, seen, remote = time.monotonic(), set(), {}
        for net in network_records.overlays():
            mine = set(net["Containers"])
            for ep in endpoints.get(net["Id"], []):
                if ep.get("host") != self.me or ep.get("container") in mine:
                    continue
                seen.add(ep["id"])
                if now - self.orphans.setdefault(ep["id"], now) > ORPHAN_GRACE:
                    # detached while the store was away (or an attach died half-way): remove it now
                    alloc.release_address(self.store, net["Id"], ep["id"], ep.get("ip", "0.0.0.0"))
                    log(f"removed stale endpoint {ep.get('name')} of this host on {net['Name']}")
            if net["Containers"]:
                res = overlay.program(net, overlay.remote_endpoints(endpoints.get(net["Id"], []), hosts, self.me))
                if res["added"] or res["removed"] or res["errors"]:
                    log(f"{net['Name']}: +{res['added']} -{res['removed']} {res['errors'] or ''}")
                remote[net["Id"]] = overlay.remote_records(endpoints.get(net["Id"], []), hosts, self.me)
        self.orphans = {k: v for k, v in self.orphans.items() if k in seen}
        if remote:  # the names the local containers' resolver gives for the other hosts' endpoints
            dns_records.update_overlays(remote)

    def on_event(self, kind: str, key: str, value) -> None:
        self.events.put((kind, key, value))

    def watch(self, rev: int) -> None:
        from ..cluster import keys

        if self.cancel_watch:
            self.cancel_watch()
        self.cancel_watch = self.store.watch(keys.ROOT, rev + 1, self.on_event)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, ready) -> None:
        from ..networks.dns import control as dns_control, records as dns_records

        self.register()
        rev = self.read_all()
        self.apply()
        self.watch(rev)
        ready()
        next_keepalive = time.monotonic() + ttl() / 3
        next_resync = time.monotonic() + resync_every()
        while not self.stopping.is_set():
            try:
                dirty = self.drain(timeout=0.2)
                dns_control.reap()  # a resolver it started that another process stopped
                now = time.monotonic()
                if now >= next_keepalive:
                    next_keepalive = now + ttl() / 3
                    if self.store.keepalive(self.lease) <= 0:
                        log("the lease expired: registering again")
                        self.register()
                        dirty = True
                        next_resync = 0
                if now >= next_resync:
                    next_resync = now + resync_every()
                    before = dict(self.view)
                    rev = self.read_all()
                    if self.view != before:
                        self.watch(rev)  # the watch missed something: it may be dead
                        dirty = True
                    dirty |= bool(self.orphans) or dns_records.overlays_resolver_down()  # restarted by apply()
                if dirty:
                    self.apply()
            except Exception as e:  # noqa: BLE001 - the store away, a kernel hiccup: retry, never die
                log(f"error: {e}")
                self.stopping.wait(1.0)
                next_keepalive, next_resync = 0, 0

    def drain(self, timeout: float) -> bool:
        from ..cluster import keys

        dirty = False
        try:
            item = self.events.get(timeout=timeout)
        except queue.Empty:
            return False
        while True:
            kind, key, value = item
            if key.startswith(keys.ROOT):
                if kind == "DELETE":
                    dirty |= self.view.pop(key, None) is not None
                else:
                    dirty |= self.view.get(key) != value
                    self.view[key] = value
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return dirty

    def stop(self) -> None:
        self.stopping.set()

    def leave(self) -> None:
        if self.cancel_watch:
            self.cancel_watch()
        if self.lease:
            try:
                self.store.revoke(self.lease)
                log("left: lease revoked")
            except Exception as e:  # noqa: BLE001
                log(f"leaving: could not revoke the lease ({e}); it expires within {ttl()} s")


# -- reachability responder ---------------------------------------------------------------------
def reach_server(vtep: str, stopping: threading.Event) -> socket.socket:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((vtep, REACH_PORT))
    srv.listen(16)
    srv.settimeout(0.5)

    def serve():
        while not stopping.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=_answer, args=(conn, vtep), daemon=True).start()

    threading.Thread(target=serve, daemon=True, name="reach").start()
    return srv


def _answer(conn: socket.socket, vtep: str) -> None:
    import ipaddress

    with conn:
        conn.settimeout(3)
        try:
            line = conn.makefile("r").readline().strip()
            if line == "ping":
                conn.sendall(b"pong\n")
            elif line.startswith("check "):
                target = str(ipaddress.IPv4Address(line.split()[1]))
                conn.sendall((probe(vtep, target) + "\n").encode())
        except (OSError, ValueError):
            pass


def probe(source: str, target: str, timeout: float = 2.0) -> str:
    """'ok' when target:7946 answers a ping over TCP from `source`, else 'fail: why'."""
    try:
        with socket.create_connection((target, REACH_PORT), timeout=timeout, source_address=(source, 0)) as s:
            s.sendall(b"ping\n")
            s.settimeout(timeout)
            return "ok" if s.makefile("r").readline().strip() == "pong" else "fail: no answer to ping"
    except OSError as e:
        return f"fail: {e.strerror or e}"


def _start_time() -> int | None:
    from ..kernel.syscalls import proc_start_time

    return proc_start_time(os.getpid())


def main(argv: list[str]) -> int:
    import argparse

    from ..cluster import local

    p = argparse.ArgumentParser(prog="runtime.clusterhost.agent")
    p.add_argument("--ready-fd", type=int, default=-1)
    args = p.parse_args(argv)

    def tell(text: str) -> None:
        if args.ready_fd >= 0:
            try:
                os.write(args.ready_fd, (text + "\n").encode())
                os.close(args.ready_fd)
            except OSError:
                pass
            args.ready_fd = -1

    member = local.member()
    if member is None:
        tell("error: this host has no membership record")
        return 1
    agent = Agent(member)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    try:
        srv = reach_server(member["vtep"], agent.stopping)
    except OSError as e:
        tell(f"error: cannot listen on {member['vtep']}:{REACH_PORT} ({e.strerror or e})")
        return 1
    try:
        agent.run(lambda: tell("ok"))
    except Exception as e:  # noqa: BLE001 - said on the ready pipe (or in the log) before exiting
        log(f"fatal: {e}")
        tell(f"error: {e}")
        agent.leave()
        return 1
    finally:
        srv.close()
    agent.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
