"""netdiag: network diagnostics for containers, and the runtime that runs them.

Layers (each imports only the ones below it; tests/unit/test_import_graph.py checks it):
  cli        parse arguments, print (rich, JSON); no logic of its own
  diagnose   the one pipeline: static trace -> live probe -> reconcile -> fix check
  pull_diagnosis  a failed pull, push or login explained (the registry's error; TCP failures traced)
  observe    read the kernel (through runtime.kernel) into a snapshot; probe: send and watch a packet
  reason     pure reasoning over a snapshot: routing, nftables, the static trace, causes, fixes
  views      pure pictures of a snapshot: inspect, topology (tree, DOT, SVG, HTML)
  model      the snapshot as an object (loaded or lazily live); schemas: the documents' versions
The runtime (package `runtime`) never imports netdiag.
"""
__version__ = "0.1.0"
