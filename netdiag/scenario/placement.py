"""Pure: where a scenario's things run, checked when the file is read. A one-host world uses none
of the cluster keys; a cluster world's `host:` and `in:` placements name its hosts and containers."""
from __future__ import annotations


def host_names(spec: dict) -> list[str]:
    return list(((spec.get("world") or {}).get("cluster") or {}).get("hosts") or [])


def world_names(spec: dict) -> set[str]:
    """The containers a world has: its `containers`, its pods and those a step starts with `--name`."""
    world = spec.get("world") or {}
    names = {c["name"] for c in world.get("containers", []) + world.get("pods", [])} | {lb["name"] for lb in world.get("haproxy", [])}
    for step in steps_of(spec):
        if "--name" in step["run"][:-1]:
            names.add(step["run"][step["run"].index("--name") + 1])
    return names


def steps_of(spec: dict) -> list[dict]:
    return list(spec.get("faults", [])) + list((spec.get("solution") or {}).get("steps", []))


def _step_paths(spec: dict):
    for i, step in enumerate(spec.get("faults", [])):
        yield ("faults", i), step
    for i, step in enumerate((spec.get("solution") or {}).get("steps", [])):
        yield ("solution", "steps", i), step


def check(spec: dict, doc) -> None:
    """What the schema cannot say about where things run: a cluster world's host, container and
    step placements name its hosts and containers; a one-host world uses none of the cluster keys.
    Raises the file's error (line and field)."""
    world = spec["world"]
    hosts = host_names(spec)
    if "cluster" not in world:
        found = [(("world", "containers", i, "host"), "host") for i, c in enumerate(world.get("containers", [])) if "host" in c]
        found += [(("world", "networks", i, "host"), "host") for i, n in enumerate(world.get("networks", [])) if "host" in n]
        found += [(("world", "networks", i, "driver"), "driver: overlay") for i, n in enumerate(world.get("networks", []))
                  if n.get("driver") == "overlay"]
        found += [(path + ("host",), "host") for path, step in _step_paths(spec) if "host" in step]
        found += [(("diagnosis", "host"), "host")] if "host" in spec["diagnosis"] else []
        found += [(("grade_host",), "grade_host")] if "grade_host" in spec else []
        if found:
            where, key = found[0]
            raise doc.error(where, f"{key} needs a world of several hosts", "add world.cluster: {hosts: [h1, h2]}, or remove it")
        return
    for key in ("haproxy", "outside", "docker", "registry"):
        if key in world:
            raise doc.error(("world", key), f"a cluster world has no {key} (yet)", "use a one-host world for it")
    containers = world_names(spec)
    for i, c in enumerate(world.get("containers", [])):
        if c["name"] in hosts:
            raise doc.error(("world", "containers", i, "name"), f"{c['name']} is a host's name", "name containers and hosts apart")
    placed = [(("world", "containers", i, "host"), c.get("host")) for i, c in enumerate(world.get("containers", []))]
    placed += [(("world", "networks", i, "host"), n.get("host")) for i, n in enumerate(world.get("networks", []))]
    placed += [(path + ("host",), step.get("host")) for path, step in _step_paths(spec)]
    placed += [(("diagnosis", "host"), spec["diagnosis"].get("host")), (("grade_host",), spec.get("grade_host"))]
    for where, name in placed:
        if name is not None and name not in hosts:
            raise doc.error(where, f"no host {name!r}", f"the hosts: {', '.join(hosts)}")
    for path, step in _step_paths(spec):
        if step.get("in") is not None and step["in"] not in set(hosts) | containers:
            raise doc.error(path + ("in",), f"no host or container {step['in']!r}",
                            f"a host ({', '.join(hosts)}) or a container ({', '.join(sorted(containers)) or 'none'})")
