"""Container lifecycle: create, start, stop, kill, remove, prune. Validation happens before any
side effect, and a failed `run` removes what it made."""
from __future__ import annotations

import errno
import os
import select
import signal
from pathlib import Path

from .. import state, validate
from ..errors import Conflict, ContainerError, InvalidArgument, NetdiagError
from ..images import store as images
from . import cgroups, container_records, monitor
from .cleanup import remove_stopped  # noqa: F401 - part of this module's API (run, build)

NETWORK_MODES = ("none", "host")


def build_config(image: images.Image, image_ref: str, cmd: list[str], *, entrypoint: str | None = None,
                 env: list[str] = (), workdir: str | None = None, hostname: str | None = None,
                 user: str | None = None, network: str = "bridge", memory: str | None = None,
                 cpus: str | None = None, pids_limit: int | None = None, auto_remove: bool = False,
                 publish: list[str] = (), publish_all: bool = False, ip: str | None = None,
                 aliases: list[str] = (), dns: list[str] = (), health_cmd: str | None = None,
                 health_interval: float = 30, health_timeout: float = 30, health_retries: int = 3,
                 labels: dict | None = None, cap_add: list[str] = (), cap_drop: list[str] = (),
                 privileged: bool = False, security_opt: list[str] = (), volumes: list[str] = (),
                 restart: str = "no", healthcheck: dict | None = None, tty: bool = False, open_stdin: bool = False,
                 extra_hosts: list[str] = (), expose: list[str] = (), stop_signal: str | None = None,
                 stop_timeout: int | None = None, read_only: bool = False, tmpfs: list[str] = (),
                 sysctls: dict | None = None, init: bool = False, ulimits: list[dict] = ()) -> dict:
    """The container's config (Docker's field names), from the image and the run options."""
    from .. import ipam
    from ..networks import network_records as nets, ports
    from . import security, volumes as vols

    confinement = security.host_config(cap_add, cap_drop, privileged, security_opt)  # exit 2 before anything exists
    policy = restart_policy(restart)
    if auto_remove and policy["Name"]:
        raise InvalidArgument("Conflicting options: --restart and --rm", "a container removed at its exit cannot be restarted",
                              "drop one of them (like Docker)")
    mounts = [vols.parse(v) for v in volumes]
    for i, m in enumerate(mounts):
        if any(o["Destination"].rstrip("/") == m["Destination"].rstrip("/") for o in mounts[:i]):
            raise InvalidArgument(f"Duplicate mount point: {m['Destination']}", "two volumes are mounted at the same path",
                                  "keep one of them")

    if network.startswith(container_records.SHARED_NETNS):
        owner = container_records.get(network[len(container_records.SHARED_NETNS):])
        used = [flag for flag, given in (("-p", publish or publish_all), ("--ip", ip), ("--network-alias", aliases),
                                         ("--dns", dns), ("--hostname", hostname)) if given]
        if used:  # Docker's "conflicting options": they belong to the namespace's owner
            raise InvalidArgument(f"Conflicting options: {', '.join(used)} and --network {network}",
                                  f"the container shares the network namespace of {owner.name}: its addresses, ports, names "
                                  "and resolver", "drop them")
        network = container_records.SHARED_NETNS + owner.id
    elif network in NETWORK_MODES:
        if publish or publish_all:
            raise InvalidArgument(
                f"Cannot publish ports with --network {network}",
                "none has no interface to publish on, and host shares the host's ports already",
                "drop -p, or use a bridge network",
            )
        if ip or aliases:
            raise InvalidArgument(f"--ip and --network-alias need a bridge network, not {network}", "", "drop them or use --network bridge")
    elif network.startswith("cni:"):
        from ..networks.cni import driver as cni

        if ip or aliases:
            raise InvalidArgument(f"--ip and --network-alias do not apply to {network}",
                                  "a CNI network's IPAM plugin chooses addresses, and it has no embedded DNS", "drop them")
        cni.ensure_record(network[len(cni.PREFIX):])  # the conflist and its plugins checked before anything exists
    elif network != "bridge" and nets.find(network) is None:
        raise InvalidArgument(f"Unknown network {network!r}", "no network has that name",
                              f"create it with 'netdiag network create {network}', or list them with 'netdiag network ls'")
    elif network != "bridge" and nets.get(network)["Driver"] == "overlay" and (publish or publish_all):
        raise InvalidArgument(f"Cannot publish ports on overlay network {network}", "published ports need a bridge network "
                              "(Docker publishes through docker_gwbridge)", f"run on a bridge network and connect {network} too")
    if network == "bridge" and aliases:
        raise InvalidArgument("Network aliases need a user-defined network", "the default bridge has no name resolution (like Docker)",
                              "create a network with 'netdiag network create NAME' and use --network NAME")
    if ip:  # checked now, before anything exists, not when the monitor attaches
        if network == "bridge":
            raise InvalidArgument("--ip needs a user-defined network", "user specified IP addresses are supported on user "
                                  "defined networks only (like Docker); the default bridge hands out addresses in order",
                                  "create a network with 'netdiag network create --subnet ... NAME' and use --network NAME")
        from ipaddress import IPv4Network

        ipam.check_host_address(ipam.parse_ip(ip), IPv4Network(nets.ipam(nets.get(network))["Subnet"]))
    for server in dns:
        ipam.parse_ip(server, "DNS server")
    publish_specs = [ports.parse(p) for p in publish]
    ic = image.run_config
    cfg_env = list(ic.get("Env") or [])
    for item in validate.env_pairs(list(env)):
        if "=" not in item:
            value = os.environ.get(item)
            if value is None:
                continue
            item = f"{item}={value}"
        key = item.split("=", 1)[0]
        cfg_env = [e for e in cfg_env if e.split("=", 1)[0] != key] + [item]
    ep = list(ic.get("Entrypoint") or [])
    if entrypoint is not None:
        ep = [entrypoint] if entrypoint else []
    command = list(cmd) if cmd else ([] if entrypoint is not None else list(ic.get("Cmd") or []))
    if publish_all:
        publish_specs += ports.exposed_to_specs(ic.get("ExposedPorts") or {})
    exposed = dict(ic.get("ExposedPorts") or {})
    for p in publish_specs:
        for port in range(p["ctr_start"], p["ctr_end"] + 1):
            exposed.setdefault(f"{port}/{p['proto']}", {})
    extra_hosts = [validate.extra_host(h) for h in extra_hosts]
    tmpfs = [validate.tmpfs(t) for t in tmpfs]
    sysctls = {validate.sysctl(k, v): str(v) for k, v in (sysctls or {}).items()}
    for e in map(validate.expose, expose):  # metadata only, as Docker's --expose
        lo, _, hi = e.partition("/")[0].partition("-")
        for port in range(int(lo), int(hi or lo) + 1):
            exposed.setdefault(f"{port}/{e.partition('/')[2] or 'tcp'}", {})
    if sysctls and (network in NETWORK_MODES or network.startswith(container_records.SHARED_NETNS)):
        raise InvalidArgument(f"Sysctls need the container's own network namespace, not --network {network}",
                              "net.* sysctls are set in the container's namespace; host or another's would be changed", "drop them")
    if stop_signal is not None:
        signal_number(stop_signal)
    health = healthcheck or ic.get("Healthcheck")  # Docker's form, from Compose
    if health_cmd:
        ns = 1_000_000_000
        health = {"Test": ["CMD-SHELL", health_cmd], "Interval": int(health_interval * ns),
                  "Timeout": int(health_timeout * ns), "Retries": health_retries}
    return {
        "Image": image.id,
        "ImageRef": image_ref,
        "Path": (ep + command)[0] if ep + command else "",
        "Args": (ep + command)[1:],
        "Config": {
            "Hostname": validate.hostname(hostname) if hostname else "",
            "User": user if user is not None else ic.get("User", ""),
            "Env": cfg_env,
            "Cmd": command,
            "Entrypoint": ep,
            "WorkingDir": workdir or ic.get("WorkingDir") or "",
            "ExposedPorts": exposed,
            "Healthcheck": health,
            "Labels": {**(ic.get("Labels") or {}), **(labels or {})},
            "Image": image_ref,
            "Tty": tty,
            "OpenStdin": open_stdin,
            "StopSignal": stop_signal or ic.get("StopSignal") or "",
            **({"StopTimeout": stop_timeout} if stop_timeout is not None else {}),
        },
        "HostConfig": {
            "NetworkMode": network,
            "Memory": validate.memory_bytes(memory) if memory else 0,
            "NanoCpus": validate.nano_cpus(cpus) if cpus else 0,
            "PidsLimit": validate.pids_limit(pids_limit) if pids_limit is not None else 0,
            "AutoRemove": auto_remove,
            "Publish": publish_specs,
            "Dns": list(dns),
            "Binds": list(volumes),
            "RestartPolicy": policy,
            "ExtraHosts": list(extra_hosts),
            "ReadonlyRootfs": read_only,
            "Tmpfs": dict(t.partition(":")[::2] for t in tmpfs),
            "Sysctls": dict(sysctls or {}),
            "Init": init,
            "Ulimits": [validate.ulimit(u["Name"], u["Soft"], u["Hard"]) for u in ulimits],
            **confinement,
        },
        "Mounts": mounts,
        "NetworkSettings": {"Networks": {} if network in NETWORK_MODES or network.startswith(container_records.SHARED_NETNS) else
                            {network: {"IPAMConfig": {"IPv4Address": ip} if ip else None, "Aliases": list(aliases)}}},
    }


