"""Read one network namespace's state: links, addresses, routes, rules, neighbours, bridge and VXLAN
FDB, listening sockets, sysctls, nftables rules with counters, conntrack.

The process joins the namespace (setns; allowed for a multi-threaded process, unlike mount
namespaces), opens its netlink sockets there, reads /proc/self/net and /proc/sys/net (which follow
the reader's namespace), then returns. Read-only: nothing is written to the kernel.
"""
from __future__ import annotations

import os
import socket


IFF = {0x1: "UP", 0x2: "BROADCAST", 0x8: "LOOPBACK", 0x10: "POINTOPOINT", 0x40: "RUNNING", 0x100: "PROMISC",
       0x1000: "MULTICAST", 0x10000: "LOWER_UP"}
NUD = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE", 0x20: "FAILED",
       0x40: "NOARP", 0x80: "PERMANENT"}
RT_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
RT_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter",
           "net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables", "net/ipv4/ip_local_port_range")
PER_IF_SYSCTLS = ("rp_filter", "route_localnet", "forwarding", "proxy_arp")


def inside(path: str):
    """Run the block in the network namespace at `path` (this thread only), then come back."""
    from runtime.rtnl import netns

    return netns(path)


def _flags(value: int) -> list[str]:
    return [name for bit, name in IFF.items() if value & bit]


def collect_here(errors: list[dict], ns_id: str, with_sockets: bool = True, conntrack: bool = False) -> dict:
    """Everything about the namespace this thread is in now, from raw netlink dumps (a bridge with
    hundreds of ports means thousands of messages; a library decoding each costs seconds)."""
    from . import rawlink

    out: dict = {"links": [], "addresses": [], "routes": [], "rules": [], "neighbours": [], "fdb": [],
                 "sockets": [], "sysctls": {}, "nftables": None, "conntrack": []}
    raw_links = rawlink.links()
    names = {link["index"]: link["name"] for link in raw_links}
    out["links"] = [_link(link, names) for link in raw_links]
    out["addresses"] = [{"ifname": names.get(a["index"], ""), "address": a["address"], "local": a["local"],
                         "prefixlen": a["prefixlen"], "scope": RT_SCOPES.get(a["scope"], str(a["scope"]))}
                        for a in rawlink.addresses()]
    out["routes"] = [_route(rt, names) for rt in rawlink.routes()]
    out["rules"] = rawlink.rules()
    for n in rawlink.neighbours(socket.AF_INET):
        out["neighbours"].append({"ifname": names.get(n["ifindex"], ""), "address": n["dst"], "lladdr": n["lladdr"],
                                  "state": _nud(n["state"])})
    for n in rawlink.neighbours(socket.AF_BRIDGE):
        out["fdb"].append({"ifname": names.get(n["ifindex"], ""), "lladdr": n["lladdr"], "master": names.get(n["master"]),
                           "dst": n["dst"], "vni": n["vni"], "state": _nud(n["state"]), "self": bool(n["flags"] & 2)})
    if with_sockets:
        out["sockets"] = _sockets()
    # a bridge port has no IP layer of its own: its rp_filter or forwarding never applies
    out["sysctls"] = _sysctls([link["name"] for link in out["links"] if not link.get("master")])
    try:
        from runtime import nft

        out["nftables"] = nft.ruleset_json()
    except Exception as e:  # noqa: BLE001 - missing nftables is reported, not fatal
        errors.append({"ns": ns_id, "what": "nftables", "error": str(e)})
    from .iptables import save_text  # only namespaces whose rules use xt (iptables-nft) pay for it

    out["iptables_save"] = save_text(out["nftables"], errors, ns_id)
    if conntrack:  # costly per namespace; the host's table is the one diagnoses read
        out["conntrack"] = _conntrack(errors, ns_id)
    return out


def _link(link: dict, names: dict) -> dict:
    kind = link["kind"]
    entry = {"index": link["index"], "name": link["name"], "kind": kind or ("loopback" if link["flags"] & 0x8 else "device"),
             "mac": link["mac"], "mtu": link["mtu"], "state": link["state"], "flags": _flags(link["flags"]),
             "up": bool(link["flags"] & 0x1), "master": names.get(link["master"]), "link": link["link"],
             "link_netnsid": link["link_netnsid"]}
    if "vxlan" in link:
        v = link["vxlan"]
        entry["vxlan"] = {"vni": v["vni"], "local": v["local"], "group": v["group"], "port": v["port"],
                          "dev": names.get(v["link"]), "learning": v["learning"],
                          "df": {0: "unset", 1: "set", 2: "inherit"}.get(v["df"] or 0, "unset")}
    if "bridge_port" in link:
        entry["bridge_port"] = link["bridge_port"]
    return entry


def _nud(state: int) -> str:
    return "|".join(name for bit, name in NUD.items() if state & bit) or "NONE"


def _route(rt: dict, names: dict) -> dict:
    return {"table": rt["table"], "dst": f"{rt['dst']}/{rt['dst_len']}" if rt["dst"] else "default",
            "gateway": rt["gateway"], "dev": names.get(rt["oif"]), "prefsrc": rt["prefsrc"],
            "type": RT_TYPES.get(rt["type"], str(rt["type"])), "scope": RT_SCOPES.get(rt["scope"], str(rt["scope"])),
            "proto": rt["proto"], "metric": rt["metric"]}


