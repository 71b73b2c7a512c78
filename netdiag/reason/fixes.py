"""Fixes that can be checked: each is the command a user runs (concrete names, never placeholders)
and, where the model can express it, the same change applied to a copy of the model, so the
diagnosis can trace again and say whether the fix makes the path deliver. Pure: no kernel access.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable

# apply(model, overlay): edit namespaces through overlay.edit(ns_id) (a private copy)
Apply = Callable[[object, object], None]


@dataclass
class Fix:
    command: str = ""  # a shell line to run as root on the host netdiag observes ("" when none fits)
    apply: Apply | None = None  # the same change on a model copy; None: the model cannot express it
    advice: str = ""  # what the command does or, without one, what to do
    why_unchecked: str = ""  # when apply is None: why the fix cannot be checked statically
    alternatives: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)  # ids of the namespaces the command changes, where known
    # for a command at an owner's level (netdiag's, Docker's): the kernel change it makes, as plain
    # ip/nft commands, which a replica (plain namespaces, no owner's state) can run instead
    kernel: str = ""
    # a change at the owner's level whose kernel effect only the owner's driver can plan (the
    # diagnosis pipeline resolves it into `apply` and `kernel`: netdiag/driver_plan.py), e.g.
    # ("icc_on", namespace id, network)
    owner_change: tuple | None = None

    def text(self) -> str:
        head = self.command + (f"  # {self.advice}" if self.command and self.advice else self.advice if not self.command else "")
        return head + "".join(f"; or: {a}" for a in self.alternatives)


# the CLI of the engine that manages a runtime's containers and networks: a fix at the owner's level
OWNER_CLIS = {"docker": "docker", "podman": "podman"}


def owner_cli(runtime: str | None) -> str:
    """`docker`, `podman` or `netdiag`: the command a user runs for what that runtime manages."""
    return OWNER_CLIS.get(runtime or "", "netdiag")


NO_IMAGE = "manual: the model does not know the container's image, so no command is given"


def recreate(c: dict, *extra: str, network: str | None = None) -> str:
    """The command that recreates container `c` as it runs now (image, command, published ports,
    network), plus `extra` run options: a fix that needs a new container is still one command.
    "" when the model does not know the container's image: a command with a placeholder in it
    would not run (the caller says what to do instead), and for a container of a Compose stack,
    which only its compose file may change (`no_command` says why)."""
    if not can_recreate(c):
        return ""
    cli = owner_cli(c.get("runtime"))
    mode = network or c.get("network_mode") or "bridge"
    args = [cli, "run", "-d", "--name", c["name"]]
    if mode not in ("bridge", "default"):
        args += ["--network", mode]
    for flag in dict.fromkeys(publish_flag(p) for p in c.get("ports", [])):  # Docker lists 0.0.0.0 and :: alike
        args += ["-p", flag]
    command = list(c.get("command") or [])
    if c.get("entrypoint") and command:  # the command starts with the image's entrypoint: say so, or it runs twice
        args += ["--entrypoint", command[0]]
        command = command[1:]
    args += list(extra) + [c["image"]] + command
    return f"{cli} rm -f {shlex.quote(c['name'])} && {shlex.join(args)}"


def can_recreate(c: dict | None) -> bool:
    """Whether `recreate` gives a command for `c`."""
    return bool(c and c.get("image") and not c.get("compose"))


def no_command(c: dict | None) -> str:
    """Why a fix that recreates `c` gives no command ("manual: ..."): the model lacks its image, or
    it belongs to a Compose stack, whose file is the one place to change it: a container re-run
    by hand drops out of the stack (labels, aliases, its other networks) and the next `up`
    would bring the old one back."""
    p = (c or {}).get("compose")
    if not p:
        return NO_IMAGE
    cli = "docker compose" if c.get("runtime") == "docker" else "netdiag compose"
    return (f"manual: {c['name']} is service {p['service']} of the Compose project {p['project']}: make the change in "
            f"that service of its compose file, then run '{cli} -p {p['project']} up -d' beside the file (it recreates "
            "that service only); a container recreated by hand would leave the stack, so no command is given")


def publish_flag(p: dict) -> str:
    """`-p`'s value for a published port as the model records it (a range where it is one)."""
    host = f"{p['host_ip']}:" if p.get("host_ip") not in ("", "0.0.0.0", "::", None) else ""
    hp, he = p["host_port"], p.get("host_end") or p["host_port"]
    cp = p["ctr_port"]
    ports = f"{hp}-{he}:{cp}-{cp + he - hp}" if he != hp else f"{hp}:{cp}"
    return f"{host}{ports}/{p['proto']}"