def restart_policy(text: str) -> dict:
    """Docker's --restart (no, always, unless-stopped, on-failure[:N]) as HostConfig.RestartPolicy."""
    name, _, count = text.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure") or (count and (name != "on-failure" or not count.isdigit())):
        raise InvalidArgument(f"Invalid restart policy {text!r}", "it is no, always, unless-stopped or on-failure[:MAX-RETRIES]",
                              "use e.g. --restart on-failure:3")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(count or 0)}


def create(config: dict, name: str | None) -> container_records.Container:
    if name:
        validate.container_name(name)
    with state.space_for(f"create container {name}" if name else "create a container"):
        return _create(config, name)


def _create(config: dict, name: str | None) -> container_records.Container:
    mode = config["HostConfig"]["NetworkMode"]
    if mode == "bridge":
        from ..networks import bridge

        bridge.ensure_default()
    owner = container_records.running_netns_owner(config["HostConfig"])
    if mode not in NETWORK_MODES and owner is None:  # here, not in the monitor: its notes and warnings reach the user
        from ..networks import enforce, network_records as nets

        enforce.apply()
        net = nets.get(mode)
        if net["Driver"] == "overlay":
            from ..cluster import local

            local.require()  # a clear error now, not from the monitor
        elif net["netdiag"].get("Bridge"):
            enforce.warn_blocked(net["netdiag"]["Bridge"], net["Name"])
    c = container_records.create_record(config, name)
    try:
        from .volumes import ensure

        for m in config.get("Mounts") or []:
            ensure(m)
        for d in ("upper", "work", "merged"):
            (c.dir / d).mkdir()
        if not c.config["Config"]["Hostname"]:
            c.config["Config"]["Hostname"] = (owner.config["Config"]["Hostname"] if owner else c.id[:12]) \
                if config["HostConfig"]["NetworkMode"] != "host" else os.uname().nodename
            state.write_json(c.dir / "config.json", c.config)
        _write_etc_files(c)
    except BaseException:
        container_records.delete_record(c)
        raise
    return c


