"""Observation: read the kernel's real network state into one snapshot (read-only; no subprocesses but
iptables-nft-save, where a namespace's rules hold iptables-nft xt expressions)."""
