"""Reasoning, pure: routing (routing), nftables evaluation (nftables), Docker's iptables-nft rules
translated (iptables), the static trace (static_trace), what a dropping rule means (attribute),
the cause catalogue (causes), checkable fixes (fixes), and static vs live evidence (reconcile).
May import netdiag.model, runtime.errors and the standard library; nothing that touches the kernel."""
