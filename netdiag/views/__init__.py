"""Pictures of a snapshot, pure: the network view of `inspect` (inspect_view) and the topology map
(topo: graph, terminal tree, DOT, SVG, HTML). May import netdiag.snapshot_model, runtime.errors and rich."""
