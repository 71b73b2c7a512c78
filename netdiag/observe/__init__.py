"""Observation: the kernel's real network state, read-only, into one snapshot document: namespace
discovery (discover), one namespace's state (collect, through runtime.kernel), the lazily read
namespace set (namespaces), the snapshot envelope (snapshot), a Docker engine's API (docker_api),
the pods a kubelet's runtime wired, from the CNI result cache (cni_pods),
iptables-nft-save where iptables-nft rules hide their arguments (iptables), and a real HAProxy's
stats socket and configuration (haproxy: for explain --lb, check and the scenarios).
May import runtime.kernel, runtime.records, netdiag.snapshot_model and netdiag.schemas; never reason or views."""
