"""Training scenarios: broken networks a learner starts, diagnoses, fixes and gets graded on.

A scenario is data (scenarios/NN_slug/scenario.yaml + README.md, schema in
netdiag/schemas/scenario.schema.json): the world, built with netdiag's own runtime inside a lab
namespace with its own state, so it never touches the real host's network; the faults planted in
real kernel objects; what netdiag must diagnose; the grader's checks in `netdiag check`'s format;
hints and the reference solution. library.py finds and validates scenarios (placement.py: where
things run), session.py builds, grades and tears down a one-host world, cluster.py a world of
several hosts with a real etcd (world.py: their one start skeleton, diagnosis and grader on
netdiag.worlds' interface; common.py: steps and commands both share), registry.py remembers which are
running (and which replays), verdict.py grades a diagnosis (a trace's, a health check's, a pull's);
image_registry.py gives a one-host world its image registry (`world.registry`), pods.py its
Kubernetes node's CNI pods (`world.cni`, `world.pods`). replay.py (planned by replay_plan.py, pure) goes the
other way: a real host's snapshot rebuilt as namespaces, with stand-in servers (standin.py).
May import netdiag.worlds, netdiag.yamlfile, netdiag.schemas, runtime.state/paths/errors, and
runtime.kernel (replay only).
"""
