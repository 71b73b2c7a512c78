"""What the CNI plugins of a pod's conflist write into its host's iptables, and what of it is
missing, so a chain someone flushed is named as the plugin's missing rules and put back exactly
(containernetworking/plugins 1.1, iptables backend; the rule texts below are the plugins' own):

  firewall  filter: `-I FORWARD 1 -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD`,
            `-I CNI-FORWARD 1 -m comment --comment "CNI firewall plugin admin overrides" -j ADMIN`
            (ADMIN: its iptablesAdminChainName, CNI-ADMIN by default) and, per pod address,
            `-A CNI-FORWARD -d IP -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
            `-A CNI-FORWARD -s IP -j ACCEPT`: what lets pods' traffic through a FORWARD that drops.
  bridge    (ipMasq) nat: chain CNI-<hash> (libcni's FormatChainName: sha512 of network name and
            container id), `-A POSTROUTING -s IP -j CHAIN` and in CHAIN `-d SUBNET -j ACCEPT`,
            `! -d 224.0.0.0/4 -j MASQUERADE`, each with the comment `name: "NET" id: "ID"`.

Both write them at ADD only: a CHECK of the pod reports them missing, but no plugin repairs
them; the kubelet re-ADDs only a new sandbox (the pod deleted and recreated). So the fix is the
plugin's own lines, in the plugin's chains, for the pod the traffic belongs to.
The pods are the model's CNI pods (runtime "cni", each network with `ip_masq` and
`firewall_admin_chain` from its cached conflist). Pure: reads the model only.
"""
from __future__ import annotations

import hashlib
import ipaddress

from ..rulesets.iptables_save import parse
from . import fixes
from .fixes import Fix
from .stop import Stop

FIREWALL_CHAIN = "CNI-FORWARD"
FIREWALL_COMMENT = "CNI firewall plugin rules"
ADMIN_COMMENT = "CNI firewall plugin admin overrides"
MULTICAST = "224.0.0.0/4"


def masquerade_chain(network: str, container_id: str) -> str:
    """The bridge plugin's per-pod NAT chain (libcni utils.FormatChainName: 28 characters)."""
    return ("CNI-" + hashlib.sha512((network + container_id).encode()).hexdigest())[:28]


def pod_comment(network: str, container_id: str) -> str:
    return f'name: "{network}" id: "{container_id}"'


def pods_at(model, ip: str) -> list[tuple[dict, str, dict]]:
    """(pod, CNI network name, its endpoint) of what the CNI plugins attached with `ip`: a
    kubelet's pods and netdiag's own `run --network cni:NAME` containers (their endpoint names
    the conflist, `cni_network`; their record's network is `cni:NAME`)."""
    return [(c, e.get("cni_network") or name, e) for c in model.containers()
            for name, e in (c.get("networks") or {}).items()
            if e.get("ip") == ip and (c.get("runtime") == "cni" or e.get("cni_network"))]


def _readd(pod: dict) -> str:
    """Who writes the plugins' rules again: for netdiag's own container its next start (netdiag
    runs ADD then); for a kubelet's pod only a new sandbox."""
    if pod.get("runtime") == "netdiag":
        return f"or restart it: 'netdiag restart {pod['name']}' runs the plugins' DEL and ADD, which writes them again"
    return "no plugin repairs them: only a new sandbox (the pod deleted and recreated) is ADDed again"


class _Saved:
    """The host's iptables rules as iptables-nft-save printed them (what the plugins wrote)."""

    def __init__(self, ns: dict):
        text = (ns.get("iptables_save") or {}).get("ip") or ""
        self.tables = parse(text)
        self.read = bool(text)

    def chain(self, table: str, chain: str) -> list[str] | None:
        t = self.tables.get(table)
        rules = t.chains.get(chain) if t else None
        return None if rules is None else [" ".join(r.line.split()[2:]) for r in rules]

    def has(self, table: str, chain: str, *words: str) -> bool:
        """A rule of `chain` with all of `words` in its text (iptables-save's own order varies)."""
        return any(all(w in line.split() or f'"{w}"' in line for w in words) for line in self.chain(table, chain) or [])


def _in(ns: dict, *argv: str) -> str:
    return fixes.in_ns(ns, ["iptables", *argv])


