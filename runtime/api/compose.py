"""Compose actions (`compose up|down|ps|logs`), Docker Compose's way: a project's networks,
volumes and containers carry the labels Docker Compose sets (com.docker.compose.project, .service,
.container-number, .network, .volume, .config-hash), and everything after loading is found by
them, so `down` and `ps` work on what exists, not on what the file says now.

`up` validates the whole file before anything exists, then makes what is missing in order
(networks, volumes, images, containers in dependency order, each waiting for its dependencies'
conditions). A failure or Ctrl-C during `up` removes what that `up` made (containers, networks,
volumes), leaving what was there before; a container `up` recreated because its service changed
is not brought back.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ContainerError, InvalidArgument, NetdiagError, NotFound
from . import require_root

PROJECT, SERVICE, NUMBER = "com.docker.compose.project", "com.docker.compose.service", "com.docker.compose.container-number"
NETWORK, VOLUME, HASH = "com.docker.compose.network", "com.docker.compose.volume", "com.docker.compose.config-hash"
FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")  # Docker Compose's search order


def find_file(given: str | None) -> Path:
    """The compose file: the one given, else the first of Docker Compose's names in the current directory."""
    if given:
        return Path(given)
    for name in FILES:
        if Path(name).exists():
            return Path(name)
    raise InvalidArgument("No compose file found", f"none of {', '.join(FILES)} is in {os.getcwd()}",
                          "give one with -f FILE, or run in the directory that holds it")


def load(file: str | None, project: str | None = None, profiles: list[str] = ()):
    """The project of a compose file (runtime.compose.model.Project) with the services of the
    active profiles, validated; nothing is changed."""
    from ..compose import document, model

    return model.project(document.load(find_file(file)), project, profiles)


def project_name(file: str | None, project: str | None) -> str:
    """-p as given, else the file's project (its `name:` or directory), as Docker Compose finds it."""
    from ..compose import model

    return model.project_name(project) if project else load(file, profiles=["*"]).name  # whatever the profiles


def up(project, *, build: bool = False, report: Callable[[str], None] = lambda _: None) -> list[str]:
    """Make and start the project; the names of its containers. See the module's docstring."""
    require_root("start a compose project")
    made: list[tuple[str, str]] = []  # (kind, name) in the order made, undone in reverse
    try:
        for net in project.networks.values():
            _network(project, net, made, report)
        for vol in project.volumes.values():
            _volume(project, vol, made, report)
        for name in project.order():
            _image(project, project.services[name], build, report)
        names = []
        for name in project.order():
            for dep, condition in project.services[name].depends_on.items():
                _wait(project, dep, condition, report)
            names.append(_container(project, project.services[name], made, report))
        return names
    except BaseException:
        _undo(made, report)
        raise


def _network(project, net, made: list, report) -> None:
    from ..networks import network_records
    from . import networks

    existing = network_records.find(net.name)
    if existing is not None:
        if not net.external and (existing.get("Labels") or {}).get(PROJECT) != project.name:
            from . import note

            note(f"network {net.name} exists and was not made by compose project {project.name}: it is used as it is")
        return
    if net.external:
        raise NotFound(f"Network {net.name} declared as external, but could not be found", "",
                       f"create it with 'netdiag network create {net.name}' first")
    networks.create(networks.NetworkSpec(net.name, net.driver, net.subnet, net.gateway, internal=net.internal,
                                         options=net.options, labels={PROJECT: project.name, NETWORK: net.key}))
    made.append(("network", net.name))
    report(f"Network {net.name} Created")


def _volume(project, vol, made: list, report) -> None:
    from ..containers import volumes

    try:
        volumes.get(vol.name)
        return
    except NotFound:
        if vol.external:
            raise NotFound(f"Volume {vol.name} declared as external, but could not be found", "",
                           "create it first (a container run with -v NAME:/path makes one)") from None
    if volumes.ensure(volumes.named(vol.name), {PROJECT: project.name, VOLUME: vol.key}):
        made.append(("volume", vol.name))
        report(f"Volume {vol.name} Created")


def _image(project, service, build: bool, report) -> None:
    from ..images import store
    from . import images

    if service.build is None or (not build and _has_image(store, service.image)):
        return
    report(f"Image {service.image} Building")
    images.build(service.build["context"], dockerfile=service.build["dockerfile"], tags=[service.image],
                 build_args=service.build["args"], quiet=True)
    report(f"Image {service.image} Built")


