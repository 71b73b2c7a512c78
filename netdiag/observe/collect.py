"""Read one network namespace's state: links, addresses, routes, rules, neighbours, bridge and VXLAN
FDB, listening sockets, sysctls, nftables rules with counters, conntrack.

The process joins the namespace (setns; allowed for a multi-threaded process, unlike mount
namespaces), opens its netlink sockets there, reads /proc/self/net and /proc/sys/net (which follow
the reader's namespace), then returns. Read-only: nothing is written to the kernel.
"""
from __future__ import annotations

import os

from runtime.kernel import addr, conntrack as ct, link as kernel_link, neigh, nft, route, sockdiag, sysctl

IFF = {0x1: "UP", 0x2: "BROADCAST", 0x8: "LOOPBACK", 0x10: "POINTOPOINT", 0x40: "RUNNING", 0x80: "NOARP", 0x100: "PROMISC",
       0x1000: "MULTICAST", 0x10000: "LOWER_UP"}
NUD = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE", 0x20: "FAILED",
       0x40: "NOARP", 0x80: "PERMANENT"}
RT_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
RT_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter",
           "net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables", "net/ipv4/ip_local_port_range",
           "net/ipv4/conf/all/arp_ignore")
PER_IF_SYSCTLS = ("rp_filter", "route_localnet", "forwarding", "proxy_arp", "arp_ignore")
# firewall managers that own an nftables table and rewrite it whole on reload (netdiag/reason/firewalld.py)
FIREWALL_DAEMONS = ("firewalld",)


def _flags(value: int) -> list[str]:
    return [name for bit, name in IFF.items() if value & bit]


def collect_here(errors: list[dict], ns_id: str, with_sockets: bool = True, conntrack: bool = False) -> dict:
    """Everything about the namespace this thread is in now, from raw netlink dumps (a bridge with
    hundreds of ports means thousands of messages; a library decoding each costs seconds)."""
    out: dict = {"links": [], "addresses": [], "routes": [], "rules": [], "neighbours": [], "fdb": [],
                 "sockets": [], "sysctls": {}, "nftables": None, "conntrack": []}
    raw_links = kernel_link.dump()
    names = {link["index"]: link["name"] for link in raw_links}
    out["links"] = [_link(link, names) for link in raw_links]
    out["addresses"] = [{"ifname": names.get(a["index"], ""), "address": a["address"], "local": a["local"],
                         "prefixlen": a["prefixlen"], "scope": RT_SCOPES.get(a["scope"], str(a["scope"]))}
                        for a in addr.dump()]
    out["routes"] = [_route(rt, names) for rt in route.dump()]
    out["rules"] = route.rules()
    for n in neigh.dump():
        out["neighbours"].append({"ifname": names.get(n["ifindex"], ""), "address": n["dst"], "lladdr": n["lladdr"],
                                  "state": _nud(n["state"])})
    for n in neigh.fdb():
        out["fdb"].append({"ifname": names.get(n["ifindex"], ""), "lladdr": n["lladdr"], "master": names.get(n["master"]),
                           "dst": n["dst"], "vni": n["vni"], "state": _nud(n["state"]), "self": bool(n["flags"] & 2)})
    if with_sockets:
        out["sockets"] = sockdiag.listening()
    # a bridge port has no IP layer of its own: its rp_filter or forwarding never applies
    out["sysctls"] = _sysctls([link["name"] for link in out["links"] if not link.get("master")])
    try:
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
                          "dev": names.get(v["link"]), "learning": v["learning"], "proxy": v.get("proxy", False),
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


def _sysctls(ifnames: list[str]) -> dict:
    values = {key.replace("/", "."): v for key in SYSCTLS if (v := sysctl.read(key)) is not None}
    for ifname in ifnames:
        for key in PER_IF_SYSCTLS:
            v = sysctl.read(f"net/ipv4/conf/{ifname}/{key}")
            if v is not None:
                values[f"net.ipv4.conf.{ifname}.{key}"] = v
    return values


def _conntrack(errors: list[dict], ns_id: str) -> list[dict]:
    try:
        return ct.dump()
    except ImportError:
        return []
    except Exception as e:  # noqa: BLE001 - a missing nf_conntrack is reported, not fatal
        errors.append({"ns": ns_id, "what": "conntrack", "error": str(e)})
        return []


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


def firewall_daemons(pids: list[int]) -> list[str]:
    """The firewall managers (FIREWALL_DAEMONS) among the processes of a namespace."""
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in FIREWALL_DAEMONS:
            found.add(comm)
    return sorted(found)
