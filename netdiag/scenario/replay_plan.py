"""Planning a replay: a snapshot (schemas/snapshot.schema.json) -> the plan of a world of fresh named
namespaces that reproduces its network. Pure (no kernel, no files): every name, address and value
is validated here, and everything that cannot be reproduced is listed in `skipped` with the reason.

What is rebuilt: the host's namespace, every namespace joined to it or to a container by veth pairs,
and every container's namespace. An interface whose far side is not in the snapshot (a physical
NIC, a veth to an unread namespace, a kind we do not build) becomes a veth to a small stub
namespace that holds the gateways routed through it, so the link has carrier and ARP answers.
"""
from __future__ import annotations

import ipaddress
import re

from runtime.errors import InvalidArgument

NAME_MAX = 15                                   # netns names kept as short as interface names
PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,9}$")
IFNAME = re.compile(r"^[^/:\s]{1,15}$")          # the kernel's dev_valid_name
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NUMBER = re.compile(r"^[0-9]{1,3}$")
# made by the kernel in every namespace once their module is loaded: never ours to make
FALLBACK_TUNNELS = {"tunl0", "sit0", "gre0", "gretap0", "erspan0", "ip6tnl0", "ip6gre0", "ip_vti0", "ip6_vti0"}
ROUTE_TYPES = ("unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable", "prohibit", "throw")
NO_NEXTHOP = ("blackhole", "unreachable", "prohibit", "throw")
RULE_ACTIONS = (1, 2, 3, 6, 7, 8)                # to_tbl, goto, nop, blackhole, unreachable, prohibit
PER_IF = ("rp_filter", "route_localnet", "forwarding", "proxy_arp")
BRIDGE_NF = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-arptables")


def plan(snapshot: dict, prefix: str) -> dict:
    """The world to build. Raises InvalidArgument for a prefix or a document that cannot be a snapshot."""
    if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix):
        raise InvalidArgument(f"Invalid replay prefix {prefix!r}", "1-10 characters: lower-case letters, digits, '-'",
                              "use e.g. 'rp1'")
    namespaces = snapshot.get("namespaces") if isinstance(snapshot, dict) else None
    host = snapshot.get("host") if isinstance(snapshot, dict) else None
    if not isinstance(namespaces, dict) or host not in namespaces or not all(isinstance(x, dict) for x in namespaces.values()):
        raise InvalidArgument("Not a netdiag snapshot", "it has no namespaces or no host namespace among them",
                              "write one with 'netdiag snapshot -o FILE'")
    skipped: list[str] = []
    chosen = _world(namespaces, host, skipped)
    names = _names(prefix, namespaces, host, chosen)
    out = {"prefix": prefix, "host": names[host], "namespaces": {i: names[i] for i in chosen}, "stubs": {},
           "spaces": [], "veths": [], "skipped": skipped}
    for ns_id in chosen:
        out["spaces"].append(_space(namespaces[ns_id], names[ns_id]))
    _links(out, namespaces, chosen, names)
    by_name = {s["name"]: s for s in out["spaces"]}
    for ns_id in chosen:
        _layer3(by_name[names[ns_id]], namespaces[ns_id], skipped)
    _stub_gateways(out, by_name)
    skipped += _not_reproduced(snapshot, [namespaces[i] for i in chosen])
    return out


# -- which namespaces, and their names ------------------------------------------------------------
def _world(namespaces: dict, host: str, skipped: list) -> list[str]:
    """Host first, then everything reachable from the host or a container over veth pairs."""
    start = [host] + sorted(i for i, ns in namespaces.items() if _dict(ns).get("kind") == "container" and i != host)
    seen, todo = list(start), list(start)
    while todo:
        for link in map(_dict, _links_of(namespaces[todo.pop(0)])):
            peer = _dict(link.get("peer")).get("ns") if link.get("kind") == "veth" else None
            if peer in namespaces and peer not in seen:
                seen.append(peer)
                todo.append(peer)
    for ns_id, ns in namespaces.items():
        if ns_id not in seen:
            skipped.append(f"namespace {_dict(ns).get('label') or ns_id}: not joined to the host or a container by a veth")
    return seen


def _names(prefix: str, namespaces: dict, host: str, chosen: list[str]) -> dict[str, str]:
    room = NAME_MAX - len(prefix) - 1
    host_names = [n for n in _dict(namespaces[host]).get("netns_names") or [] if isinstance(n, str)]
    out, taken = {}, set()
    for ns_id in chosen:
        label = "host" if ns_id == host else _label(_dict(namespaces[ns_id]), host_names)
        out[ns_id] = f"{prefix}-{_unique(label[:room] or 'ns', room, taken)}"
    return out


