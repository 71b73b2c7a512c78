"""Reasoning, pure: routing (routing), nftables evaluation (nftables), the static trace
(static_trace: the walk, NAT and the reply leg; its parts trace_routes, trace_links (ARP, link,
MTU, bridges), trace_vxlan and trace_delivery (the receiving socket)), what a dropping rule means
(attribute; the CNI plugins' own rules: cni_plugins), colliding host ports (hostports), the cause catalogue (causes), checkable fixes (fixes), static vs live evidence
(reconcile), and the one result type of a diagnosis (result: Diagnosis, Hop, Evidence, Reply,
FixClaim, serialised by Diagnosis.to_json()). Firewall rulesets are read by netdiag.rulesets, below this package.
May import netdiag.snapshot_model, netdiag.rulesets, runtime.errors and the standard library; nothing that
touches the kernel."""
