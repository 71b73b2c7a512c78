"""The end of the static trace's request leg: the socket that should receive the packet, or why
none does (nothing listens, a listener on loopback only, a DNAT to the wrong port, a port never
published). A part (mixin) of static_trace.Trace."""
from __future__ import annotations

import shlex
from dataclasses import replace

from ..snapshot_model import Model
from . import fixes
from .fixes import Fix
from .nftables import Packet
from .reconcile import HELD_PORT
from .stop import Stop
from .unhooked_dnat import unhooked_dnat_stop


class DeliverySteps:
    """The last step (the receiving socket) of the walk: methods of static_trace.Trace, which mixes them in."""

    def deliver(self, ns: dict, pkt: Packet) -> dict:
        self.hop(ns, f"{self.proto}/{pkt.dport}" if self.proto != "icmp" else "icmp", "socket", "deliver")
        if self.proto == "icmp":
            return {"ns": ns, "pkt": pkt}
        socks = [s for s in ns.get("sockets", []) if s["proto"] == self.proto and s["port"] == pkt.dport]
        fits = [s for s in socks if s["local"] in (pkt.dst, "0.0.0.0", "::") or s["local"] == f"::ffff:{pkt.dst}"]
        if fits:
            s = fits[0]
            if ns["kind"] == "host":
                self.reserved_not_forwarded(ns, pkt, s)
            self.note("socket", f"{ns['label']}: {s.get('process') or 'a process'} listens on {s['local']}:{s['port']}/{s['proto']}")
            return {"ns": ns, "pkt": pkt}
        loop = [s for s in socks if s.get("loopback_only")]
        if ns["kind"] == "host" and not pkt.dst.startswith("127."):
            self.published_on_loopback(pkt)  # that listener is the runtime's proxy (docker-proxy): the runtime's fix
        if loop and not pkt.dst.startswith("127."):
            s = loop[0]
            who = s.get("process") or "the server"
            raise Stop("blocked", "LISTENER_LOOPBACK_ONLY",
                       f"{who} in {ns['label']} is listening only on {s['local']}:{s['port']}, so connections to {pkt.dst}:{pkt.dport} are refused",
                       _loopback_listener_fix(self.model, ns, s, who, fixes.listen_everywhere(ns["id"], self.proto, s["port"])),
                       [{"kind": "socket", "detail": f"{ns['label']}: {s['proto']} {s['local']}:{s['port']} ({who})"}])
        if (unhooked := unhooked_dnat_stop(ns, pkt)) is not None:
            raise unhooked  # a published port's DNAT chain that nothing jumps to: not a missing server
        if ns["kind"] == "host":
            self.unpublished(pkt)
        ports = sorted({s["port"] for s in ns.get("sockets", []) if s["proto"] == self.proto and not s.get("loopback_only")})
        dnat = self.wrong_dnat(ns, pkt)
        raise Stop("blocked", "NO_LISTENER", f"nothing in {ns['label']} listens on {self.proto} port {pkt.dport}"
                   + (f" ({dnat[0]['label']}'s DNAT sends {dnat[2][0]}:{dnat[2][1]} there)" if dnat else "")
                   + (": the connection is refused" if self.proto == "tcp" else ": ICMP port unreachable comes back"),
                   self.dnat_port_fix(ns, pkt, dnat, ports) if dnat else
                   Fix(advice=f"start the server in {ns['label']} on port {pkt.dport}"
                       + (f", or use a port it listens on: {', '.join(map(str, ports))}" if ports else "")
                       + " (manual: nothing listens there, and which program should, with what command, is the "
                         "application's; netdiag cannot know it, so no command is given)",
                       why_unchecked="starting a server is not a change of the network model"),
                   [{"kind": "socket", "detail": f"{ns['label']} listens on: " + (", ".join(
                       f"{s['local']}:{s['port']}/{s['proto']}" for s in ns.get("sockets", [])) or "nothing")}])

    def wrong_dnat(self, ns: dict, pkt: Packet) -> tuple | None:
        """The plain DNAT rule (no runtime's published port) that sent the request to this port, a
        port other than the one it came to: (namespace, rule, before)."""
        for at, rule, before, after in reversed(self.dnat_rules):
            if after == (pkt.dst, pkt.dport) and before[1] != pkt.dport and not self.published_port(at, before):
                return at, rule, before
        return None

    def published_port(self, ns: dict, addr: tuple) -> bool:
        return ns["kind"] == "host" and any(p["proto"] == self.proto and p["host_port"] <= addr[1] <= (p.get("host_end") or p["host_port"])
                                            for c in self.model.containers() for p in c.get("ports", []))

    def dnat_port_fix(self, ns: dict, pkt: Packet, dnat: tuple, ports: list[int]) -> Fix:
        """Change the DNAT rule's port to one the server listens on: the published port itself when
        it listens there (the rule translated a port it should have kept), else its only one."""
        at, rule, before = dnat
        port = before[1] if before[1] in ports else ports[0] if len(ports) == 1 else None
        command, apply = fixes.retarget_dnat(at, rule, port) if port is not None else ("", None)
        if not command:
            why = (f"nothing listens in {ns['label']} at all: start the server first" if not ports else
                   "which one only the service's configuration can say, so no command is given" if port is None else
                   "netdiag cannot write this rule back as a command")
            return Fix(advice=f"manual: change the DNAT rule {rule.text!r} in {at['label']} ({rule.family} {rule.table} "
                              f"{rule.chain}) to a port {ns['label']} listens on ({', '.join(map(str, ports)) or 'none'}); {why}",
                       why_unchecked=why)
        return Fix(command, apply, advice=f"DNAT to {pkt.dst}:{port}, where {ns['label']} listens",
                   namespaces=[at["id"]])

    def published_on_loopback(self, pkt: Packet) -> None:
        """A container publishes this port, but on a loopback address only (`-p 127.0.0.1:P:P`): from
        any other address the port is not published. The fix is the runtime's (publish it on every
        address), never a restart of its proxy, a process the runtime owns."""
        for c in self.model.containers():
            for p in c.get("ports", []):
                end = p.get("host_end") or p["host_port"]
                if not (p["proto"] == pkt.proto and p["host_port"] <= pkt.dport <= end and str(p.get("host_ip") or "").startswith("127.")):
                    continue
                cmd = fixes.publish_everywhere(c, p)
                flag = f"-p {p['host_ip']}:{p['host_port']}:{p['ctr_port']}"
                raise Stop("blocked", "PORT_NOT_PUBLISHED",
                           f"{c['name']} publishes port {pkt.dport} on {p['host_ip']} only ({flag}): to {pkt.dst}:{pkt.dport} "
                           "no published port forwards it, and nothing else listens there",
                           Fix(cmd, advice=f"recreate {c['name']} publishing {p['host_port']}:{p['ctr_port']} on every address "
                               f"(same image and command)" if cmd else
                               f"recreate {c['name']} with -p {p['host_port']}:{p['ctr_port']} instead of {flag} ({fixes.no_command(c)})",
                               why_unchecked="publishing adds a DNAT rule and a new container, which the model cannot add"),
                           [{"kind": "port", "detail": f"container {c['name']} ({c.get('runtime')}) publishes "
                             f"{p['host_ip']}:{p['host_port']}->{p['ctr_port']}/{p['proto']}"}])

    def reserved_not_forwarded(self, ns: dict, pkt: Packet, s: dict) -> None:
        """The host's listener on a published port is the publishing container's own monitor (Podman's
        conmon holds each published port so nothing else takes it; it never answers): the request
        reached the host itself, so the runtime's DNAT for the port was flushed or is no longer
        reached (its chain unhooked: then the jump back is the kernel-level alternative). The fix
        is the owner's: it writes its rules again from its own state."""
        c = next((c for c in self.model.containers() if c.get("monitor_pid") and c["monitor_pid"] == s.get("pid")
                  and any(p["proto"] == pkt.proto and p["host_port"] <= pkt.dport <= (p.get("host_end") or p["host_port"])
                          for p in c.get("ports", []))), None)
        if c is None:
            return
        cli = fixes.owner_cli(c.get("runtime"))
        apply, kernel = _port_forward(ns, pkt, c)
        orphan = unhooked_dnat_stop(ns, pkt)
        kernel_level = [orphan.fix.command] if orphan and orphan.fix and orphan.fix.command else []
        raise Stop("blocked", "PORT_NOT_PUBLISHED",
                   f"{pkt.proto.upper()} port {pkt.dport} is published by {c['name']}, but no rule in {ns['label']} forwards it "
                   "to the container any more (" + ("its DNAT chain is no longer jumped to" if orphan else "its DNAT is gone, "
                   "e.g. flushed") + "): the connection lands on the port's reservation socket, held by "
                   f"{c['name']}'s monitor ({s.get('process') or 'pid'} {s['pid']}), which never answers",
                   Fix(f"{cli} network reload {shlex.quote(c['name'])}", apply,
                       advice=f"{cli} writes the firewall rules of {c['name']}'s networks again (its published ports "
                       "included) from its own state; re-running the container with the same -p does it too, but replaces it",
                       alternatives=([fixes.recreate(c)] if fixes.can_recreate(c) else []) + kernel_level,
                       why_unchecked="" if apply else f"the rules are written by {cli}'s network backend from its own "
                       "state, and the model does not know the container's address: applied, the trace shows it",
                       kernel=kernel),
                   [{"kind": HELD_PORT, "detail": f"{ns['label']}: {s['proto']} {s['local']}:{s['port']} held by "
                     f"{s.get('process') or 'a process'} (pid {s['pid']}), the monitor of {c.get('runtime')} container {c['name']}"},
                    {"kind": "port", "detail": f"container {c['name']} ({c.get('runtime')}) publishes "
                     + ", ".join(fixes.publish_flag(p) for p in c["ports"]) + f"; no DNAT in {ns['label']} matches {pkt.dst}:{pkt.dport}"},
                    *(orphan.evidence if orphan else [])])

    def unpublished(self, pkt: Packet) -> None:
        """Nothing on the host has the port: is there a container that serves it but was never
        published? One listening on that very port, else one that publishes nothing at all."""
        def listening(c):
            socks = self.model.namespaces[c["ns"]].get("sockets", []) if c.get("ns") in self.model.namespaces else []
            return sorted({s["port"] for s in socks if s["proto"] == self.proto and not s.get("loopback_only")})

        same = [c for c in self.model.containers() if pkt.dport in listening(c)]
        bare = [(c, listening(c)) for c in self.model.containers() if not c.get("ports") and listening(c)]
        if same:
            c, port, who = same[0], pkt.dport, ", ".join(c["name"] for c in same) + f" listen(s) on {pkt.dport} inside the container"
        elif len(bare) == 1 and len(bare[0][1]) == 1:
            (c, (port,)), who = bare[0], f"{bare[0][0]['name']} listens on {bare[0][1][0]} but publishes no port"
        else:
            return
        raise Stop("blocked", "PORT_NOT_PUBLISHED",
                   f"nothing on the host listens on {pkt.dst}:{pkt.dport}, and no published port forwards it; {who}",
                   Fix(fixes.recreate(c, "-p", f"{pkt.dport}:{port}"),
                       advice=f"recreate {c['name']} with -p {pkt.dport}:{port} (same image and command)"
                       + ("" if fixes.can_recreate(c) else f" ({fixes.no_command(c)})"),
                       why_unchecked="publishing adds a DNAT rule and a new container, which the model cannot add"),
                   [{"kind": "socket", "detail": f"container {c['name']} listens on {port}/{self.proto} and publishes "
                     + (", ".join(f"{p['host_port']}->{p['ctr_port']}" for p in c.get("ports") or []) or "nothing")}])


