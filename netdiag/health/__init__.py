"""Health checks done the way a load balancer does them, and the reason when they fail.

spec.py      what to check (TARGET, --tcp/--http, --expect ...), validated before anything is sent
resolve.py   a name resolved the way the source namespace resolves it (its hosts file, its resolv.conf)
check.py     one check from inside the source namespace, with timings (dns, connect, first byte, total)
classify.py  pure: a check's outcome (+ the trace pipeline's diagnosis) -> cause, and the verdict in
             HAProxy's, AWS's and Kubernetes' words
run.py       the whole `netdiag health`: resolve, check (N times), diagnose what failed, the JSON
explain.py   `netdiag explain CONTAINER` and `netdiag explain --lb haproxy[:SOCKET]` (HAProxy read by
             netdiag.observe.haproxy)
fix_proofs.py  a fix proved on the model before it is run (loss rule removed, DNS names);
               running it (`--fix`) is netdiag.fix_runner
"""