def _write_etc_files(c: container_records.Container) -> None:
    hostname = c.config["Config"]["Hostname"]
    state.write_bytes(c.dir / "hostname", (hostname + "\n").encode())
    if c.config["HostConfig"]["NetworkMode"] == "host":
        hosts = _read("/etc/hosts") or "127.0.0.1\tlocalhost\n"
    else:
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    hosts += "".join(line + "\n" for line in container_records.extra_hosts(c.config))
    state.write_bytes(c.dir / "hosts", hosts.encode())
    state.write_bytes(c.dir / "resolv.conf", (_read("/etc/resolv.conf") or "").encode())


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def lower_dirs(c: container_records.Container) -> list[Path]:
    img = images.get(c.config["Image"])
    return [images.layer_dir(d) for d in img.layers]


def start(c: container_records.Container, *, attach: bool = False, interactive: bool = False) -> int:
    """Start a created or exited container; returns the monitor's status pipe."""
    if container_records.proc_ok(c):
        raise Conflict(f"Container {c.name} is already running", "", f"stop it first ('netdiag stop {c.name}')")
    with state.space_for(f"start container {c.name}"):
        if c.state.get("StopRequested"):  # started by a command: its restart policy applies again
            c.save_state(StopRequested=False)
        if not state.reserve(c.dir / "state.json"):  # its exit record must have room, whatever fills the disk
            raise OSError(errno.ENOSPC, "no room for the state record's spare", str(c.dir))
        lowers = lower_dirs(c)  # extracts the image's layers on first use
    container_records.running_netns_owner(c.config["HostConfig"])  # a clear error now, not from the monitor
    if attach or interactive:  # a monitor of its own, living as long as the CLI attached to it
        return monitor.spawn(c, lowers, attach=attach, interactive=interactive)
    from . import supervisor

    return monitor.check_started(c, supervisor.request_start(c, lowers))


