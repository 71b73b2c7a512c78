"""Exact evaluation of an nftables ruleset (nft JSON, as `nft -j list ruleset` prints it) for one
packet at one netfilter hook: which rules it meets, which verdict it gets, what NAT does to it.

Semantics follow Linux netfilter:
  * every base chain attached to the hook, across the tables and families asked for, runs in
    priority order (ties: the order of the listing, which is creation order, as in the kernel).
    NAT chains (type nat) are run by the conntrack NAT core, which sits at -100 (prerouting,
    output) or 100 (postrouting, input) among the other chains, and runs its nat chains there by
    their own priority; the first NAT statement (dnat/snat/masquerade/redirect) that fires ends
    that chain AND skips the remaining nat chains at the hook (the binding is made). NAT chains see
    only a connection's first packet: for ct_state "established" they are skipped (the caller's
    packet already carries the connection's addresses);
  * in a chain, rules run in order; `accept` ends that base chain only (the next base chain at the
    hook still runs); `drop`/`reject` end everything; `jump X` runs X and comes back; `goto X`
    does not come back; `return` leaves the current chain; falling off a base chain applies its
    policy; counter, log, comment and mark-setting statements do not decide;
  * a failed lookup in a NAT map or a verdict map ends the rule without effect, as in the kernel.

Evaluated exactly: ip/ip6 saddr, daddr, protocol, length; tcp/udp/th sport, dport; icmp type;
meta iifname/oifname/iif/oif (names; nft's trailing-`*` wildcard), l4proto, nfproto, protocol,
length; ct state; ct status dnat/snat; fib daddr type (from local_addrs); values, prefixes,
ranges, anonymous and named sets (prefix/range elements too), concatenations, maps for dnat/snat,
verdict maps; the comparison operators. iptables-nft `xt` targets whose effect is fixed by their
name alone: REJECT (drop), MASQUERADE, and non-terminal ones (LOG, MARK, TCPMSS, ...).
Docker's other xt parts become exact when the ruleset has been translated from iptables-nft-save
(netdiag/rulesets/iptables_nft.py): translated expressions are ordinary nft JSON (marked "xt": ORIGIN,
which is ignored here); such rules carry "iptables" (their -A line), copied to their steps and
`unknown` entries; an xt expression left opaque may carry "why", which its reason then gives.

What cannot be evaluated is never guessed. `xt` matches (iptables matches stored as opaque blobs
whose arguments nft's JSON does not show: addrtype, conntrack, ...), meta mark, socket, limit,
quota, numgen, unknown keys or statements: such a rule "might match". The evaluator follows the
path where it does not match (that path gives steps, deciding and packet), AND the paths where it
does (every combination, up to a bound). The HOOK VERDICT IS "unknown" WHEN THOSE PATHS DO NOT ALL
END IN THE SAME VERDICT, i.e. when a rule it could not evaluate could change the outcome;
otherwise the verdict stands and the rule is only listed in `unknown` (changes_outcome False).
A NAT rewrite whose result is not in the JSON (xt DNAT/SNAT, address ranges, masquerade without
masquerade_addr) keeps the verdict but sets packet_exact False (listed in `unknown` too).
`numgen random mod M < N drop` (emulated packet loss) is reported with the reason
"probabilistic (numgen random): drops about P% of packets".

Each `unknown` entry: {"family", "table", "chain", "handle", "text", "reason", "verdict" (what the
rule does when it matches), "changes_outcome" (it could change the verdict or the packet)}.

Layout: index.py (a ruleset indexed; base chains by hook in kernel order), evaluate.py (the walk:
hooks, chains, rules, verdicts, NAT), matching.py (what one match expression says about the
packet). Rules as nft-like text come from netdiag.rulesets.nft_text; pure: imports nothing else.
"""
from __future__ import annotations

from ...rulesets.nft_text import rule_text  # re-exported: reasoning prints rules
from .evaluate import HookResult, Packet, Step, evaluate
from .index import BRIDGE_PRIORITIES, PRIORITIES, base_chains

__all__ = ["Packet", "Step", "HookResult", "evaluate", "base_chains", "rule_text", "PRIORITIES", "BRIDGE_PRIORITIES"]