def _sockets() -> list[dict]:
    """Listening TCP and bound UDP sockets of this namespace, from the kernel's sock_diag netlink.

    The netlink socket is opened in this thread, so it is bound to the namespace we joined
    (pyroute2's DiagSocket may open it from a helper thread, still in the old namespace)."""
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for proto, number, states in (("tcp", socket.IPPROTO_TCP, 1 << 10), ("udp", socket.IPPROTO_UDP, 0xFFF)):
            for local, port, inode in _inet_diag(family, number, states):
                if proto == "udp" and port == 0:
                    continue
                if local.startswith("::ffff:") and "." in local:
                    local = local[7:]  # an IPv4 address on an IPv6 socket
                out.append({"proto": proto, "state": "LISTEN" if proto == "tcp" else "UNCONN", "local": local,
                            "family": 6 if ":" in local else 4, "port": port, "inode": inode,
                            "loopback_only": local.startswith("127.") or local == "::1"})
    return out


def _netlink_dump(protocol: int, msg_type: int, payload: bytes):
    """Send one NLM_F_DUMP request on a raw netlink socket opened in this thread (so in the namespace
    it has joined) and yield (data, start, end) for the body of each answer message."""
    import struct

    NLM_F_REQUEST, NLM_F_DUMP, NLMSG_DONE, NLMSG_ERROR = 1, 0x300, 3, 2
    msg = struct.pack("=IHHII", 16 + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + payload
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol) as nl:
        nl.send(msg)
        while True:
            data = nl.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if mtype in (NLMSG_DONE, NLMSG_ERROR) or length < 16:
                    return
                yield data, off + 16, off + length
                off += (length + 3) & ~3


def _inet_diag(family: int, protocol: int, states: int) -> list[tuple[str, int, int]]:
    """SOCK_DIAG_BY_FAMILY dump: (local address, port, inode) per socket. An IPv6 socket bound to
    :: also accepts IPv4 (unless v6only), which is how busybox httpd listens: "*:80"."""
    import struct

    NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
    req = struct.pack("=BBBBI", family, protocol, 0, 0, states) + bytes(48) + struct.pack("=II", 0xFFFFFFFF, 0xFFFFFFFF)
    out = []
    for data, body, _ in _netlink_dump(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, req):
        sport = struct.unpack_from("!H", data, body + 4)[0]
        src = socket.inet_ntop(family, data[body + 8: body + (12 if family == socket.AF_INET else 24)])
        inode = struct.unpack_from("=I", data, body + 68)[0]
        out.append((src, sport, inode))
    return out


def _sysctls(ifnames: list[str]) -> dict:
    values = {}
    for key in SYSCTLS:
        try:
            with open(f"/proc/sys/{key}") as f:
                values[key.replace("/", ".")] = f.read().strip()
        except OSError:
            pass
    for ifname in ifnames:
        for key in PER_IF_SYSCTLS:
            try:
                with open(f"/proc/sys/net/ipv4/conf/{ifname}/{key}") as f:
                    values[f"net.ipv4.conf.{ifname}.{key}"] = f.read().strip()
            except OSError:
                pass
    return values


def _conntrack(errors: list[dict], ns_id: str) -> list[dict]:
    try:
        from pyroute2 import Conntrack
    except ImportError:
        return []
    out = []
    try:
        with Conntrack() as ct:
            for entry in ct.dump():
                tup = entry.get_attr("CTA_TUPLE_ORIG")
                ip = tup.get_attr("CTA_TUPLE_IP")
                pr = tup.get_attr("CTA_TUPLE_PROTO")
                out.append({"src": ip.get_attr("CTA_IP_V4_SRC"), "dst": ip.get_attr("CTA_IP_V4_DST"),
                            "proto": pr.get_attr("CTA_PROTO_NUM"), "sport": pr.get_attr("CTA_PROTO_SRC_PORT"),
                            "dport": pr.get_attr("CTA_PROTO_DST_PORT"), "status": entry.get_attr("CTA_STATUS")})
    except Exception as e:  # noqa: BLE001
        errors.append({"ns": ns_id, "what": "conntrack", "error": str(e)})
    return out


def socket_owners(pids: list[int]) -> dict[int, dict]:
    """socket inode -> {pid, comm} for the given processes (what the kernel lets us see)."""
    owners: dict[int, dict] = {}
    for pid in pids:
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        comm = None
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    if comm is None:
                        try:
                            comm = open(f"/proc/{pid}/comm").read().strip()
                        except OSError:
                            comm = ""
                    owners.setdefault(int(target[8:-1]), {"pid": pid, "process": comm})
    return owners


def ipv4_addresses() -> list[str]:
    """This namespace's IPv4 addresses from one raw RTM_GETADDR dump: cheap enough to ask every
    namespace on a host with hundreds when looking for who owns an address."""
    import struct

    RTM_GETADDR, IFA_LOCAL = 22, 2
    out = []
    for data, body, end in _netlink_dump(0, RTM_GETADDR, struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)):
        attr = body + 8
        while attr + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, attr)
            if alen < 4:
                break
            if atype == IFA_LOCAL:
                out.append(socket.inet_ntoa(data[attr + 4: attr + 8]))
            attr += (alen + 3) & ~3
    return out