def publish_everywhere(c: dict, binding: dict) -> str:
    """Recreate `c` with its published `binding` (one on a single address, e.g. 127.0.0.1) on
    every address of the host instead, its other ports as they are."""
    ports = [p for p in c.get("ports", []) if (p["proto"], p["host_port"]) != (binding["proto"], binding["host_port"])]
    return recreate({**c, "ports": ports + [{**binding, "host_ip": ""}]})


def network_towards(c: dict | None, peer: dict | None) -> str:
    """The network to recreate container `c` (that has none) on so it reaches `peer` (the other
    end's container, or None): one of the peer's networks when both belong to the same runtime,
    its user-defined network first (the default bridge reaches no user network); else the default."""
    if c is None or peer is None or peer.get("runtime") != c.get("runtime"):
        return "bridge"
    nets = [n for n in (peer.get("networks") or {}) if n not in ("none", "host")]
    return next((n for n in nets if n not in ("bridge", "default")), nets[0] if nets else "bridge")


def in_ns(ns: dict, argv: list[str]) -> str:
    """A command line that runs argv in the namespace `ns`, as root on the host."""
    cmd = shlex.join(argv)
    if ns.get("kind") == "host":
        return cmd
    if ns.get("netns_names"):
        return f"ip netns exec {shlex.quote(ns['netns_names'][0])} {cmd}"
    pids = ns.get("pids") or []
    return f"nsenter -t {pids[0]} -n {cmd}" if pids else f"{cmd}  (in {ns.get('label')})"


# -- edits of a model copy --------------------------------------------------------------------------

def editable_rules(ns: dict) -> list:
    """The editable rule list of a (copied) namespace: iptables-nft rules translated once, so an
    edit does not break the pairing with the iptables-nft-save text observed with them."""
    if ns.get("iptables_save"):
        from ..rulesets.iptables_nft import ruleset_for

        ns["nftables"] = {**ruleset_for(ns)}
        ns["nftables"]["nftables"] = list(ns["nftables"]["nftables"])
        ns.pop("iptables_save")
    return ns.setdefault("nftables", {"nftables": []}).setdefault("nftables", [])


def remove_rule(ns_id: str, family: str, table: str, chain: str, handle: int) -> Apply:
    def apply(model, ov):
        ns = ov.edit(ns_id)
        items = editable_rules(ns)
        items[:] = [i for i in items if not ("rule" in i and (i["rule"]["family"], i["rule"]["table"], i["rule"]["chain"],
                                                              i["rule"].get("handle")) == (family, table, chain, handle))]
    return apply


def insert_rules(ns_id: str, family: str, table: str, chain: str, rules: list[list[dict]]) -> Apply:
    """Rules (lists of nft JSON expressions) at the top of a chain, like `nft insert rule` / `iptables -I`."""
    def apply(model, ov):
        items = editable_rules(ov.edit(ns_id))
        first = next((k for k, i in enumerate(items) if "rule" in i and (i["rule"]["family"], i["rule"]["table"],
                                                                        i["rule"]["chain"]) == (family, table, chain)), None)
        if first is None:  # an empty chain: after its declaration
            first = next(k for k, i in enumerate(items) if "chain" in i and (i["chain"]["family"], i["chain"]["table"],
                                                                           i["chain"]["name"]) == (family, table, chain)) + 1
        items[first:first] = [{"rule": {"family": family, "table": table, "chain": chain, "handle": -1 - n,
                                        "comment": "netdiag fix check", "expr": expr}} for n, expr in enumerate(rules)]
    return apply


def iface_accept(key: str, name: str) -> list[dict]:
    return [{"match": {"op": "==", "left": {"meta": {"key": key}}, "right": name}}, {"accept": None}]