def _port_forward(ns: dict, pkt: Packet, c: dict) -> tuple:
    """The part of the owner's rules this flow needs (a DNAT of the published port to the
    container, in nat PREROUTING for what arrives and OUTPUT for the host's own connections), as
    an edit of a model copy and as iptables commands a replica can run instead of the owner's
    command. (None, "") when the model has no address of the container."""
    ip = next((n["ip"] for n in (c.get("networks") or {}).values() if n.get("ip")), None)
    port = next((p for p in c.get("ports", []) if p["proto"] == pkt.proto
                 and p["host_port"] <= pkt.dport <= (p.get("host_end") or p["host_port"])), None)
    if not ip or port is None:
        return None, ""
    to = port["ctr_port"] + pkt.dport - port["host_port"]
    rule = [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": pkt.dst}},
            {"match": {"op": "==", "left": {"payload": {"protocol": pkt.proto, "field": "dport"}}, "right": pkt.dport}},
            {"dnat": {"addr": ip, "port": to}}]
    chains = ("PREROUTING", "OUTPUT")
    edits = [fixes.insert_rules(ns["id"], "ip", "nat", chain, [rule]) for chain in chains]

    def apply(model, ov):
        for edit in edits:
            edit(model, ov)
    kernel = " && ".join(fixes.in_ns(ns, ["iptables", "-t", "nat", "-I", chain, "-d", pkt.dst, "-p", pkt.proto, "--dport",
                                          str(pkt.dport), "-j", "DNAT", "--to-destination", f"{ip}:{to}"]) for chain in chains)
    return apply, kernel