def _has_image(store, ref: str) -> bool:
    try:
        store.get(ref)
        return True
    except NotFound:
        return False


def _container(project, service, made: list, report) -> str:
    from ..containers import container_records, lifecycle
    from ..images import store
    from . import containers

    name = project.container_name(service.name)
    # the service's definition and the image it runs: a rebuilt or re-pulled image recreates it too
    digest = hashlib.sha256(f"{service.config_hash} {store.get(service.image).id}".encode()).hexdigest()
    existing = next((c for c in container_records.list_all() if c.name == name), None)
    if existing is not None:
        labels = (existing.config.get("Config") or {}).get("Labels") or {}
        if labels.get(PROJECT) != project.name:
            raise ContainerError(f"Container name {name} is already in use", "a container outside this project has it",
                                 f"remove or rename it ('netdiag rm -f {name}'), or choose another project name with -p")
        if labels.get(HASH) == digest:
            if not existing.running:
                containers.start(existing.id)
                report(f"Container {name} Started")
            else:
                report(f"Container {name} Running")
            return name
        lifecycle.remove(existing, True)
        report(f"Container {name} Removed (its service or image changed)")
    options = dict(service.options)
    mode = options.pop("network_mode")
    networks = [(project.networks[k].name, [service.name, *a]) for k, a in service.networks.items()]
    (network, aliases), rest = networks[0] if networks else (mode, []), networks[1:]
    c, status = containers.run(
        service.image, service.command or [], name=name, detach=True, entrypoint=service.entrypoint,
        env=service.environment, network=network, aliases=aliases, more_networks=dict(rest),
        publish=service.ports, volumes=service.volumes, restart=service.restart, healthcheck=service.healthcheck,
        **{**options, "labels": {**options["labels"], PROJECT: project.name, SERVICE: service.name,
                                         NUMBER: "1", HASH: digest, "com.docker.compose.oneoff": "False",
                                         "com.docker.compose.project.working_dir": str(project.directory),
                                         "com.docker.compose.project.config_files": str(project.file.resolve())}})
    os.close(status)
    made.append(("container", name))
    report(f"Container {name} Started")
    return name


def _wait(project, service: str, condition: str, report, poll: float = 0.2) -> None:
    """Block until `service`'s container meets a depends_on condition; an error when it never can."""
    from ..containers import container_records

    name = project.container_name(service)
    if condition == "service_started":
        return
    report(f"Container {name} Waiting")
    while True:
        c = container_records.get(name)
        health = (c.state.get("Health") or {}).get("Status")
        if condition == "service_healthy":
            if (((c.config.get("Config") or {}).get("Healthcheck") or {}).get("Test") or ["NONE"])[0] == "NONE":
                raise InvalidArgument(f"{project.file}: service {service} is depended on with condition service_healthy but has no "
                                      "healthcheck", "", f"give {service} a healthcheck:, or use condition: service_started")
            if health == "healthy":
                report(f"Container {name} Healthy")
                return
            if health == "unhealthy" or not c.running:
                raise ContainerError(f"dependency failed to start: container {name} is {health if c.running else c.status}",
                                     _last_check(c), f"see 'netdiag logs {name}' and 'netdiag inspect {name}' (State.Health)")
        else:  # service_completed_successfully
            if not c.running and c.state.get("StartedAt"):
                code = c.state.get("ExitCode", 0)
                if code != 0:
                    raise ContainerError(f"service {service} didn't complete successfully: exit {code}", "",
                                         f"see 'netdiag logs {name}'")
                report(f"Container {name} Exited")
                return
        time.sleep(poll)


def _last_check(c) -> str:
    log = (c.state.get("Health") or {}).get("Log") or []
    if not log:
        return ""
    last = log[-1]
    return f"its last health check exited {last.get('ExitCode')}: {str(last.get('Output', '')).strip()[:200]}"


