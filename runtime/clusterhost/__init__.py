"""This host as a cluster member: `cluster join|ls|leave` (membership) and the per-host agent
(agent, `python -m runtime.clusterhost.agent`) that keeps the membership lease alive, watches the
store and programs the kernel (VXLAN FDB and ARP entries, the VTEP firewall guard) through the
overlay driver. May import runtime.cluster (the store), networks (the overlay driver, the
firewall), kernel, state, paths, errors, daemon; nothing imports it but runtime.api."""
