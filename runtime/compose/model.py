"""A validated compose file as a Project: the services, networks and volumes Docker Compose would
make, with Docker Compose's names (project = the directory's name lower-cased, or -p, or `name:`;
networks PROJECT_KEY, volumes PROJECT_KEY, containers PROJECT-SERVICE-1). Everything netdiag cannot
do is refused here, naming the file and line, before anything exists. Pure."""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import validate
from ..errors import InvalidArgument
from . import extras
from .document import Document

CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
# what netdiag runs of a service; any other key is refused rather than silently ignored
SERVICE_KEYS = {"image", "build", "command", "entrypoint", "environment", "ports", "expose", "networks", "depends_on",
                "healthcheck", "volumes", "restart", "container_name", "hostname", "working_dir", "user", "labels",
                "cap_add", "cap_drop", "privileged", "dns", "mem_limit", "cpus", "pids_limit", "network_mode"} | extras.KEYS
NETWORK_KEYS = {"name", "external", "driver", "internal", "ipam", "labels", "driver_opts"}
VOLUME_KEYS = {"name", "external", "labels", "driver"}


@dataclass(frozen=True)
class Network:
    key: str       # the name in the file
    name: str      # the network's real name (PROJECT_KEY unless `name:` or external)
    external: bool = False
    driver: str = "bridge"
    internal: bool = False
    subnet: str = ""
    gateway: str = ""
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    key: str
    name: str
    external: bool = False


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    build: dict | None              # {"context": absolute dir, "dockerfile": name or None, "args": {}}
    command: list[str] | None
    entrypoint: str | None
    environment: list[str]
    ports: list[str]
    networks: dict[str, list[str]]  # network key -> aliases (the service's name is added on up); {} with network_mode
    depends_on: dict[str, str]      # service -> condition
    healthcheck: dict | None        # Docker's Config.Healthcheck
    volumes: list[str]              # -v specs, sources resolved
    restart: str
    container_name: str
    options: dict                   # the rest, as containers.run keywords

    @property
    def config_hash(self) -> str:
        """What Compose's com.docker.compose.config-hash label is for: a changed service is recreated."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Project:
    name: str
    directory: Path
    file: Path
    services: dict[str, Service]
    networks: dict[str, Network]
    volumes: dict[str, Volume]

    def container_name(self, service: str) -> str:
        return self.services[service].container_name or f"{self.name}-{service}-1"

    def order(self) -> list[str]:
        """Services in start order: each after what it depends on (those in a cycle are left out)."""
        done: list[str] = []
        todo = list(self.services)
        while todo:
            ready = [s for s in todo if all(d in done for d in self.services[s].depends_on)]
            if not ready:
                break
            done += ready
            todo = [s for s in todo if s not in ready]
        return done


def project_name(text: str) -> str:
    """Docker Compose's normalisation: lower-cased, only a-z 0-9 _ -, starting with a letter or digit."""
    name = re.sub(r"[^a-z0-9_-]", "", text.lower()).lstrip("_-")
    if not name:
        raise InvalidArgument(f"Invalid project name {text!r}", "a project name needs a letter or digit",
                              "give one with -p NAME or `name:` in the compose file")
    return name


def project(doc: Document, name: str | None = None, profiles: list[str] = ()) -> Project:
    """The file's project; services with profiles: only when one of theirs is active (given, or in
    COMPOSE_PROFILES), as Docker Compose's --profile; services without profiles always."""
    data = doc.data
    directory = doc.path.resolve().parent
    pname = project_name(name or data.get("name") or directory.name)
    for key in sorted(set(data) - {"name", "version", "services", "networks", "volumes"}):
        if not key.startswith("x-"):
            raise doc.error((key,), f"netdiag's compose does not support top-level {key}:", "remove it")
    nets = {k: _network(doc, pname, k, v or {}) for k, v in (data.get("networks") or {}).items()}
    vols = {k: _volume(doc, pname, k, v or {}) for k, v in (data.get("volumes") or {}).items()}
    active = set(profiles) | {p for p in str(doc.environ.get("COMPOSE_PROFILES") or "").split(",") if p}
    declared = data.get("services") or {}
    chosen = {k: v or {} for k, v in declared.items() if not (v or {}).get("profiles") or "*" in active
              or active & {str(p) for p in v["profiles"]}}
    services = {k: _service(doc, pname, directory, k, v, nets, vols) for k, v in chosen.items()}
    if not services:
        raise doc.error(("services",), "no services" if not declared else "no service without a profile, and no profile active",
                        "define at least one service" if not declared else "activate one with compose --profile NAME")
    if any("default" in s.networks for s in services.values()) and "default" not in nets:
        nets["default"] = Network("default", f"{pname}_default")
    for s in services.values():
        for dep in s.depends_on:
            if dep in declared and dep not in services:
                wanted = ", ".join(str(p) for p in declared[dep]["profiles"])
                raise doc.error(("services", s.name, "depends_on"), f"depends on service {dep!r}, which is only in profile {wanted}",
                                f"activate it: compose --profile {wanted.split(', ')[0]} up")
            if dep not in services:
                raise doc.error(("services", s.name, "depends_on"), f"depends on undefined service {dep!r}",
                                f"define {dep} or remove it; the services are {', '.join(services)}")
    p = Project(pname, directory, doc.path, services, nets, vols)
    if len(p.order()) < len(services):
        stuck = [s for s in services if s not in p.order()]
        raise doc.error(("services", stuck[0], "depends_on"), f"a dependency cycle between {', '.join(stuck)}",
                        "break the cycle: a service cannot wait for one that waits for it")
    return p


