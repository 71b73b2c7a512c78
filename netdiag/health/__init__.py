"""Health checks done the way a load balancer does them, and the reason when they fail.

spec.py      what to check (TARGET, --tcp/--http, --expect ...), validated before anything is sent
resolve.py   a name resolved the way the source namespace resolves it (its hosts file, its resolv.conf)
lb_probe.py  one probe (LbProbe) from inside the source namespace, with timings (dns, connect, first
             byte, total)
classify.py  pure: a probe's outcome (+ the trace pipeline's Diagnosis) -> cause, and the verdict in
             HAProxy's, AWS's and Kubernetes' words
pipeline.py  the whole `netdiag health` (run_health): resolve, probe (N times), diagnose what failed,
             the result (which embeds the netdiag.reason.result.Diagnosis unchanged)
explain.py   `netdiag explain CONTAINER` and `netdiag explain --lb haproxy[:SOCKET]` (HAProxy read by
             netdiag.observe.haproxy)
docker_healthcheck.py  pure: is a container's Docker HEALTHCHECK a network check, and which one
fix_proofs.py  a fix proved on the model before it is run (loss rule removed, DNS names);
               running it (`--fix`) is netdiag.fix_runner

Renamed (issue 19: "health" meant three things): check.py -> lb_probe.py (Check -> LbProbe),
run.py -> pipeline.py (health() -> run_health()), healthcmd.py -> docker_healthcheck.py
(NetCheck -> NetworkHealthcheck).
"""