def _label(ns: dict, host_names: list[str]) -> str:
    kind, name = ns.get("kind"), str(ns.get("name") or "")
    if kind == "netns":  # a lab's "ndlab-1a2b-out" next to its host "ndlab-1a2b" is "out"
        for h in host_names:
            if name.startswith(h + "-"):
                name = name[len(h) + 1:]
    elif kind == "pid":
        name = f"p{(ns.get('pids') or [''])[0]}"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower()


def _unique(label: str, room: int, taken: set) -> str:
    candidate, n = label, 1
    while candidate in taken:
        n += 1
        candidate = f"{label[:room - len(str(n))]}{n}"
    taken.add(candidate)
    return candidate


def _space(ns: dict, name: str) -> dict:
    return {"name": name, "id": ns.get("id"), "label": ns.get("label") or name, "links": [], "addresses": [],
            "routes": [], "rules": [], "neighbours": [], "fdb": [], "sysctls": [], "nft": None, "iptables": {},
            "servers": []}


# -- links ------------------------------------------------------------------------------------------
def _links(out: dict, namespaces: dict, chosen: list[str], names: dict) -> None:
    skipped, by_name = out["skipped"], {s["name"]: s for s in out["spaces"]}
    paired = set()
    for ns_id in chosen:
        space, ns = by_name[names[ns_id]], namespaces[ns_id]
        links = [x for x in _links_of(ns) if isinstance(x, dict)]
        for link in links:
            name, kind = link.get("name"), link.get("kind")
            where = f"{space['label']} {name}"
            if not _ifname(name):
                skipped.append(f"{space['label']}: interface {name!r}: not a valid interface name")
                continue
            if kind in ("ipip", "sit", "gre", "gretap", "erspan", "ip6tnl", "ip6gre", "vti", "vti6") and name in FALLBACK_TUNNELS:
                continue
            entry = {"name": name, "kind": kind, "mtu": _mtu(link.get("mtu")), "mac": _mac(link.get("mac")),
                     "up": bool(link.get("up")), "master": link.get("master") if _ifname(link.get("master")) else None}
            port = _dict(link.get("bridge_port"))
            entry["hairpin"], entry["isolated"] = bool(port.get("hairpin")), bool(port.get("isolated"))
            if port.get("state") not in (None, 3):
                skipped.append(f"{where}: bridge port state {port.get('state')} (STP) is not set; the port forwards")
            pair = _peer(link, namespaces, chosen) if kind == "veth" else None
            if pair:
                peer_ns, peer = pair
                key = frozenset([(ns_id, link.get("index")), (peer_ns, peer.get("index"))])
                if key not in paired:
                    paired.add(key)
                    out["veths"].append({"a": {"ns": names[ns_id], "name": name, "mac": entry["mac"], "mtu": entry["mtu"]},
                                         "b": {"ns": names[peer_ns], "name": peer["name"], "mac": _mac(peer.get("mac")),
                                               "mtu": _mtu(peer.get("mtu"))}})
            elif kind == "vxlan":
                entry["vxlan"] = _vxlan(link.get("vxlan"), {_dict(x).get("name") for x in links}, where, skipped)
                if entry["vxlan"] is None:
                    continue
            elif kind not in ("loopback", "bridge"):
                entry["kind"] = "veth"
                _stub(out, space, entry, kind)
            space["links"].append(entry)
    for space in out["spaces"]:
        known = {x["name"] for x in space["links"]}
        for entry in space["links"]:
            if entry["master"] and entry["master"] not in known:
                skipped.append(f"{space['label']} {entry['name']}: master {entry['master']} is not rebuilt")
                entry["master"] = None


def _peer(link: dict, namespaces: dict, chosen: list[str]):
    peer = _dict(link.get("peer"))
    if peer.get("ns") not in chosen:
        return None
    found = next((x for x in _links_of(namespaces[peer["ns"]]) if isinstance(x, dict) and x.get("index") == peer.get("index")), None)
    return (peer["ns"], found) if found and found.get("kind") == "veth" and _ifname(found.get("name")) else None


