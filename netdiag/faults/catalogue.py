"""Fault kinds: each plants one fault in a world (world.py) and says what a correct diagnosis is.

A kind's `plant(world, rng)` changes the world with ip/nft/iptables/sysctl (never netdiag) and
returns an Expect: the top-level cause, the hop where the flow dies (a namespace: None for the
lab host), the flow to trace, and, where no command can fix it (a server that is not running),
why not. Kinds apply to the world shapes they name.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from .world import World


@dataclass
class Flow:
    src: str  # a trace target: "ns:NAME" or a container's name
    dst: str  # an address
    port: int
    proto: str = "tcp"
    size: int = 0

    def argv(self) -> list[str]:
        out = [self.src, self.dst, "--proto", self.proto]
        if self.proto != "icmp":
            out += ["--port", str(self.port)]
        if self.size:
            out += ["--size", str(self.size)]
        return out


@dataclass
class Expect:
    cause: str
    at: str | None  # the namespace of the hop where the flow dies; None: the lab host
    flow: Flow
    no_command: str = ""  # why no command can exist (the fix must say what to change instead)
    detail: str = ""  # what was planted, for failure messages


@dataclass
class Kind:
    name: str
    shapes: tuple[str, ...]
    plant: Callable[[World, random.Random], Expect]
    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    every: int = 1  # takes part in every Nth round of a plan (a slow world, e.g. a dockerd, runs less often)


KINDS: dict[str, Kind] = {}


def kind(name: str, shapes=("routed", "chain", "bridged"), note: str = "", every: int = 1):
    def reg(fn):
        KINDS[name] = Kind(name, tuple(shapes), fn, note, every=every)
        return fn
    return reg


def _flow(w: World, proto: str = "tcp") -> Flow:
    return Flow(f"ns:{w.client}", w.server_ip, w.port, proto)


def _forwarder(w: World, rng: random.Random) -> str | None:
    """A namespace that forwards the flow: the host, or in a chain the router too."""
    return rng.choice([None, w.router]) if w.router else None


# -- firewalls: a rule in each family and hook ------------------------------------------------------

@kind("nft-inet-forward-drop", ("routed", "chain"))
def _(w, rng):
    at = _forwarder(w, rng)
    w.nft(at, f"table inet f{rng.randrange(999)} {{ chain forward_filter {{ type filter hook forward priority 0; "
              f"tcp dport {w.port} drop; }}; }}")
    return Expect("FIREWALL_DROP", at, _flow(w), detail="inet forward: tcp dport drop")


@kind("nft-ip-forward-policy-drop", ("routed", "chain"))
def _(w, rng):
    at = _forwarder(w, rng)
    w.nft(at, "table ip gate { chain forward { type filter hook forward priority 0; policy drop; }; }")
    return Expect("FIREWALL_DROP", at, _flow(w), detail="ip forward policy drop")


@kind("nft-input-drop-at-server")
def _(w, rng):
    w.nft(w.server, f"table inet host {{ chain input {{ type filter hook input priority 0; "
                    f"tcp dport {w.port} counter drop; }}; }}")
    return Expect("FIREWALL_DROP", w.server, _flow(w), detail="inet input drop at the server")


@kind("nft-output-drop-at-client")
def _(w, rng):
    w.nft(w.client, f"table ip out {{ chain output {{ type filter hook output priority 0; "
                    f"ip daddr {w.server_ip} tcp dport {w.port} drop; }}; }}")
    return Expect("FIREWALL_DROP", w.client, _flow(w), detail="ip output drop at the client")


@kind("nft-forward-reject", ("routed", "chain"))
def _(w, rng):
    at = _forwarder(w, rng)
    w.nft(at, f"table inet rj {{ chain forward_filter {{ type filter hook forward priority 0; "
              f"tcp dport {w.port} reject with tcp reset; }}; }}")
    return Expect("FIREWALL_DROP", at, _flow(w), detail="inet forward reject with tcp reset")


@kind("iptables-forward-drop", ("routed", "chain"))
def _(w, rng):
    at = _forwarder(w, rng)
    w.run(at, "iptables-nft", "-A", "FORWARD", "-p", "tcp", "--dport", str(w.port), "-j", "DROP")
    return Expect("FIREWALL_DROP", at, _flow(w), detail="iptables-nft FORWARD drop")


@kind("iptables-input-reject-at-server")
def _(w, rng):
    w.run(w.server, "iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", str(w.port), "-j", "REJECT")
    return Expect("FIREWALL_DROP", w.server, _flow(w), detail="iptables-nft INPUT reject at the server")


@kind("nft-bridge-forward-drop", ("bridged",))
def _(w, rng):
    w.nft(None, f"table bridge br {{ chain forward_filter {{ type filter hook forward priority 0; "
                f"tcp dport {w.port} drop; }}; }}")
    return Expect("FIREWALL_DROP", None, _flow(w), detail="bridge forward drop")


@kind("nft-reply-dropped-on-the-way-back", ("routed", "chain"))
def _(w, rng):
    at = _forwarder(w, rng)
    w.nft(at, f"table inet back {{ chain forward_filter {{ type filter hook forward priority 0; "
              f"ip saddr {w.server_ip} tcp sport {w.port} drop; }}; }}")
    return Expect("FIREWALL_DROP", at, _flow(w), detail="the reply (SYN-ACK) dropped in forward")


@kind("nft-reply-dropped-at-client")
def _(w, rng):
    w.nft(w.client, f"table inet back {{ chain input {{ type filter hook input priority 0; "
                    f"ip saddr {w.server_ip} tcp sport {w.port} drop; }}; }}")
    return Expect("FIREWALL_DROP", w.client, _flow(w), detail="the reply dropped in the client's input")


# -- routes ---------------------------------------------------------------------------------------

@kind("no-route-at-client")
def _(w, rng):
    proto = rng.choice(["tcp", "icmp"])
    if w.shape == "bridged":  # on one subnet the connected route is the way: remove that
        w.ip(w.client, "route", "del", w.subnets[0], "dev", "eth0")
    w.ip(w.client, "route", "del", "default")
    return Expect("NO_ROUTE", w.client, _flow(w, proto), detail="the client's route removed")


@kind("no-route-back-at-server", ("routed", "chain"))
def _(w, rng):
    w.ip(w.server, "route", "del", "default")
    return Expect("NO_ROUTE", w.server, _flow(w), detail="the server has no route back to the client")


@kind("no-route-at-host", ("chain",))
def _(w, rng):
    w.ip(None, "route", "del", w.subnets[1])
    return Expect("NO_ROUTE", None, _flow(w, rng.choice(["tcp", "icmp"])), detail="the host's route to the server's subnet removed")


@kind("blackhole-route", ("routed", "chain"))
def _(w, rng):
    at = _forwarder(w, rng)
    w.ip(at, "route", "add", rng.choice(["blackhole", "unreachable", "prohibit"]), f"{w.server_ip}/32")
    return Expect("NO_ROUTE", at, _flow(w), detail="a blackhole/unreachable/prohibit route for the server")


@kind("policy-routing-blackhole", ("routed", "chain"))
def _(w, rng):
    at, table = _forwarder(w, rng), str(rng.randrange(100, 250))
    w.ip(at, "route", "add", "blackhole", "default", "table", table)
    w.ip(at, "rule", "add", "to", f"{w.server_ip}/32", "lookup", table, "priority", str(rng.randrange(100, 30000)))
    return Expect("NO_ROUTE", at, _flow(w), detail=f"ip rule to the server -> table {table} (blackhole)")


# -- forwarding, links, neighbours, rp_filter -------------------------------------------------------

@kind("forwarding-disabled", ("routed", "chain"))
def _(w, rng):
    at = _forwarder(w, rng)
    w.sysctl(at, "net/ipv4/ip_forward", "0")
    return Expect("FORWARDING_DISABLED", at, _flow(w, rng.choice(["tcp", "icmp"])), detail="ip_forward=0")


@kind("forwarding-disabled-on-one-interface", ("routed",))
def _(w, rng):
    w.sysctl(None, f"net/ipv4/conf/{w.host_client_if}/forwarding", "0")
    return Expect("FORWARDING_DISABLED", None, _flow(w), detail="conf/IF/forwarding=0 on the ingress interface")


@kind("link-down-at-host", ("routed", "bridged"), note="in a chain the kernel deletes the route through the "
      "down link, and no state is left that says where it went")
def _(w, rng):
    w.ip(None, "link", "set", w.host_server_if, "down")
    return Expect("LINK_DOWN", None, _flow(w, rng.choice(["tcp", "icmp"])), detail="the host's link towards the server down")


@kind("link-down-at-server")
def _(w, rng):
    w.ip(w.server, "link", "set", "eth0", "down")
    return Expect("LINK_DOWN", w.server, _flow(w), detail="the server's eth0 down")


@kind("neighbour-never-answers")
def _(w, rng):
    w.sysctl(w.server, "net/ipv4/conf/eth0/arp_ignore", "8")  # answers no ARP request at all
    # forget what the world's own check resolved, the server's entries too: a server that still
    # re-confirms its gateway's MAC sends ARP requests, from which the gateway learns the server's
    # MAC after all (the flow then works or not by the timing of that probe)
    for ns in {w.client, None, w.router, w.server}:
        w.ip(ns, "neigh", "flush", "all")
    resolver = w.client if w.shape == "bridged" else (w.router if w.router else None)
    return Expect("NO_NEIGHBOR", resolver, _flow(w), detail="the server answers no ARP (arp_ignore=8)")


@kind("rp-filter-strict", ("routed",))
def _(w, rng):
    """The host believes the client's address lives behind another interface: strict rp_filter
    drops the client's packets on the interface they really come in by."""
    decoy = f"dm{rng.randrange(16**4):04x}"  # a veth pair: this kernel has no dummy driver
    w.ip(None, "link", "add", decoy, "type", "veth", "peer", "name", decoy + "p")
    for dev in (decoy, decoy + "p"):
        w.ip(None, "link", "set", dev, "up")
    w.ip(None, "route", "add", f"{w.client_ip}/32", "dev", decoy)
    w.sysctl(None, "net/ipv4/conf/all/rp_filter", "1")
    w.sysctl(None, f"net/ipv4/conf/{w.host_client_if}/rp_filter", "1")
    return Expect("RP_FILTER", None, _flow(w), detail="strict rp_filter; the route back to the client is another interface")