def _refuse_unknown(doc: Document, where: tuple, value: dict, known: set) -> None:
    for key in value:
        if key not in known and not str(key).startswith("x-"):
            raise doc.error(where + (key,), f"netdiag's compose does not support {key}:",
                            f"remove it; supported here: {', '.join(sorted(known))}")


def _network(doc: Document, pname: str, key: str, v: dict) -> Network:
    where = ("networks", key)
    _refuse_unknown(doc, where, v, NETWORK_KEYS)
    if v.get("external"):
        return Network(key, v.get("name") or key, external=True)
    configs = (v.get("ipam") or {}).get("config") or [{}]
    if len(configs) > 1 or set(configs[0]) - {"subnet", "gateway"}:
        raise doc.error(where + ("ipam",), "only one ipam config with subnet and gateway is supported", "keep one subnet")
    if v.get("driver", "bridge") not in ("bridge", "overlay"):
        raise doc.error(where + ("driver",), f"unknown network driver {v['driver']!r}", "use bridge (or overlay on a cluster member)")
    return Network(key, v.get("name") or f"{pname}_{key}", False, v.get("driver", "bridge"), bool(v.get("internal")),
                   configs[0].get("subnet", ""), configs[0].get("gateway", ""), {str(k): str(o) for k, o in (v.get("driver_opts") or {}).items()})


def _volume(doc: Document, pname: str, key: str, v: dict) -> Volume:
    _refuse_unknown(doc, ("volumes", key), v, VOLUME_KEYS)
    if v.get("driver", "local") != "local":
        raise doc.error(("volumes", key, "driver"), "only the local volume driver exists here", "remove driver:")
    return Volume(key, v.get("name") or (key if v.get("external") else f"{pname}_{key}"), bool(v.get("external")))


def _checked(doc: Document, where: tuple, check, value):
    """check(value), an InvalidArgument of it reported at the value's line."""
    try:
        return check(value)
    except InvalidArgument as e:
        raise doc.error(where, e.what.rstrip("."), e.fix) from None


def _service(doc: Document, pname: str, directory: Path, name: str, v: dict, nets: dict, vols: dict) -> Service:
    from ..containers import volumes as volume_specs
    from ..networks import ports as port_specs

    where = ("services", name)
    _refuse_unknown(doc, where, v, SERVICE_KEYS)
    build = v.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if build is not None:
        _refuse_unknown(doc, where + ("build",), build, {"context", "dockerfile", "args"})
        args = build.get("args") or {}
        if isinstance(args, list):
            args = dict(a.partition("=")[::2] for a in args)
        build = {"context": str((directory / build.get("context", ".")).resolve()), "dockerfile": build.get("dockerfile"),
                 "args": {k: "" if a is None else str(a) for k, a in args.items()}}
    if not v.get("image") and build is None:
        raise doc.error(where, "neither image nor build", "give the service an image: or a build:")
    mode = v.get("network_mode")
    if mode is not None and (mode not in ("host", "none") or v.get("networks")):
        raise doc.error(where + ("network_mode",), f"network_mode {mode!r} is not supported here" if mode not in ("host", "none")
                        else "network_mode and networks exclude each other", "use host or none without networks:, or networks:")
    networks = {} if mode else v.get("networks") or {"default": None}
    if isinstance(networks, list):
        networks = {n: None for n in networks}
    for net in networks:
        if net not in nets and net != "default":
            raise doc.error(where + ("networks", net), f"undefined network {net!r}", "declare it in the top-level networks section")
    ports = [_port(doc, where + ("ports", i), p) for i, p in enumerate(v.get("ports") or [])]
    for i, p in enumerate(ports):
        _checked(doc, where + ("ports", i), port_specs.parse, p)
    mounts = [_mount(doc, where + ("volumes", i), m, directory, vols) for i, m in enumerate(v.get("volumes") or [])]
    for i, m in enumerate(mounts):
        _checked(doc, where + ("volumes", i), volume_specs.parse, m)
    deps = v.get("depends_on") or {}
    deps = {d: "service_started" for d in deps} if isinstance(deps, list) else {d: (c or {}).get("condition", "service_started") for d, c in deps.items()}
    restart = str(v.get("restart", "no"))
    if restart not in ("no", "always", "unless-stopped") and not re.fullmatch(r"on-failure(:\d+)?", restart):
        raise doc.error(where + ("restart",), f"invalid restart policy {restart!r}", "use no, always, unless-stopped or on-failure[:N]")
    options = {"hostname": v.get("hostname"), "workdir": v.get("working_dir"), "user": v.get("user"),
               "cap_add": list(v.get("cap_add") or []), "cap_drop": list(v.get("cap_drop") or []),
               "privileged": bool(v.get("privileged")), "dns": _list(v.get("dns")), "labels": _mapping(v.get("labels")),
               "network_mode": mode, **extras.options(doc, where, v)}
    # Compose's order: env_file first, environment: over it
    from_files = extras.env_files(doc, where + ("env_file",), v.get("env_file"), directory, doc.environ)
    entrypoint, command = _entry_and_command(v.get("entrypoint"), v.get("command"))
    return Service(
        name=name, image=str(v.get("image") or f"{pname}-{name}"), build=build,
        command=command, entrypoint=entrypoint,
        environment=from_files + [f"{k}={e}" if e is not None else k for k, e in _mapping(v.get("environment"), keep_none=True).items()],
        ports=ports,
        networks={n: list((a or {}).get("aliases") or []) for n, a in networks.items()},
        depends_on=deps, healthcheck=_healthcheck(doc, where + ("healthcheck",), v.get("healthcheck")),
        volumes=mounts, restart=restart, container_name=str(v.get("container_name") or ""), options=options)


