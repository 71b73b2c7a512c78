"""Reading iptables-nft-save where nft's JSON hides what iptables-nft wrote (its xt matches and
targets): when a namespace's rules use xt, the tool's text is read in that namespace and kept in
the snapshot entry as `iptables_save` ({"ip": TEXT, "ip6": TEXT}). Translating it into nft
expressions is pure, below reasoning: netdiag.rulesets.iptables_nft."""
from __future__ import annotations

from ..rulesets.iptables_save import TOOLS

TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------------
# observing


def xt_families(ruleset) -> list[str]:
    """The families (ip, ip6) whose rules hold an xt expression: a scan of the JSON already read."""
    found = set()
    for item in (ruleset or {}).get("nftables", []) if isinstance(ruleset, dict) else []:
        rule = item.get("rule") if isinstance(item, dict) else None
        if rule and rule.get("family") in TOOLS and rule["family"] not in found:
            if any(isinstance(e, dict) and "xt" in e for e in rule.get("expr") or []):
                found.add(rule["family"])
    return sorted(found)


def save_text(ruleset, errors: list[dict], ns_id: str) -> dict | None:
    """iptables-nft-save's output per family, for the families whose rules use xt; None if none.

    Runs in the network namespace of the calling thread: collect_here's thread has joined the
    namespace (setns), and a child process starts in its parent thread's namespaces. A missing or
    failing tool is an observation error; the xt rules then stay opaque, as without this module."""
    families = xt_families(ruleset)
    if not families:
        return None
    import subprocess

    from runtime.kernel import tools

    out = {}
    for family in families:
        tool = tools.find(TOOLS[family])
        if tool is None:
            errors.append({"ns": ns_id, "what": "iptables", "error": f"{TOOLS[family]} is not installed, so the "
                           "arguments of iptables-nft's xt rules (conntrack, addrtype, DNAT ...) cannot be read; "
                           "install the iptables package"})
            continue
        try:
            p = tools.run([tool], timeout=TIMEOUT, env={"PATH": tools.search_path(), "LC_ALL": "C"})
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append({"ns": ns_id, "what": "iptables", "error": f"{TOOLS[family]}: {e}"})
            continue
        if p.returncode != 0:
            errors.append({"ns": ns_id, "what": "iptables",
                           "error": f"{TOOLS[family]} exited {p.returncode}: {p.stderr.strip()[-300:]}"})
            continue
        out[family] = p.stdout
    return out or None


__all__ = ["save_text", "xt_families", "TOOLS"]
