"""The embedded DNS resolver of a user-defined network (like Docker's 127.0.0.11).

One process per network, listening on the network's gateway IP, UDP and TCP, in the host's
network namespace. It answers A (and AAAA, PTR) for the container names and aliases listed in a
JSON records file, forwards other names upstream unless the network is internal, and exits when
the records file disappears (so it dies with its network even if the CLI was killed) or on SIGTERM.

Records file (rewritten by the runtime; re-read when it changes):
    {"network": "<id>", "internal": false, "upstream": ["203.0.113.1", "127.0.0.2:5353"],
     "records": {"web1": ["172.18.0.2"], "alias": ["172.18.0.2", "172.18.0.3"]}}
An upstream is "IP" (port 53), "IPv4:port" or "[IPv6]:port".

    python -m runtime.networks.dns --listen IP --port 53 --records FILE [--ready-fd N]
writes "ok PORT\\n" to the ready fd once bound (PORT is the bound port, useful with --port 0),
or "error: ...\\n" and exits 1. The runtime uses start()/spawn() and stop().

Overlay networks: one such process per host without --listen, whose records file lists
"sandboxes" ({"<container id>": {"netns": "/proc/PID/ns/net", "inode": N, "names": {...}}}); it
binds 127.0.0.11:53 inside each of those namespaces (Docker's address) and answers each with its
own names (records.py: update_overlays).

Stdlib only, single-threaded (selectors); imports kept light because it starts per network (the
overlays' resolver also imports runtime.kernel.ns, to enter a sandbox's namespace).

Layout: codec.py (DNS messages), config.py (the records file as the server reads it), server.py
(the process), control.py (spawn, start, stop), records.py (the runtime writes each network's
records file, and the overlays' one). The server imports only codec and config (and kernel.ns).
"""
from .control import reap, spawn, start, stop  # noqa: F401

# codec's and config's names are loaded on first use (PEP 562): every container started on a
# bridge imports this package for its records, and codec's and config's dataclasses would cost
# that `run` ~7 ms (dataclasses imports inspect)
_LAZY = {**dict.fromkeys(("CLASS_IN", "TTL", "UDP_MAX", "MalformedPacket", "Query", "parse_query", "build_query",
                          "build_response", "Response", "parse_response", "A", "NS", "CNAME", "PTR", "AAAA", "ANY",
                          "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"), "codec"),
         **dict.fromkeys(("Config", "load_config", "parse_upstream"), "config")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