def _list(value) -> list[str]:
    return [value] if isinstance(value, str) else [str(x) for x in value or []]


def _mapping(value, keep_none: bool = False) -> dict:
    """Compose's list_or_dict: ["K=V", "K"] or {K: V}."""
    if isinstance(value, list):
        pairs = [item.partition("=") for item in value]
        return {k: (v if eq else None) for k, eq, v in pairs if keep_none or eq}
    return {str(k): (None if v is None else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in (value or {}).items() if keep_none or v is not None}


def _words(value) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(x) for x in value]


def _entry_and_command(entrypoint, command) -> tuple[str | None, list[str] | None]:
    """The container's program and its arguments: an entrypoint of several words runs its first
    with the rest before the command, the argv Docker runs (an overridden entrypoint drops the
    image's CMD, so the command is then only what the file gives)."""
    words, cmd = _words(entrypoint), _words(command)
    if words is None:
        return None, cmd
    if not words:
        return "", cmd
    return words[0], words[1:] + (cmd or [])


def _port(doc: Document, where: tuple, p) -> str:
    if not isinstance(p, dict):
        return str(p)
    if "target" not in p or p.get("mode", "ingress") not in ("ingress", "host"):
        raise doc.error(where, "a port needs target: (the container's port)", "write e.g. {target: 80, published: 8080}")
    host = ":".join(str(x) for x in (p.get("host_ip"), p.get("published")) if x not in (None, ""))
    return f"{host + ':' if host else ''}{p['target']}/{p.get('protocol', 'tcp')}"


def _mount(doc: Document, where: tuple, m, directory: Path, vols: dict) -> str:
    """A service volume as a -v spec: relative bind sources resolved against the project directory,
    named volumes by their real name."""
    if isinstance(m, dict):
        kind = m.get("type")
        if kind not in ("bind", "volume"):
            raise doc.error(where + ("type",), f"volume type {kind!r} is not supported here", "use type: bind or type: volume")
        source, target, ro = m.get("source") or "", m.get("target") or "", bool(m.get("read_only"))
    else:
        parts = str(m).split(":")
        ro = len(parts) == 3 and parts[2] == "ro"
        if len(parts) == 3 and parts[2] not in ("ro", "rw"):
            raise doc.error(where, f"volume mode {parts[2]!r} is not supported here", "use :ro or :rw")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
    if kind == "bind":
        source = str((directory / Path(source).expanduser()).resolve()) if source else ""
        if not source:
            raise doc.error(where, "a bind mount needs a source", "give the host path")
    elif source:
        if source not in vols:
            raise doc.error(where, f"undefined volume {source!r}", "declare it in the top-level volumes section")
        source = vols[source].name
    return ":".join([source, target] if source else [target]) + (":ro" if ro else "")


def _healthcheck(doc: Document, where: tuple, h) -> dict | None:
    """Docker's Config.Healthcheck from Compose's healthcheck: (durations in nanoseconds)."""
    if not h:
        return None
    if h.get("disable"):
        return {"Test": ["NONE"]}
    test = h.get("test")
    if test is None:
        return None  # the image's own HEALTHCHECK, with Compose's timings ignored
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        raise doc.error(where + ("test",), "a test starts with CMD, CMD-SHELL or NONE", 'write e.g. ["CMD", "wget", "-qO-", "localhost"]')
    ns = 1_000_000_000
    out = {"Test": list(test), "Retries": int(h.get("retries", 3))}
    for key, docker in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
        if h.get(key) is not None:
            out[docker] = int(_checked(doc, where + (key,), lambda t: validate.duration(t, key), h[key]) * ns)
    return out
