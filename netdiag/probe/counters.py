"""nftables counter deltas around a probe: which rules on the path saw it (only rules that have a
`counter` statement count; netdiag adds none to other people's rules)."""
from __future__ import annotations

from runtime.kernel import nft
from runtime.kernel.ns import netns

from ..rulesets.nft_text import rule_text


def read(ns_paths: list[str]) -> dict[tuple, tuple[int, dict]]:
    """(ns_path, family, table, chain, handle) -> (packets, rule) for every counted rule."""
    out: dict[tuple, tuple[int, dict]] = {}
    for path in dict.fromkeys(ns_paths):
        try:
            with netns(path):
                ruleset = nft.ruleset_json()
        except Exception:  # noqa: BLE001 - a namespace that vanished or no nftables: no counters
            continue
        for item in ruleset.get("nftables", []):
            rule = item.get("rule")
            if not rule:
                continue
            for e in rule.get("expr", []):
                c = e.get("counter")
                if isinstance(c, dict):
                    out[(path, rule["family"], rule["table"], rule["chain"], rule.get("handle"))] = (c.get("packets", 0), rule)
    return out


def deltas(before: dict, after: dict, labels: dict[str, str]) -> list[dict]:
    moved = []
    for key, (packets, rule) in after.items():
        prev = before.get(key, (packets, rule))[0]
        if packets > prev:
            path, family, table, chain, handle = key
            moved.append({"kind": "nft_counter", "namespace": labels.get(path, path), "table": f"{family} {table}",
                          "chain": chain, "handle": handle, "packets": packets - prev,
                          "detail": f"{labels.get(path, path)}: {family} {table} {chain} handle {handle}: +{packets - prev} packet(s): {rule_text(rule)}"})
    return moved