def _stub(out: dict, space: dict, entry: dict, kind) -> None:
    """The far side of `entry` is not in the snapshot: a veth to a stub namespace of its own."""
    taken = {s["name"] for s in out["spaces"]} | set(out["stubs"])
    n = len(out["stubs"]) + 1
    while f"{out['prefix']}-u{n}" in taken:
        n += 1
    stub = f"{out['prefix']}-u{n}"
    out["stubs"][stub] = f"{space['name']}/{entry['name']}"
    s = _space({"label": f"stub for {space['label']} {entry['name']}"}, stub)
    s["links"] = [{"name": "lo", "kind": "loopback", "mtu": None, "mac": None, "up": True, "master": None,
                   "hairpin": False, "isolated": False},
                  {"name": "eth0", "kind": "veth", "mtu": entry["mtu"], "mac": None, "up": True, "master": None,
                   "hairpin": False, "isolated": False}]
    s["routes"] = s["rules"] = None  # the kernel's own routes from its addresses are all a stub has
    out["spaces"].append(s)
    out["veths"].append({"a": {"ns": space["name"], "name": entry["name"], "mac": entry["mac"], "mtu": entry["mtu"]},
                         "b": {"ns": stub, "name": "eth0", "mac": None, "mtu": entry["mtu"]}})
    far = {"veth": "its peer is not in the snapshot", "device": "a physical device"}.get(kind, f"{kind} devices are not rebuilt")
    out["skipped"].append(f"{space['label']} {entry['name']}: {far}; it is a veth to the stub namespace {stub}, "
                          "which answers for its gateways and nothing else")


def _vxlan(v, names: set, where: str, skipped: list) -> dict | None:
    v = v if isinstance(v, dict) else {}
    vni, port = v.get("vni"), v.get("port") or 4789
    if not (isinstance(vni, int) and 0 < vni < 1 << 24 and isinstance(port, int) and 0 < port < 65536):
        skipped.append(f"{where}: VXLAN without a valid VNI/port is not rebuilt")
        return None
    out = {"vni": vni, "port": port, "local": _ip(v.get("local")), "group": _ip(v.get("group")),
           "learning": bool(v.get("learning")), "dev": v.get("dev") if v.get("dev") in names and _ifname(v.get("dev")) else None}
    if out["group"]:
        skipped.append(f"{where}: multicast VXLAN group {out['group']} is not joined (remote VTEPs are not in the snapshot)")
        out["group"] = None
    return out


# -- addresses, routes, rules, neighbours, sysctls, firewall, servers -------------------------------
def _layer3(space: dict, ns: dict, skipped: list) -> None:
    label, devs = space["label"], {x["name"] for x in space["links"]}
    for a in ns.get("addresses") or []:
        a = _dict(a)
        ip, plen = _ip(a.get("local") or a.get("address")), a.get("prefixlen")
        if a.get("ifname") not in devs or ip is None or not (isinstance(plen, int) and 0 <= plen <= 32):
            skipped.append(f"{label}: address {a.get('address')}/{plen} on {a.get('ifname')}: not rebuilt (device or address invalid)")
            continue
        space["addresses"].append({"dev": a["ifname"], "address": ip, "prefixlen": plen})
    for r in ns.get("routes") or []:
        route, why = normal_route(_dict(r), devs)
        if route:
            space["routes"].append(route)
        else:
            skipped.append(f"{label}: route {_dict(r).get('dst')} table {_dict(r).get('table')}: {why}")
    for r in ns.get("rules") or []:
        rule = normal_rule(_dict(r))
        if rule:
            space["rules"].append(rule)
        else:
            skipped.append(f"{label}: policy rule {r!r}: not valid")
    for n in ns.get("neighbours") or []:
        n = _dict(n)
        if "PERMANENT" not in str(n.get("state")).split("|"):
            continue  # learnt entries are learnt again
        ip, mac = _ip(n.get("address")), _mac(n.get("lladdr"))
        if n.get("ifname") in devs and ip and mac:
            space["neighbours"].append({"dev": n["ifname"], "address": ip, "lladdr": mac})
        else:
            skipped.append(f"{label}: permanent neighbour {n.get('address')} on {n.get('ifname')}: not valid")
    vxlans = {x["name"] for x in space["links"] if x["kind"] == "vxlan"}
    for f in ns.get("fdb") or []:  # a VXLAN's remote VTEPs; bridges learn theirs again
        f = _dict(f)
        if f.get("ifname") not in vxlans or not f.get("dst"):
            continue
        mac = str(f.get("lladdr")).lower()
        if _ip(f["dst"]) and MAC.fullmatch(mac):  # 00:00:00:00:00:00 is the entry for every unknown MAC
            space["fdb"].append({"dev": f["ifname"], "lladdr": mac, "dst": _ip(f["dst"]),
                                 "vni": f.get("vni") if isinstance(f.get("vni"), int) else None})
        else:
            skipped.append(f"{label}: VXLAN FDB entry {f.get('lladdr')} -> {f.get('dst')} on {f['ifname']}: not valid")
    space["sysctls"] = _sysctls(_dict(ns.get("sysctls")), devs)
    _firewall(space, ns, skipped)
    seen = set()
    for s in ns.get("sockets") or []:
        s = _dict(s)
        key = (s.get("proto"), s.get("local"), s.get("port"))
        if key in seen or s.get("proto") not in ("tcp", "udp") or not isinstance(s.get("port"), int) or not 0 < s["port"] < 65536:
            continue
        seen.add(key)
        if _ip(s.get("local"), 6) is None:
            skipped.append(f"{label}: {s.get('proto')} socket on {s.get('local')}:{s.get('port')}: not a valid address")
            continue
        space["servers"].append({"proto": s["proto"], "local": _ip(s["local"], 6), "port": s["port"],
                                 "process": re.sub(r"[^A-Za-z0-9_.-]", "", str(s.get("process") or ""))[:32]})


