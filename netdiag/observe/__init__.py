"""Observation: the kernel's real network state, read-only, into one snapshot document: namespace
discovery (discover), one namespace's state (collect, through runtime.kernel), the lazily read
namespace set (namespaces), the snapshot envelope (snapshot), a Docker engine's API (docker_api),
and iptables-nft-save where iptables-nft rules hide their arguments (iptables).
May import runtime.kernel, runtime.records, netdiag.model and netdiag.schemas; never reason or views."""
