"""Networks: records (network_records), published ports (ports), the bridge, overlay and CNI drivers
behind one protocol (drivers, bridge, overlay, cni/), netdiag's nftables firewall (firewall) and its
enforcement with other managers' firewalls (enforce, foreign), and the embedded DNS resolver (dns).
May import runtime.kernel, state, paths, errors, ipam, and runtime.cluster (the overlay driver keeps
its networks in the cluster store); never containers (containers attach to networks, not the other
way round) nor clusterhost (the agent drives the overlay driver)."""
