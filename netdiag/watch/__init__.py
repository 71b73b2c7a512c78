"""`netdiag watch`: failing connections and dropped packets as they happen, each failing flow
diagnosed once in the background. events (the kernel's tracepoints, read in a private tracefs
instance by a forked child), unreplied (UDP and ICMP flows without a reply, from conntrack's
events), scope (which namespaces are watched, and who owns an address),
flows (repeats grouped into one line, pure), diagnoser (the existing pipeline, in a thread;
http_diagnosis: health's, for a flow failing past the handshake on a port that speaks HTTP),
view (plain lines, JSON lines, a live table), session (the loop that ties them together).

May import: netdiag.diagnose, netdiag.health, netdiag.observe, netdiag.probe, netdiag.reason, netdiag.schemas,
netdiag.snapshot_model."""