# -- listeners ------------------------------------------------------------------------------------

@kind("no-listener")
def _(w, rng):
    w.stop_server(w.port)
    return Expect("NO_LISTENER", w.server, _flow(w), no_command="the server program is not running: start it",
                  detail="nothing listens on the port")


@kind("listener-on-loopback-only")
def _(w, rng):
    w.serve(w.port, address="127.0.0.1")
    return Expect("LISTENER_LOOPBACK_ONLY", w.server, _flow(w),
                  no_command="the program must listen on 0.0.0.0 or its address: only its configuration can say how",
                  detail="the server listens on 127.0.0.1")


# -- NAT --------------------------------------------------------------------------------------------

@kind("masquerade-missing", ("routed",))
def _(w, rng):
    """The client's private subnet goes out of the host's eth0 to the outside, which has no route
    back to it: the host should masquerade it and does not."""
    from netdiag.worlds import OUTSIDE_IP

    w.serve(w.port, ns=w.lab.outside, address=OUTSIDE_IP)
    return Expect("NO_NAT", None, Flow(f"ns:{w.client}", OUTSIDE_IP, w.port), detail="no masquerade towards the outside")


@kind("duplicate-address", ("bridged",))
def _(w, rng):
    """An impostor on the bridge claims the server's address and answers ARP first."""
    impostor = f"{w.lab.name}-x"
    from runtime.kernel import ns

    ns.create(impostor)
    w.extra_ns.append(impostor)
    host_if = f"vx{rng.randrange(16**4):04x}"
    w.ip(None, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", impostor)
    w.ip(None, "link", "set", host_if, "master", w.bridge)
    w.ip(None, "link", "set", host_if, "up")
    w.ip(impostor, "link", "set", "lo", "up")
    w.ip(impostor, "addr", "add", f"{w.server_ip}/24", "dev", "eth0")
    w.ip(impostor, "link", "set", "eth0", "up")
    mac = w.ip(impostor, "-j", "link", "show", "eth0")
    import json

    mac = json.loads(mac)[0]["address"]
    w.ip(w.client, "neigh", "replace", w.server_ip, "lladdr", mac, "dev", "eth0", "nud", "reachable")
    return Expect("ADDRESS_CONFLICT", w.client, _flow(w), detail=f"{impostor} holds the server's address too")


# -- MTU: a step on the path whose ICMP "fragmentation needed" a firewall eats ---------------------

FULL_SIZE = 1460  # a TCP payload that fills a 1500-byte packet: what a bulk transfer sends, DF set


def _narrow_link(w: World, rng: random.Random) -> str | None:
    """An MTU step at a forwarder, on its link towards the server: the host's (routed, chain) or the
    router's (chain). Only the forwarder's end is narrowed where the server is the far end: a
    server whose own MTU were smaller would announce an MSS that fits, and TCP never hits the step."""
    at = _forwarder(w, rng)
    mtu = str(rng.choice([1280, 1400, 1420, 1450]))
    if at is None:
        w.ip(None, "link", "set", w.host_server_if, "mtu", mtu)
        if w.router:  # the transit link, both ends: the router's segments towards the host fit it too
            w.ip(w.router, "link", "set", "up0", "mtu", mtu)
    else:
        w.ip(at, "link", "set", "down0", "mtu", mtu)
    return at


def _eat_frag_needed(w: World, rng: random.Random, forwarder: str | None) -> str:
    """Drop the ICMP 'fragmentation needed' the step sends back: where the forwarder makes it
    (output) or where the client receives it (input); an nft or an iptables-nft rule."""
    ns, hook = rng.choice([(forwarder, "output"), (w.client, "input")])
    if rng.random() < 0.5:
        w.nft(ns, f"table inet icmpf {{ chain {hook} {{ type filter hook {hook} priority 0; "
                  "icmp type destination-unreachable icmp code frag-needed drop; }; }")
        return f"nft {hook} drop of ICMP frag-needed in {w.label(ns)}"
    w.run(ns, "iptables-nft", "-A", hook.upper(), "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP")
    return f"iptables-nft {hook.upper()} drop of ICMP frag-needed in {w.label(ns)}"


@kind("mtu-blackhole", ("routed", "chain"))
def _(w, rng):
    at = _narrow_link(w, rng)
    eater = _eat_frag_needed(w, rng, at)
    return Expect("MTU_BLACKHOLE", at, Flow(f"ns:{w.client}", w.server_ip, w.port, size=FULL_SIZE),
                  detail=f"an MTU step in {w.label(at)}; {eater}")


# -- NAT: a published port DNATed to a port where nothing listens ----------------------------------

@kind("dnat-to-wrong-port", ("routed",))
def _(w, rng):
    """The host publishes the server's service on its own address (the client's gateway), on the
    port the server listens on, but the DNAT rule translates it to another port."""
    wrong = rng.choice([p for p in range(1024, 60000, 7) if p not in (w.port, w.control_port)])
    target = f"{w.server_ip}:{wrong}"
    if rng.random() < 0.5:
        w.nft(None, f"table ip publish {{ chain prerouting {{ type nat hook prerouting priority -100; "
                    f"ip daddr {w.client_gw} tcp dport {w.port} dnat to {target}; }}; }}")
        how = "nft"
    else:
        w.run(None, "iptables-nft", "-t", "nat", "-A", "PREROUTING", "-d", w.client_gw, "-p", "tcp", "--dport",
              str(w.port), "-j", "DNAT", "--to-destination", target)
        how = "iptables-nft"
    return Expect("NO_LISTENER", w.server, Flow(f"ns:{w.client}", w.client_gw, w.port),
                  detail=f"{how} DNAT {w.client_gw}:{w.port} -> {target}, where nothing listens")


# -- UDP --------------------------------------------------------------------------------------------

def _udp_flow(w: World) -> Flow:
    w.serve_udp(w.port)
    return _flow(w, "udp")


@kind("udp-forward-drop", ("routed", "chain"))
def _(w, rng):
    at, flow = _forwarder(w, rng), _udp_flow(w)
    if rng.random() < 0.5:
        w.nft(at, f"table inet u{rng.randrange(999)} {{ chain forward_filter {{ type filter hook forward priority 0; "
                  f"udp dport {w.port} drop; }}; }}")
    else:
        w.run(at, "iptables-nft", "-A", "FORWARD", "-p", "udp", "--dport", str(w.port), "-j", "DROP")
    return Expect("FIREWALL_DROP", at, flow, detail="udp dport drop in forward")


@kind("udp-reply-dropped-at-client")
def _(w, rng):
    flow = _udp_flow(w)
    w.nft(w.client, f"table inet back {{ chain input {{ type filter hook input priority 0; "
                    f"ip saddr {w.server_ip} udp sport {w.port} drop; }}; }}")
    return Expect("FIREWALL_DROP", w.client, flow, detail="the UDP answer dropped in the client's input")


@kind("udp-no-listener")
def _(w, rng):
    return Expect("NO_LISTENER", w.server, _flow(w, "udp"), no_command="the server program is not running: start it",
                  detail="nothing listens on the UDP port (ICMP port unreachable comes back)")