def _ip_match(field: str, value: str, op: str = "==") -> dict:
    if "/" in value and not value.endswith("/32"):
        net = ipaddress.ip_network(value, strict=False)
        value = {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    else:
        value = value.removesuffix("/32")
    return {"match": {"op": op, "left": {"payload": {"protocol": "ip", "field": field}}, "right": value}}


# -- the firewall plugin ----------------------------------------------------------------------------
def firewall_stop(model, ns: dict, hook: str, pkt, step, where: str, ev: list, policy: bool) -> Stop | None:
    """FIREWALL_DROP naming the firewall plugin's missing accept, when a policy (or catch-all) drop
    in the host's forward hook meets a pod whose conflist runs the firewall plugin and the
    plugin's rules for it are not all there; the fix writes back exactly the missing ones."""
    if hook != "forward" or not policy or step.family != "ip" or ns["id"] != model.snap.get("host"):
        return None
    saved = _Saved(ns)
    if not saved.read:  # without iptables-nft-save's text the plugin's rules cannot be told apart
        return None
    candidates = pods_at(model, pkt.src) + (pods_at(model, pkt.dst) if pkt.ct_state == "established" else [])
    for pod, network, e in candidates:
        if not e.get("firewall_admin_chain"):
            continue
        missing = _firewall_missing(saved, e["ip"], e["firewall_admin_chain"])
        if not missing:
            continue
        commands = [_in(ns, "-t", "filter", *argv) for argv, _, _ in missing]
        apply = _apply_all(ns["id"], "filter", missing)
        lines = "; ".join(" ".join(argv) for argv, _, _ in missing)
        return Stop("blocked", "FIREWALL_DROP",
                    f"{ns['label']} drops the packet at forward: the {'policy' if step.verdict.startswith('policy') else 'final catch-all rule'} "
                    f"of {where} drops what no earlier rule accepted, and the accept the CNI firewall plugin wrote for "
                    f"{pod['name']} ({e['ip']}, network {network}) at its ADD is gone from {FIREWALL_CHAIN} (a flush?)",
                    Fix(" && ".join(commands), apply,
                        advice=f"the firewall plugin's own rules for {pod['name']}, as it writes them at ADD; its CHECK "
                        f"fails until they are back; {_readd(pod)}"),
                    ev + [{"kind": "cni", "detail": f"{pod['name']}: conflist {network} runs the firewall plugin (iptables); "
                           f"missing: {lines}"}])
    return None


def _firewall_missing(saved: _Saved, ip: str, admin: str) -> list[tuple[list[str], str, list[dict]]]:
    """The firewall plugin's rules for `ip` that are not there: (iptables argv after `-t filter`,
    chain, the nft expressions of the rule for the model check)."""
    out = []
    own = saved.chain("filter", FIREWALL_CHAIN)
    if own is None:
        out.append((["-N", FIREWALL_CHAIN], "", []))
    if saved.chain("filter", admin) is None:
        out.append((["-N", admin], "", []))
    if not saved.has("filter", "FORWARD", "-j", FIREWALL_CHAIN):
        out.append((["-I", "FORWARD", "1", "-m", "comment", "--comment", FIREWALL_COMMENT, "-j", FIREWALL_CHAIN], "FORWARD",
                    [{"jump": {"target": FIREWALL_CHAIN}}]))
    if not saved.has("filter", FIREWALL_CHAIN, "-j", admin):
        out.append((["-I", FIREWALL_CHAIN, "1", "-m", "comment", "--comment", ADMIN_COMMENT, "-j", admin], FIREWALL_CHAIN,
                    [{"jump": {"target": admin}}]))
    if not saved.has("filter", FIREWALL_CHAIN, "-d", f"{ip}/32", "RELATED,ESTABLISHED", "ACCEPT"):
        out.append((["-A", FIREWALL_CHAIN, "-d", ip, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
                    FIREWALL_CHAIN, [_ip_match("daddr", ip), *fixes.established_accept()]))
    if not saved.has("filter", FIREWALL_CHAIN, "-s", f"{ip}/32", "ACCEPT"):
        out.append((["-A", FIREWALL_CHAIN, "-s", ip, "-j", "ACCEPT"], FIREWALL_CHAIN, [_ip_match("saddr", ip), {"accept": None}]))
    return out


# -- the bridge plugin's masquerade -----------------------------------------------------------------
def masquerade_fix(model, host: dict, pod_ip: str) -> tuple[Fix, str] | None:
    """The bridge plugin's masquerade for the pod with `pod_ip`, written back where it is missing
    (ipMasq conflists only), and a sentence saying what was missing; None when nothing is."""
    for pod, network, e in pods_at(model, pod_ip):
        if not e.get("ip_masq") or not e.get("prefix"):
            continue
        saved = _Saved(host)
        chain, comment = masquerade_chain(network, pod["id"]), pod_comment(network, pod["id"])
        subnet = str(ipaddress.ip_network(f"{e['ip']}/{e['prefix']}", strict=False))
        tag = ["-m", "comment", "--comment", comment]
        missing = []
        if saved.chain("nat", chain) is None:
            missing.append((["-N", chain], "", []))
        if not saved.has("nat", chain, "-d", subnet, "ACCEPT"):
            missing.append((["-A", chain, "-d", subnet, "-j", "ACCEPT", *tag], chain, [_ip_match("daddr", subnet), {"accept": None}]))
        if not saved.has("nat", chain, "!", "-d", MULTICAST, "MASQUERADE"):
            missing.append((["-A", chain, "!", "-d", MULTICAST, "-j", "MASQUERADE", *tag], chain,
                            [_ip_match("daddr", MULTICAST, "!="), {"masquerade": None}]))
        if not saved.has("nat", "POSTROUTING", "-s", f"{e['ip']}/32", "-j", chain):
            missing.append((["-A", "POSTROUTING", "-s", e["ip"], "-j", chain, *tag], "POSTROUTING",
                            [_ip_match("saddr", e["ip"]), {"jump": {"target": chain}}]))
        if not missing or not saved.read:
            return None
        what = (f"the masquerade the CNI bridge plugin (ipMasq) wrote for {pod['name']} at its ADD is gone: "
                f"{'chain ' + chain + ' is empty' if saved.chain('nat', chain) == [] else 'its rules are missing'}")
        fix = Fix(" && ".join(_in(host, "-t", "nat", *argv) for argv, _, _ in missing), _apply_all(host["id"], "nat", missing),
                  advice=f"the bridge plugin's own masquerade for {pod['name']} (chain {chain}), as it writes it at ADD; "
                  f"{_readd(pod)}")
        return fix, what
    return None


def _apply_all(ns_id: str, table: str, missing: list) -> fixes.Apply:
    """The model edit of `missing`: chains declared, each rule at the top of its chain (all of
    them accept, jump or masquerade: their order among the chain's others changes nothing)."""
    def apply(model, ov):
        items = fixes.editable_rules(ov.edit(ns_id))
        for argv, _, _ in missing:
            if argv[0] == "-N":
                items.append({"chain": {"family": "ip", "table": table, "name": argv[1]}})
        for argv, chain, expr in reversed(missing):
            if argv[0] != "-N":
                fixes.insert_rules(ns_id, "ip", table, chain, [expr])(model, ov)
    return apply
