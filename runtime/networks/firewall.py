"""netdiag's bridge-network firewall: pure rendering of nft scripts, plus apply / remove.

All state lives in two tables of netdiag's own, `ip netdiag` and `bridge netdiag`. Every change
replaces both in ONE nft script (`table X {}` + `delete table X` + full definition), which nft
applies as a single netlink transaction: no moment with half a ruleset, and no other table is
ever read for decisions or touched. Chains use policy accept: netdiag only drops what it owns
(traffic to/from its bridges) and never decides for other tables.

Behaviour follows Docker's bridge driver:
  * published ports: DNAT for packets to a local address (prerouting; output for the host itself);
  * masquerade of a network's subnet leaving through another interface (enable_ip_masquerade);
  * hairpin: masquerade DNATed traffic from a bridge back into it, and 127.0.0.0/8 sources
    (ports reached from the host on 127.0.0.1; needs net.ipv4.conf.BRIDGE.route_localnet=1);
  * isolation between netdiag bridges, internal networks, no access from outside to container
    IPs except published ports; packets for 127.0.0.0/8 that did not come from lo are dropped
    before DNAT (a neighbour must not reach ports published on 127.0.0.1);
  * icc=false: bridge-family drop between the network's own veth ports;
  * on a cluster member: VXLAN (UDP 4789) is accepted only from the members' VTEPs, so nobody
    else can inject frames into an overlay (the set is derived from the cluster store).

Every name, address and port is validated before it reaches nft (InvalidArgument/Conflict).
"""
from __future__ import annotations

import ipaddress
import re
from collections import namedtuple

from ..kernel import nft
from ..errors import Conflict, InvalidArgument

TABLE = "netdiag"
FAMILIES = ("ip", "bridge")

_IFNAME = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
_NETID = re.compile(r"^[0-9a-fA-F]{1,64}$")
_CTRID = re.compile(r"^[A-Za-z0-9_.-]{0,128}$")


# Named tuples, immutable and hashable as the frozen dataclasses they were: every bridge `run` builds
# them, and dataclasses (with inspect) would cost it ~7 ms of imports.
class NetSpec(namedtuple("NetSpec", "id bridge subnet gateway internal icc masquerade ports", defaults=((),))):
    """One bridge network. id: the network id (hex); bridge: its device ("docker0", "br-0123456789ab");
    subnet "172.17.0.0/16", gateway "172.17.0.1"; internal: nothing in or out of the bridge except
    between its containers; icc: its containers may talk to each other; masquerade:
    enable_ip_masquerade; ports: the host-side veth names of its endpoints (used when icc is False)."""

    __slots__ = ()


class PortSpec(namedtuple("PortSpec", "proto host_ip host_start host_end ctr_ip ctr_start ctr_end bridge container",
                          defaults=("",))):
    """One published port or port range (-p [HOSTIP:]H[-H2]:C[-C2][/udp]). proto "tcp" or "udp";
    host_ip None for every local address, "127.0.0.1" for loopback only, else that address;
    bridge: the bridge the container is on; container: its id (for the rule comment)."""

    __slots__ = ()


# ---------------------------------------------------------------------------------------------
# validation


def _ifname(name, what: str) -> str:
    if not isinstance(name, str) or not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise InvalidArgument(
            f"Invalid interface name {name!r} for {what}",
            "interface names are 1-15 characters from letters, digits, '_', '.', '-'",
        )
    return name


