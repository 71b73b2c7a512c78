"""Live evidence for one packet: the probe sent from the source namespace (sender), captures at every
hop (capture), the kernel's drop reasons and its nftables packet trace (tracers, nftrace), forked
helper children (children), nftables counters (counters), the evidence as a pcap (pcap), and a
burst of TCP handshakes measuring loss (handshakes, for health and the fix proofs);
live.probe() orchestrates them and never raises for a live failure.
May import runtime.kernel and netdiag.reason.nftables (rule text); nothing above."""