def wait_exit(status_fd: int, c: container_records.Container) -> int:
    """Block until an attached container exits; forward ^C and TERM to it. Returns its exit code."""

    def forward(sig, _frame):
        fresh = container_records.get(c.id)
        if fresh.running and fresh.pid:
            try:
                os.kill(fresh.pid, sig)
            except ProcessLookupError:
                pass

    msg = monitor.wait_status(status_fd, forward)
    if msg is None:
        return 125
    return int(msg.get("exit", 125))


def _wait_pid_gone(pid: int, start_time: int | None, timeout: float) -> bool:
    from ..kernel.syscalls import pid_alive

    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return True
    try:
        if start_time is not None and not pid_alive(pid, start_time):
            return True
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def stop(c: container_records.Container, timeout: float | None = 10, sig: int | None = None) -> None:
    """The container's stop signal (Config.StopSignal, else SIGTERM), then SIGKILL after `timeout`
    seconds (None: its Config.StopTimeout, else 10); returns once the monitor recorded the exit."""
    cfg = c.config.get("Config") or {}
    sig = sig if sig is not None else signal_number(cfg["StopSignal"]) if cfg.get("StopSignal") else signal.SIGTERM
    timeout = timeout if timeout is not None else cfg.get("StopTimeout", 10)
    _no_restart(c)
    if not container_records.proc_ok(c):
        return
    try:
        os.kill(c.pid, sig)
    except ProcessLookupError:
        pass
    if not _wait_pid_gone(c.pid, c.state.get("PidStart"), timeout):
        try:
            os.kill(c.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_pid_gone(c.pid, c.state.get("PidStart"), 5)
    _wait_monitor(c)
    _finish_if_unsupervised(c)


def _no_restart(c: container_records.Container) -> None:
    """A container a command stops, kills or removes is not restarted by its policy (Docker's rule)."""
    if (c.config.get("HostConfig", {}).get("RestartPolicy") or {}).get("Name"):
        try:
            container_records.get(c.id).save_state(StopRequested=True)
        except NetdiagError:  # gone or unreadable: nothing will restart it
            pass


def _finish_if_unsupervised(c: container_records.Container) -> None:
    """No monitor recorded the exit of a container whose monitor had died: do its part here."""
    if c.unsupervised:
        monitor.finish_unsupervised(c, "stopped while its monitor was dead: exit code unknown")


def adopt_unsupervised() -> list[str]:
    """`system repair`: the host's supervisor adopts every running container whose monitor died.
    Names the containers adopted."""
    if not any(c.unsupervised for c in container_records.list_all()):
        return []  # no supervisor started for nothing
    from . import supervisor

    return supervisor.request_adoption()


def _wait_monitor(c: container_records.Container) -> None:
    """Until the exit is recorded: a monitor of its own ends then; the shared supervisor writes it."""
    if c.state.get("SharedMonitor"):
        return _wait_recorded(c, 5)
    mpid = int(c.state.get("MonitorPid") or 0)
    if mpid and not _wait_pid_gone(mpid, c.state.get("MonitorStart"), 5):
        raise ContainerError(f"The monitor of container {c.name} did not finish", "it may be stuck", "run 'netdiag rm -f' on it")


def _wait_recorded(c: container_records.Container, timeout: float) -> None:
    """Poll the record until the supervisor recorded this run's exit (or its supervisor died)."""
    import time

    from ..kernel.syscalls import pid_alive

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fresh = container_records.get(c.id)
        except NetdiagError:
            return  # removed meanwhile (--rm)
        if fresh.state.get("Pid") != c.pid or fresh.status != container_records.RUNNING or fresh.unsupervised:
            return
        if not pid_alive(int(fresh.state.get("MonitorPid") or 0), fresh.state.get("MonitorStart")):
            return
        time.sleep(0.01)
    raise ContainerError(f"The supervisor did not record the exit of container {c.name}", "it may be stuck",
                         "run 'netdiag rm -f' on it")


def kill(c: container_records.Container, sig: int = signal.SIGKILL) -> None:
    if not container_records.proc_ok(c):
        raise Conflict(f"Container {c.name} is not running", "", "")
    _no_restart(c)
    os.kill(c.pid, sig)
    if sig == signal.SIGKILL:
        _wait_pid_gone(c.pid, c.state.get("PidStart"), 5)
        _wait_monitor(c)
        _finish_if_unsupervised(c)


def remove(c: container_records.Container, force: bool = False) -> None:
    if container_records.proc_ok(c):
        if not force:
            raise Conflict(
                f"Cannot remove running container {c.name}",
                "removing it would kill its processes",
                f"stop it first ('netdiag stop {c.name}') or use 'netdiag rm -f {c.name}'",
            )
        _no_restart(c)
        os.kill(c.pid, signal.SIGKILL)
        _wait_pid_gone(c.pid, c.state.get("PidStart"), 5)
        _wait_monitor(c)
    remove_stopped(container_records.get(c.id) if c.dir.exists() else c)


signal_number = validate.signal_number  # kill -s, StopSignal


def prune() -> list[str]:
    """`system prune`: stopped containers, records a killed CLI left half-written, and cgroups
    under netdiag's parent that no container owns. Running containers and others' objects stay."""
    import shutil

    from .. import paths

    removed = []
    for c in container_records.list_all():
        if not container_records.proc_ok(c):
            remove_stopped(c)
            removed.append(c.id)
    d = paths.containers_dir()
    with state.locked("names"):  # create_record makes the directory and its config.json under it
        for sub in (d.iterdir() if d.is_dir() else ()):
            if sub.is_dir() and not (sub / "config.json").exists():
                shutil.rmtree(sub, ignore_errors=True)
                removed.append(sub.name)
    live = {c.id for c in container_records.list_all()}
    from ..networks import drivers, network_records as nets

    running = {c.id for c in container_records.list_all() if container_records.proc_ok(c)}
    for net in nets.attachable():  # endpoints whose container died without its monitor to detach them
        for cid in list(net["Containers"]):
            if cid not in running:
                drivers.of(net).detach(net, cid)
                removed.append(f"endpoint {cid[:12]} on {net['Name']}")
    for short in cgroups.orphans(live):
        cgroups.remove(short)
        removed.append(f"cgroup {short}")
    return removed