def normal_route(r: dict, devs: set) -> tuple[dict | None, str]:
    rtype, dst = r.get("type"), r.get("dst")
    table, metric, proto = r.get("table"), r.get("metric") or 0, r.get("proto")
    try:
        net = ipaddress.IPv4Network("0.0.0.0/0" if dst == "default" else str(dst), strict=False)
    except ValueError:
        return None, "not an IPv4 destination"
    if rtype not in ROUTE_TYPES or not (isinstance(table, int) and 0 < table < 1 << 32) or not isinstance(metric, int):
        return None, "unknown type or table"
    dev, gateway = r.get("dev"), _ip(r.get("gateway"))
    if dev is not None and dev not in devs:
        return None, f"device {dev} is not rebuilt"
    if rtype not in NO_NEXTHOP and dev is None and gateway is None:
        return None, "a multipath route: its next hops are not in the snapshot"
    return {"table": table, "dst": "default" if net.prefixlen == 0 else str(net), "type": rtype,
            "scope": r.get("scope") if r.get("scope") in ("global", "site", "link", "host", "nowhere") else "global",
            "proto": proto if isinstance(proto, int) and 0 <= proto < 256 else 3, "gateway": gateway, "dev": dev,
            "prefsrc": _ip(r.get("prefsrc")), "metric": metric}, ""


def route_key(r: dict) -> tuple:
    """What makes two routes the same route (for reconciling with what the kernel made itself)."""
    return (r["table"], r["dst"], r["type"], r.get("dev"), r.get("gateway"), r.get("metric") or 0)


def normal_rule(r: dict) -> dict | None:
    out = {"priority": r.get("priority"), "table": r.get("table"), "action": r.get("action"),
           "fwmark": r.get("fwmark"), "iif": r.get("iif"), "oif": r.get("oif"), "src": None, "dst": None,
           "invert": bool(r.get("invert")), "suppress_prefixlen": r.get("suppress_prefixlen")}
    if not all(isinstance(out[k], int) and out[k] >= 0 for k in ("priority", "table")) or out["action"] not in RULE_ACTIONS:
        return None
    if out["suppress_prefixlen"] is not None and not (isinstance(out["suppress_prefixlen"], int)
                                                      and 0 <= out["suppress_prefixlen"] <= 32):
        return None
    if out["fwmark"] is not None and not isinstance(out["fwmark"], int) or any(
            out[k] is not None and not _ifname(out[k]) for k in ("iif", "oif")):
        return None
    for k in ("src", "dst"):
        if r.get(k):
            try:
                out[k] = str(ipaddress.IPv4Network(r[k], strict=False))
            except ValueError:
                return None
    return out


def rule_key(r: dict) -> tuple:
    return tuple(r.get(k) for k in ("priority", "table", "action", "fwmark", "iif", "oif", "src", "dst", "invert",
                                    "suppress_prefixlen"))


def _sysctls(values: dict, devs: set) -> list[list[str]]:
    """[key, /proc/sys path, value] of the sysctls that decide forwarding, in an order that keeps
    them: ip_forward first (writing it resets every interface's forwarding), then all/default, then
    per interface (whose name may hold dots, so the path is not the key with dots replaced)."""
    first, middle, last = [], [], []
    for key, value in sorted(values.items()):
        if not isinstance(value, str) or not NUMBER.fullmatch(value):
            continue
        if key == "net.ipv4.ip_forward" or key in BRIDGE_NF:
            (first if key == "net.ipv4.ip_forward" else middle).append([key, key.replace(".", "/"), value])
        elif key.startswith("net.ipv4.conf.") and key.rsplit(".", 1)[-1] in PER_IF:
            dev, leaf = key[len("net.ipv4.conf."):].rsplit(".", 1)
            entry = [key, f"net/ipv4/conf/{dev}/{leaf}", value]
            if dev in ("all", "default"):
                middle.append(entry)
            elif dev in devs and _ifname(dev):
                last.append(entry)
    return first + middle + last