def _loopback_listener_fix(model: Model, ns: dict, s: dict, who: str, apply) -> Fix:
    """A listener bound to a loopback address: where the container's own command names that address
    (`httpd -p 127.0.0.1:80`), recreate it with 0.0.0.0 there; else say what to change, and why no
    command is given (only the program's configuration or command line sets where it listens)."""
    c = model.container_of(ns)
    cmd = ""
    if c and any(s["local"] in arg for arg in c.get("command") or []):
        cmd = fixes.recreate({**c, "command": [a.replace(s["local"], "0.0.0.0") for a in c["command"]]})
    if cmd:
        return Fix(cmd, apply, advice=f"recreate {c['name']} with its command listening on 0.0.0.0 instead of {s['local']}")
    if c and c.get("compose") and any(s["local"] in arg for arg in c.get("command") or []):
        return Fix(apply=apply, advice=f"in the command of {c['name']}, listen on 0.0.0.0 instead of {s['local']} "
                   f"({fixes.no_command(c)})")
    return Fix(apply=apply, advice=f"restart {who} in {ns['label']} listening on 0.0.0.0:{s['port']} (all addresses) instead of "
               f"{s['local']}" + (f" (its pid is {s['pid']})" if s.get("pid") else "")
               + " (manual: only the program's own configuration or command line sets the address it listens on, so no command "
               "is given)")
