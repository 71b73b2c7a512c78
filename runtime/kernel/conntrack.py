"""The connection tracking table, through pyroute2 (read for full snapshots only: costly, rare)."""
from __future__ import annotations


def dump() -> list[dict]:
    from pyroute2 import Conntrack

    out = []
    with Conntrack() as ct:
        for entry in ct.dump():
            tup = entry.get_attr("CTA_TUPLE_ORIG")
            ip = tup.get_attr("CTA_TUPLE_IP")
            pr = tup.get_attr("CTA_TUPLE_PROTO")
            out.append({"src": ip.get_attr("CTA_IP_V4_SRC"), "dst": ip.get_attr("CTA_IP_V4_DST"),
                        "proto": pr.get_attr("CTA_PROTO_NUM"), "sport": pr.get_attr("CTA_PROTO_SRC_PORT"),
                        "dport": pr.get_attr("CTA_PROTO_DST_PORT"), "status": entry.get_attr("CTA_STATUS")})
    return out
