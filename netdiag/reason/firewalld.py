"""firewalld's table: a firewall of another manager, fixed at firewalld's level.

firewalld (nftables backend) keeps all its rules in one table, `inet firewalld`, and rewrites it
whole on every reload: a rule a user inserts there by hand is gone at the next `firewall-cmd
--reload`. Its zones decide by the interface (or source) a packet comes IN on; an interface in no
zone falls into the default zone (`public`), whose forward chain ends in `reject with icmpx
admin-prohibited`. So a bridge firewalld was never told about has its routed traffic rejected.

Docker's answer (docs.docker.com, "Docker and firewalld"): it puts its bridges into a zone of its
own, `docker`, whose target is ACCEPT. The same at a user's level, with no new zone, is firewalld's
`trusted` zone (target ACCEPT): `firewall-cmd --zone=trusted --change-interface=BRIDGE` (change,
not add: add fails with ZONE_CONFLICT where the bridge is bound to another zone already), plus
`--permanent` to keep it across reloads. Traffic INTO the bridge from outside needs nothing: a
published port arrives DNATed, which firewalld accepts (`ct status dnat accept`), and answers are
established connections.

The table is firewalld's when it is `inet firewalld` AND a firewalld process runs in the namespace
(collected as the namespace's `firewall_daemons`): a table of that name with no daemon behind it is
an ordinary table, diagnosed as any other. Pure: reads the model only.
"""
from __future__ import annotations

from ..rulesets.iptables_nft import ruleset_for
from . import fixes
from .fixes import Fix
from .stop import Stop

FAMILY, TABLE = "inet", "firewalld"  # firewalld's TABLE_NAME (src/firewall/core/nftables.py)
# the base chains where an ingress zone's verdict applies (forwarded and local traffic)
INGRESS_CHAINS = ("filter_FORWARD", "filter_INPUT")


def owns(ns: dict, family: str, table: str) -> bool:
    """Whether (family, table) is the table of a firewalld running in `ns`."""
    return (family, table) == (FAMILY, TABLE) and "firewalld" in (ns.get("firewall_daemons") or [])


def zone_stop(ns: dict, where: str, pkt, bridge: str, what: str, ev: list) -> Stop:
    """FOREIGN_FIREWALL: firewalld's default zone rejects what comes in on `bridge` (a network
    `what` names); the fix puts the bridge in the trusted zone, as Docker does with its own zone."""
    argv = ["firewall-cmd", "--zone=trusted", f"--change-interface={bridge}"]
    apply = _trust(ns, bridge)
    zone = "is bound to a firewalld zone that does not allow it" if _named(ns, bridge) else \
        "is in no firewalld zone, so the default zone's rules apply"
    return Stop("blocked", "FOREIGN_FIREWALL",
                f"{where} belongs to firewalld, which rejects what its zones do not allow: {what} {zone}, "
                f"and its traffic ({pkt.src} -> {pkt.dst}) is rejected",
                Fix(fixes.in_ns(ns, argv), apply,
                    advice=f"put {bridge} in firewalld's trusted zone (target ACCEPT), as Docker puts its bridges in its "
                           f"'docker' zone; add --permanent to keep it across firewall-cmd --reload",
                    alternatives=[f"{fixes.in_ns(ns, [*argv, '--permanent'])} (kept across reloads)"]), ev)


def _named(ns: dict, ifname: str) -> bool:
    """Whether firewalld's rules name the interface (it was bound to a zone: the zone dispatch matches it)."""
    for item in ruleset_for(ns).get("nftables", []):
        r = item.get("rule")
        if r and (r["family"], r["table"]) == (FAMILY, TABLE) and any(
                (e.get("match") or {}).get("right") == ifname for e in r.get("expr", [])):
            return True
    return False


def _trust(ns: dict, bridge: str):
    """What the trusted zone does for `bridge`, on a model copy: accept what enters on it, before
    the zone dispatch, in the ingress chains the table has."""
    present = {(i["chain"]["family"], i["chain"]["table"], i["chain"]["name"]) for i in ruleset_for(ns).get("nftables", [])
               if "chain" in i}
    inserts = [fixes.insert_rules(ns["id"], FAMILY, TABLE, chain, [fixes.iface_accept("iifname", bridge)])
               for chain in INGRESS_CHAINS if (FAMILY, TABLE, chain) in present]

    def apply(model, ov):
        for one in inserts:
            one(model, ov)
    return apply
