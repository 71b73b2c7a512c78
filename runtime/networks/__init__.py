"""Networks: records (model), addresses (ipam), published ports (ports), the bridge driver (bridge),
netdiag's nftables firewall (firewall) and its enforcement with other managers' firewalls
(enforce, foreign), and the embedded DNS resolver (dns). May import runtime.kernel, state, paths,
errors; never containers (containers attach to networks, not the other way round)."""