def _ipv4(addr, what: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.ip_address(addr)
    except (ValueError, TypeError):
        raise InvalidArgument(f"Invalid IP address {addr!r} for {what}", "expected a dotted IPv4 address") from None
    if ip.version != 4:
        raise InvalidArgument(f"Unsupported IPv6 address {addr!r} for {what}", "netdiag bridge networks are IPv4 only")
    return ip


def _port(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidArgument(f"Invalid port {value!r} for {what}", "ports are integers from 1 to 65535")
    return value


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"Invalid value {value!r} for {what}", "expected true or false")
    return value


def _check_net(n: NetSpec) -> None:
    if not isinstance(n.id, str) or not _NETID.fullmatch(n.id):
        raise InvalidArgument(f"Invalid network id {n.id!r}", "network ids are 1-64 hex digits")
    _ifname(n.bridge, f"the bridge of network {n.id[:12]}")
    try:
        subnet = ipaddress.ip_network(n.subnet, strict=True)
    except (ValueError, TypeError) as e:
        raise InvalidArgument(f"Invalid subnet {n.subnet!r} for network {n.id[:12]}", str(e)) from None
    if subnet.version != 4:
        raise InvalidArgument(f"Unsupported IPv6 subnet {n.subnet!r}", "netdiag bridge networks are IPv4 only")
    gw = _ipv4(n.gateway, f"the gateway of network {n.id[:12]}")
    if gw not in subnet:
        raise InvalidArgument(f"Gateway {n.gateway} is outside subnet {n.subnet}", f"network {n.id[:12]}")
    for field in ("internal", "icc", "masquerade"):
        _flag(getattr(n, field), f"{field} of network {n.id[:12]}")
    if not isinstance(n.ports, (tuple, list)):
        raise InvalidArgument(f"Invalid endpoint list for network {n.id[:12]}", "expected a tuple of veth names")
    for p in n.ports:
        _ifname(p, f"an endpoint of network {n.id[:12]}")


def _check_port(p: PortSpec) -> None:
    spec = _port_label(p)
    if p.proto not in ("tcp", "udp"):
        raise InvalidArgument(f"Invalid protocol {p.proto!r} for published port", "expected tcp or udp")
    if p.host_ip is not None:
        _ipv4(p.host_ip, f"published port {spec}")
    _ipv4(p.ctr_ip, f"the container of published port {spec}")
    for f in ("host_start", "host_end", "ctr_start", "ctr_end"):
        _port(getattr(p, f), f"published port {spec}")
    if p.host_start > p.host_end or p.ctr_start > p.ctr_end:
        raise InvalidArgument(f"Invalid port range in {spec}", "a range's start must not exceed its end")
    if p.host_end - p.host_start != p.ctr_end - p.ctr_start:
        raise InvalidArgument(
            f"Mismatched port ranges in {spec}",
            "the host and container ranges must have the same length",
            "publish e.g. 8000-8010:80-90, or a single port on both sides",
        )
    _ifname(p.bridge, f"published port {spec}")
    if not isinstance(p.container, str) or not _CTRID.fullmatch(p.container):
        raise InvalidArgument(f"Invalid container id {p.container!r} for published port", "letters, digits, _ . - only")


def _range(a, b) -> str:
    return str(a) if a == b else f"{a}-{b}"


def _port_label(p: PortSpec) -> str:
    try:
        host = (f"{p.host_ip}:" if p.host_ip else "") + _range(p.host_start, p.host_end)
        return f"{host}:{_range(p.ctr_start, p.ctr_end)}/{p.proto}"
    except Exception:  # noqa: BLE001 - only used inside error messages
        return repr(p)


def _wildcard(host_ip: str | None) -> bool:
    return host_ip is None or ipaddress.ip_address(host_ip).is_unspecified


def validate(nets: list[NetSpec], ports: list[PortSpec]) -> None:
    """Raise InvalidArgument (bad value) or Conflict (two specs claim the same thing)."""
    bridges: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    owner: dict[str, str] = {}
    for n in nets:
        if not isinstance(n, NetSpec):
            raise InvalidArgument(f"Expected a NetSpec, got {type(n).__name__}")
        _check_net(n)
        if n.bridge in bridges:
            raise Conflict(f"Bridge {n.bridge} is used by networks {bridges[n.bridge][:12]} and {n.id[:12]}")
        bridges[n.bridge] = n.id
        prefix = n.id[:12].lower()
        if prefix in prefixes:
            raise Conflict(f"Networks {prefixes[prefix]} and {n.id} share the id prefix {prefix}")
        prefixes[prefix] = n.id
        for v in n.ports:
            if v in owner:
                raise Conflict(f"Interface {v} appears twice (networks {owner[v][:12]} and {n.id[:12]})")
            owner[v] = n.id
    for v in owner:
        if v in bridges:
            raise Conflict(f"Interface {v} is both a bridge and an endpoint")
    for p in ports:
        if not isinstance(p, PortSpec):
            raise InvalidArgument(f"Expected a PortSpec, got {type(p).__name__}")
        _check_port(p)
    # two rules for the same (protocol, port, address) would make the second one dead
    seen: list[PortSpec] = []
    for p in sorted(ports, key=_port_key):
        for q in seen:
            if (
                q.proto == p.proto
                and q.host_start <= p.host_end
                and p.host_start <= q.host_end
                and (_wildcard(p.host_ip) or _wildcard(q.host_ip) or _ip(p.host_ip) == _ip(q.host_ip))
            ):
                raise Conflict(
                    f"Published port {_port_label(p)} overlaps {_port_label(q)}",
                    "the host port is already allocated",
                    "choose another host port or host address",
                )
        seen.append(p)


def _ip(s: str | None):
    return None if s is None else ipaddress.ip_address(s)


def _port_key(p: PortSpec):
    return (p.proto, int(_ip(p.host_ip) or 0), p.host_start, p.host_end, int(_ip(p.ctr_ip)), p.ctr_start, p.bridge)


# ---------------------------------------------------------------------------------------------
# rendering


def _q(s: str) -> str:
    """Quote a validated name/comment for nft (validation already excluded quotes and newlines)."""
    assert '"' not in s and "\n" not in s and "\\" not in s
    return f'"{s}"'


def _set(name: str, elements) -> list[str]:
    lines = [f"\tset {name} {{", "\t\ttype ifname"]
    elems = sorted(set(elements))
    if elems:
        lines.append("\t\telements = { " + ", ".join(_q(e) for e in elems) + " }")
    lines.append("\t}")
    return lines


def _chain(name: str, head: str | None, rules: list[str]) -> list[str]:
    lines = [f"\tchain {name} {{"]
    if head:
        lines.append(f"\t\t{head}")
    lines += [f"\t\t{r}" for r in rules]
    lines.append("\t}")
    return lines


def _published_rule(p: PortSpec) -> str:
    match = ""
    if not _wildcard(p.host_ip):
        match = f"ip daddr {ipaddress.ip_address(p.host_ip)} "
    ctr_ip = ipaddress.ip_address(p.ctr_ip)
    dport = f"{p.proto} dport {_range(p.host_start, p.host_end)}"
    if p.host_start == p.host_end:
        action = f"dnat to {ctr_ip}:{p.ctr_start}"
    elif p.host_start == p.ctr_start:
        action = f"dnat to {ctr_ip}"  # a range with the same ports keeps the destination port
    else:
        # an offset range: one rule, an anonymous map from host port to address . container port
        pairs = ", ".join(
            f"{h} : {ctr_ip} . {p.ctr_start + i}" for i, h in enumerate(range(p.host_start, p.host_end + 1))
        )
        action = f"dnat ip to {p.proto} dport map {{ {pairs} }}"
    host = (f"{p.host_ip}:" if not _wildcard(p.host_ip) else "") + _range(p.host_start, p.host_end)
    who = p.container[:12] or p.bridge
    comment = f"port {host}->{who}:{_range(p.ctr_start, p.ctr_end)}/{p.proto}"
    return f"{match}{dport} {action} comment {_q(comment)}"


VXLAN_PORT = 4789


def render(nets: list[NetSpec], ports: list[PortSpec], vteps: list[str] = ()) -> str:
    """ONE nft script replacing `ip netdiag` and `bridge netdiag` atomically. Deterministic."""
    nets, ports = list(nets), list(ports)
    validate(nets, ports)
    vteps = sorted({str(_ipv4(v, "a cluster member's VTEP")) for v in vteps}, key=ipaddress.IPv4Address)
    nets = sorted(nets, key=lambda n: n.bridge)
    ports = sorted(ports, key=_port_key)

    published = [_published_rule(p) for p in ports]
    postrouting: list[str] = []
    # forward: each net's rules in the order internal, isolation, replies, published, unpublished,
    # from-bridge, grouped by step across nets: every drop of one step precedes the accepts of
    # later steps, so whether a net is isolated/internal never depends on how bridge names sort
    # (per-net blocks would let "published on B" accept A->B before A's isolation rule is seen).
    steps: list[list[str]] = [[] for _ in range(6)]
    for n in nets:
        br, subnet = _q(n.bridge), str(ipaddress.ip_network(n.subnet))
        if n.masquerade and not n.internal:
            postrouting.append(f'ip saddr {subnet} oifname != {br} masquerade comment "masquerade {n.bridge}"')
        postrouting.append(f'oifname {br} ip saddr {subnet} ct status dnat masquerade comment "hairpin {n.bridge}"')
        postrouting.append(f'oifname {br} ip saddr 127.0.0.0/8 masquerade comment "localhost to {n.bridge}"')
        if n.internal:
            steps[0].append(f'iifname {br} oifname != {br} drop comment "internal {n.bridge}"')
            steps[0].append(f'oifname {br} iifname != {br} drop comment "internal {n.bridge}"')
        steps[1].append(f'iifname {br} oifname != {br} oifname @bridges drop comment "isolate {n.bridge}"')
        steps[2].append(f'oifname {br} ct state established,related accept comment "replies to {n.bridge}"')
        steps[3].append(f'oifname {br} ct status dnat accept comment "published on {n.bridge}"')
        steps[4].append(f'oifname {br} iifname != {br} drop comment "unpublished on {n.bridge}"')
        steps[5].append(f'iifname {br} accept comment "from {n.bridge}"')
    forward = [rule for step in steps for rule in step]

    marker = 'comment "managed by netdiag: rewritten as a whole on every change"'
    lines = ["table ip netdiag {}", "delete table ip netdiag", "table bridge netdiag {}", "delete table bridge netdiag"]
    lines += ["table ip netdiag {", f"\t{marker}"]
    lines += _set("bridges", (n.bridge for n in nets))
    # a neighbour can send a frame to the host's MAC addressed to 127.0.0.1: before routing (which
    # would call it a martian) DNAT would rewrite it to a port published on 127.0.0.1 (Docker 28
    # drops these in its raw table too); only the host's own lo may carry loopback addresses
    lines += _chain("guard", "type filter hook prerouting priority raw; policy accept;",
                    ['iifname != "lo" ip daddr 127.0.0.0/8 drop comment "loopback addresses only from lo"'])
    lines += _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;",
                    ['fib daddr type local jump published comment "published ports"'])
    lines += _chain("output", "type nat hook output priority -100; policy accept;",
                    ['fib daddr type local jump published comment "published ports from the host"'])
    lines += _chain("published", None, published)
    lines += _chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", postrouting)
    lines += _chain("forward", "type filter hook forward priority filter; policy accept;", forward)
    if vteps:
        lines += ["\tset vteps {", "\t\ttype ipv4_addr", "\t\telements = { " + ", ".join(vteps) + " }", "\t}"]
        lines += _chain("vxlan_guard", "type filter hook input priority filter; policy accept;",
                        [f'udp dport {VXLAN_PORT} ip saddr != @vteps counter drop comment "VXLAN only from cluster members"'])
    lines.append("}")

    lines += ["table bridge netdiag {", f"\t{marker}"]
    bridge_rules = []
    for n in nets:
        if not n.icc:
            name = f"ports_{n.id[:12].lower()}"
            lines += _set(name, n.ports)
            bridge_rules.append(f'iifname @{name} oifname @{name} drop comment "icc off on {n.bridge}"')
    lines += _chain("forward", "type filter hook forward priority 0; policy accept;", bridge_rules)
    lines.append("}")
    return "\n".join(lines) + "\n"


REMOVE_SCRIPT = "".join(f"table {f} {TABLE} {{}}\ndelete table {f} {TABLE}\n" for f in FAMILIES)


# ---------------------------------------------------------------------------------------------
# kernel side (acts in the calling thread's network namespace)


def apply(nets: list[NetSpec], ports: list[PortSpec], vteps: list[str] = ()) -> None:
    """Replace netdiag's tables with the rendered ruleset: one transaction, all or nothing."""
    nft.run(render(nets, ports, vteps))


def remove() -> None:
    """Delete netdiag's tables if present (idempotent, one transaction, other tables untouched)."""
    nft.run(REMOVE_SCRIPT)


__all__ = ["NetSpec", "PortSpec", "render", "apply", "remove", "validate", "TABLE"]
