"""Fault injection: seeded random worlds with one planted fault each, to prove diagnoses and fixes
on cases nobody wrote by hand.

- `world.py`: FaultWorld, what every fault world shares on netdiag.worlds' interface (a host lab,
  a Docker lab underneath; create, run in, destroy, leaks), and a world generator: a lab host plus
  plain namespaces wired at random
  (routed through the host, through a second router, or bridged on a plain Linux bridge), with
  random subnets, interface names and ports, a real server and a control server.
- `containers.py`: worlds of netdiag's own containers; `docker.py`: worlds of a real Docker engine
  (a private dockerd in the lab), with the faults a Docker user makes (icc, isolation, none,
  published ports, Docker's FORWARD policy over a plain bridge).
- `catalogue.py`: the fault kinds. Each plants one fault in a world with ip/nft/iptables/sysctl and
  says what a correct diagnosis names: the top-level cause and the hop (namespace) where the flow
  dies, and whether a command can exist for it.
- `case.py`: one case end to end: build, plant, `netdiag trace --json`, compare the top-level cause
  and hop, apply `fix_command` as printed, then prove with real connections (not netdiag) that the
  flow works and that a control flow (the server's other port) that worked with the fault in place
  still works: a fix opens what the flow needs and breaks nothing; always tear down.

`python -m netdiag.faults --seed S --cases N` runs cases and prints the confusion table
(tests/faults runs a fixed set in CI; bench/bench_faults.py reports accuracy over many)."""