def _undo(made: list, report) -> None:
    """Remove what a failed `up` made, newest first; each step is tried even if one fails."""
    from ..containers import container_records, lifecycle, volumes
    from . import networks

    for kind, name in reversed(made):
        try:
            if kind == "container":
                lifecycle.remove(container_records.get(name), True)
            elif kind == "network":
                networks.remove(name, force=True)
            else:
                volumes.remove(name)
            report(f"{kind.capitalize()} {name} Removed (rolled back)")
        except NetdiagError as e:
            report(f"{kind.capitalize()} {name} could not be removed: {e}")


def containers_of(project: str) -> list:
    """The project's containers (any state) by their labels, newest first."""
    from ..containers import container_records

    return [c for c in container_records.list_all()
            if ((c.config.get("Config") or {}).get("Labels") or {}).get(PROJECT) == project]


def stop(project: str, *, timeout: float | None = None, report: Callable[[str], None] = lambda _: None) -> list:
    """Stop the project's running containers, all at once, each with its stop_signal, then SIGKILL
    after `timeout` (None: its stop_grace_period, else 10 s); its containers."""
    import threading

    from ..containers import lifecycle

    require_root("stop a compose project")
    found = containers_of(project)
    running = [c for c in found if c.running]
    stoppers = [threading.Thread(target=lifecycle.stop, args=(c, timeout)) for c in running]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    for c in running:
        report(f"Container {c.name} Stopped")
    return found


def down(project: str, *, volumes: bool = False, timeout: float | None = None,
         report: Callable[[str], None] = lambda _: None) -> None:
    """Stop and remove the project's containers (all at once: each may take `timeout` to stop) and
    its networks; with `volumes`, its named volumes too. External networks and volumes stay."""
    from ..containers import lifecycle, volumes as vols
    from ..networks import network_records
    from . import networks

    require_root("remove a compose project")
    found = stop(project, timeout=timeout)
    for c in found:
        lifecycle.remove(c, True)
        report(f"Container {c.name} Removed")
        if volumes:
            for name in vols.remove_anonymous(c):
                report(f"Volume {name} Removed")
    for net in network_records.list_all():
        if (net.get("Labels") or {}).get(PROJECT) == project:
            networks.remove(net["Name"], force=True)
            report(f"Network {net['Name']} Removed")
    if volumes:
        for vol in vols.list_all():
            if (vol.get("Labels") or {}).get(PROJECT) == project:
                vols.remove(vol["Name"])
                report(f"Volume {vol['Name']} Removed")


def ps(project: str, all_: bool = False) -> list[dict]:
    """`compose ps` rows: `ps`'s fields (Docker's) plus Service and Project."""
    from . import containers

    rows = containers.listing(all_=all_, filters=[f"label={PROJECT}={project}"])
    by_id = {c.id[:12]: c for c in containers_of(project)}
    for row in rows:
        labels = (by_id[row["ID"]].config.get("Config") or {}).get("Labels") or {} if row["ID"] in by_id else {}
        row.update(Service=labels.get(SERVICE, ""), Project=project, Name=row["Names"])
    return sorted(rows, key=lambda r: r["Service"])


def logs(project: str, services: list[str] = (), *, follow: bool = False, tail: int | None = None) -> Iterator[tuple[str, dict]]:
    """(container name, log record) of the project's containers (only `services`' when given); with
    follow, as they come, until every one has stopped."""
    import queue
    import threading

    from . import containers

    chosen = [c for c in containers_of(project)
              if not services or ((c.config.get("Config") or {}).get("Labels") or {}).get(SERVICE) in services]
    unknown = set(services) - {((c.config.get("Config") or {}).get("Labels") or {}).get(SERVICE) for c in chosen}
    if unknown:
        raise NotFound(f"No such service: {sorted(unknown)[0]}", f"project {project} has no container for it",
                       "list the services with 'netdiag compose ps -a'")
    chosen.sort(key=lambda c: c.name)
    if not follow:
        merged = [(c.name, r) for c in chosen for r in containers.logs(c.id, tail=tail)]
        yield from sorted(merged, key=lambda item: item[1].get("time", ""))
        return
    lines: queue.Queue = queue.Queue()

    def pump(c) -> None:
        try:
            for record in containers.logs(c.id, follow=True, tail=tail):
                lines.put((c.name, record))
        finally:
            lines.put(None)

    for c in chosen:
        threading.Thread(target=pump, args=(c,), daemon=True).start()
    running = len(chosen)
    while running:
        item = lines.get()
        if item is None:
            running -= 1
        else:
            yield item