def iface_pair_accept(name: str) -> list[dict]:
    """`iifname NAME oifname NAME accept`: traffic bridged within NAME, both ways."""
    return [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": name}},
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": name}}, {"accept": None}]


def flow_accept(src: str, dst: str, proto: str, dport: int) -> list[dict]:
    """Accept this flow and no more: from its source, to its destination and port."""
    expr = [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": src}}] if src else []
    expr.append({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": dst}})
    if proto in ("tcp", "udp") and dport:
        expr.append({"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": dport}})
    return expr + [{"accept": None}]


def established_accept() -> list[dict]:
    """`ct state established,related accept`: the answers of connections, whatever their ports."""
    return [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": None}]


def set_sysctl(ns_id: str, key: str, value: str) -> Apply:
    def apply(model, ov):
        ov.edit(ns_id).setdefault("sysctls", {})[key] = value
    return apply


def link_up(ns_id: str, ifname: str) -> Apply:
    """`ip link set IF up`; a veth's peer gets its carrier back with it (if it is up itself), and
    the kernel adds the prefix routes of the link's addresses again (the routes it deleted when the
    link went down that are not prefix routes stay gone)."""
    def apply(model, ov):
        ns = ov.edit(ns_id)
        for a in ns["addresses"]:
            if a["ifname"] != ifname or a["prefixlen"] >= 32 or (a.get("local") or a["address"]).startswith("127."):
                continue
            net = str(ipaddress.ip_network(f"{a['address']}/{a['prefixlen']}", strict=False))
            if not any(r["table"] == 254 and r["dst"] == net and r.get("dev") == ifname for r in ns["routes"]):
                ns["routes"].append({"table": 254, "dst": net, "gateway": None, "dev": ifname, "prefsrc": a.get("local") or a["address"],
                                     "type": "unicast", "scope": "link", "proto": 2, "metric": 0})
        for link in ns["links"]:
            if link["name"] == ifname:
                link["up"] = True
                link["flags"] = sorted(set(link.get("flags", [])) | {"UP", "LOWER_UP", "RUNNING"})
                link["state"] = "UP"
                peer = link.get("peer") or {}
                if peer.get("ns") in ov:
                    for other in ov.edit(peer["ns"])["links"]:
                        if other["index"] == peer.get("index") and other["up"]:
                            other["flags"] = sorted(set(other.get("flags", [])) | {"LOWER_UP", "RUNNING"})
                            other["state"] = "UP"
    return apply


def set_mtu(ns_id: str, ifname: str, mtu: int) -> Apply:
    def apply(model, ov):
        for link in ov.edit(ns_id)["links"]:
            if link["name"] == ifname:
                link["mtu"] = mtu
    return apply


def replace_route(ns_id: str, dst: str, gateway: str | None, dev: str) -> Apply:
    """Like `ip route replace DST [via GW] dev DEV` in the main table."""
    def apply(model, ov):
        ns = ov.edit(ns_id)
        ns["routes"] = [r for r in ns["routes"] if not (r["table"] == 254 and r["dst"] == dst)]
        ns["routes"].append({"table": 254, "dst": dst, "gateway": gateway, "dev": dev, "prefsrc": None, "type": "unicast",
                             "scope": "global" if gateway else "link", "proto": 3, "metric": 0})
    return apply


def remove_route(ns_id: str, table: int, dst: str, type_: str) -> Apply:
    """`ip route del TYPE DST [table T]`."""
    def apply(model, ov):
        ns = ov.edit(ns_id)
        ns["routes"] = [r for r in ns["routes"] if not (r["table"] == table and r["dst"] == dst and r.get("type", "unicast") == type_)]
    return apply


def remove_policy_rule(ns_id: str, rule: dict) -> Apply:
    """`ip rule del priority P [selectors]`."""
    def apply(model, ov):
        ns = ov.edit(ns_id)
        ns["rules"] = [r for r in ns.get("rules") or [] if r != rule]
    return apply


def listen_everywhere(ns_id: str, proto: str, port: int) -> Apply:
    def apply(model, ov):
        for s in ov.edit(ns_id).get("sockets", []):
            if s["proto"] == proto and s["port"] == port and s.get("loopback_only"):
                s.update(local="0.0.0.0", loopback_only=False)
    return apply


def add_fdb(ns_id: str, dev: str, mac: str, dst: str, replace_all: bool = False) -> Apply:
    """`bridge fdb append` (or, with replace_all, `bridge fdb replace`: the MAC's other entries go)."""
    def apply(model, ov):
        ns = ov.edit(ns_id)
        if replace_all:
            ns["fdb"] = [f for f in ns["fdb"] if not (f["ifname"] == dev and f["lladdr"] == mac and f.get("dst"))]
        ns["fdb"].append({"ifname": dev, "lladdr": mac, "master": None, "dst": dst, "vni": None,
                          "state": "PERMANENT", "self": True})
    return apply


def add_neighbour(ns_id: str, dev: str, ip: str, mac: str) -> Apply:
    """`ip neigh replace IP lladdr MAC dev DEV nud permanent`."""
    def apply(model, ov):
        ns = ov.edit(ns_id)
        ns["neighbours"] = [n for n in ns["neighbours"] if not (n["ifname"] == dev and n["address"] == ip)]
        ns["neighbours"].append({"ifname": dev, "address": ip, "lladdr": mac, "state": "PERMANENT"})
    return apply


def add_masquerade(ns_id: str, subnet: str, oif: str) -> Apply:
    def apply(model, ov):
        items = editable_rules(ov.edit(ns_id))
        items.append({"table": {"family": "ip", "name": "netdiag_fix_check"}})
        items.append({"chain": {"family": "ip", "table": "netdiag_fix_check", "name": "post", "type": "nat", "hook": "postrouting",
                                "prio": 100, "policy": "accept"}})
        net, plen = subnet.split("/")
        items.append({"rule": {"family": "ip", "table": "netdiag_fix_check", "chain": "post", "handle": 1, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": net, "len": int(plen)}}}},
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": oif}}, {"masquerade": None}]}})
    return apply


def check(model, fix: Fix, retrace) -> dict:
    """Apply `fix` to a copy of the model and trace again: does the path deliver now, both ways (the
    static path follows the reply back, so a fix that opens one direction only does not pass)?"""
    if fix.apply is None:
        return {"checked": False, "delivers": None, "detail": fix.why_unchecked or "the model cannot express this change"}
    copy, ov = model.overlay()
    try:
        fix.apply(copy, ov)
        after = retrace(copy)
    except Exception as e:  # noqa: BLE001 - a check that cannot run is reported, never fatal
        return {"checked": False, "delivers": None, "detail": f"the check could not run: {type(e).__name__}: {e}"}
    delivers = after.verdict == "delivered"
    back = after.reply.verdict if after.reply else None
    detail = ("with this fix the static path delivers, request and reply" if back == "delivered" else
              "with this fix the static path delivers the request (the reply's way back could not be followed to the end)"
              ) if delivers else \
        f"with this fix the path is still {after.verdict}" + (f" ({after.cause}: {after.summary})" if after.cause else "")
    crossed = list(dict.fromkeys(h.namespace for h in after.hops if h.namespace))
    return {"checked": True, "delivers": delivers, "detail": detail,
            "after": {"verdict": after.verdict, "cause": after.cause, "summary": after.summary, "blocked_at": after.blocked_at,
                      "namespaces": crossed}}


def retarget_dnat(ns: dict, step, to_port: int) -> tuple[str, Apply | None]:
    """The command that changes the port a DNAT rule (an nft Step) translates to, in place (its
    position in the chain kept), and the same edit of a model copy. iptables-nft rules as iptables
    says them (`-R CHAIN N`), native ones with `nft replace rule ... handle H`. ("", None) when the
    rule's text is not one nft reads back (an xt expression, a statement shown as JSON)."""
    if step.iptables.startswith("-A "):
        spec = re.sub(r"(--to-destination \S*?:)\d+(?:-\d+)?", rf"\g<1>{to_port}", step.iptables)
        position = [r["rule"].get("handle") for r in _rules_of(ns, step)].index(step.handle) + 1
        argv = ["iptables", "-t", step.table, "-R", step.chain, str(position), *shlex.split(spec)[2:]]
    elif "xt " in step.text or '{"' in step.text:
        return "", None
    else:
        text = re.sub(r"(dnat (?:ip )?to \S*?:)\d+(?:-\d+)?", rf"\g<1>{to_port}", step.text)
        argv = ["nft", "replace", "rule", step.family, step.table, step.chain, "handle", str(step.handle), *shlex.split(text)]
        if step.comment:
            argv += ["comment", f'"{step.comment}"']

    def apply(model, ov):
        for item in editable_rules(ov.edit(ns["id"])):
            r = item.get("rule")
            if r and (r["family"], r["table"], r["chain"], r.get("handle")) == (step.family, step.table, step.chain, step.handle):
                for e in r["expr"]:
                    if isinstance(e, dict) and isinstance(e.get("dnat"), dict):
                        e["dnat"]["port"] = to_port
    return in_ns(ns, argv), apply


def _rules_of(ns: dict, step) -> list:
    """The rules of step's chain in order, as the model reads them (iptables-nft ones translated)."""
    from ..rulesets.iptables_nft import ruleset_for

    return [i for i in ruleset_for(ns).get("nftables", []) if "rule" in i and (
        i["rule"]["family"], i["rule"]["table"], i["rule"]["chain"]) == (step.family, step.table, step.chain)]