def _firewall(space: dict, ns: dict, skipped: list) -> None:
    """nft JSON for every table, except the iptables-nft tables whose iptables-nft-save text the
    snapshot kept: nft cannot load xt expressions back, iptables-nft-restore can."""
    saved = ns.get("iptables_save") if isinstance(ns.get("iptables_save"), dict) else {}
    owned = set()
    for family, text in saved.items():
        if family in ("ip", "ip6") and isinstance(text, str) and "\0" not in text:
            space["iptables"][family] = text
            owned |= {(family, m) for m in re.findall(r"^\*(\S+)", text, re.M)}
    items = (ns.get("nftables") or {}).get("nftables") if isinstance(ns.get("nftables"), dict) else None
    if not isinstance(items, list):
        return
    keep = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1 or "metainfo" in item:
            continue
        (what, body), = item.items()
        body = _dict(body)
        if (body.get("family"), body.get("table") if what != "table" else body.get("name")) in owned:
            continue
        if what == "rule" and any(isinstance(e, dict) and "xt" in e for e in body.get("expr") or []):
            skipped.append(f"{space['label']}: nft rule {body.get('family')} {body.get('table')} {body.get('chain')} "
                           f"handle {body.get('handle')}: an iptables-nft xt match without iptables-nft-save text")
            continue
        keep.append(item)
    space["nft"] = keep or None


def _stub_gateways(out: dict, by_name: dict) -> None:
    """A stub answers for the gateways routed through its link, on the owner's prefix for them."""
    for stub, where in out["stubs"].items():
        owner, dev = where.split("/", 1)
        space = by_name[owner]
        nets = [ipaddress.IPv4Interface(f"{a['address']}/{a['prefixlen']}").network
                for a in space["addresses"] if a["dev"] == dev]
        seen = set()
        for r in space["routes"]:
            gw = r.get("gateway")
            if r.get("dev") == dev and gw and gw not in seen:
                seen.add(gw)
                plen = next((n.prefixlen for n in nets if ipaddress.IPv4Address(gw) in n), 32)
                by_name[stub]["addresses"].append({"dev": "eth0", "address": gw, "prefixlen": plen})


def _not_reproduced(snapshot: dict, chosen: list[dict]) -> list[str]:
    out = []
    programs = sorted({s.get("process") or "?" for ns in chosen for s in _dict(ns).get("sockets") or [] if isinstance(s, dict)})
    if programs:
        out.append(f"programs ({', '.join(programs)}): each listening socket is answered by a stand-in server "
                   "(it accepts and answers one line), not by the program")
    if any(_dict(ns).get("conntrack") for ns in chosen):
        out.append("connection tracking state: the replay starts with an empty conntrack table")
    if snapshot.get("containers") or snapshot.get("networks"):
        out.append("containers and networks as runtime objects (images, root filesystems, processes, records, "
                   "embedded DNS, resolv.conf): their namespaces are plain named namespaces, name them as ns:NAME")
    if snapshot.get("errors"):
        out.append(f"{len(snapshot['errors'])} observation errors of the snapshot (see its 'errors'): what they hid is not rebuilt")
    if snapshot.get("probes"):
        out.append("live probes recorded with the snapshot are evidence of the original host, not replayed")
    out.append("traffic, counters' history and learnt state (ARP, bridge FDB) start afresh; IPv6 is not in the snapshot")
    return out


# -- small validators --------------------------------------------------------------------------------
def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def _links_of(ns) -> list:
    links = _dict(ns).get("links")
    return links if isinstance(links, list) else []


def _ifname(name) -> bool:
    return isinstance(name, str) and bool(IFNAME.fullmatch(name)) and name not in (".", "..")


def _mac(mac) -> str | None:
    """A unicast, non-zero MAC, or None (the kernel picks one)."""
    if not isinstance(mac, str) or not MAC.fullmatch(mac.lower()) or mac == "00:00:00:00:00:00":
        return None
    return mac.lower() if not int(mac[:2], 16) & 1 else None


def _mtu(mtu) -> int | None:
    return mtu if isinstance(mtu, int) and 68 <= mtu <= 65535 else None


def _ip(text, version: int = 4) -> str | None:
    """A valid IPv4 address (or, with version 6, IPv4 or IPv6) as text, else None."""
    try:
        ip = ipaddress.ip_address(str(text)) if text is not None else None
    except ValueError:
        return None
    return str(ip) if ip is not None and (ip.version == 4 or version == 6) else None
