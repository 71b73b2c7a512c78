"""Container actions (Docker's run, ps, exec, logs, stop, kill, rm, start, restart, inspect)."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

from ..containers import container_records
from ..errors import ContainerError, InvalidArgument, NotFound
from . import require_root


def run(image_ref: str, command: list[str], *, name: str | None = None, detach: bool = False,
        interactive: bool = False, more_networks: dict[str, list[str]] | None = None,
        **config) -> tuple[container_records.Container, int]:
    """Create and start a container from image_ref; `config` is lifecycle.build_config's keywords,
    `more_networks` further networks it joins before it starts ({name: aliases}, as Compose does).
    Returns the container and the status pipe to wait on (wait_exit) or, detached, to close.
    A run that did not start leaves nothing behind."""
    from ..images import store as images

    require_root("run a container")
    img = _image_or_pull(image_ref, images)
    c = _lifecycle().create(_lifecycle().build_config(img, image_ref, command, **config), name)
    try:
        if more_networks:
            from ..containers import endpoints

            for network, aliases in more_networks.items():
                endpoints.connect(c, network, None, list(aliases))
        status = _lifecycle().start(c, attach=not detach, interactive=interactive)
    except BaseException:
        _lifecycle().remove_stopped(c)
        raise
    return c, status


def _image_or_pull(image_ref: str, images):
    """The stored image, else (like Docker's run) pulled first when the name says a registry. Names
    on Docker Hub are pulled only by an explicit `netdiag pull`: a typo never reaches the internet."""
    try:
        return images.get(image_ref)
    except NotFound:
        from ..images.refs import DEFAULT_DOMAIN, parse

        try:
            ref = parse(image_ref)
        except InvalidArgument:
            ref = None
        if ref is None or ref.domain == DEFAULT_DOMAIN:
            raise
    import sys

    from ..registry.pull import pull

    print(f"Unable to find image '{ref.familiar()}' locally", file=sys.stderr)
    pull(image_ref, out=lambda line: print(line, file=sys.stderr, flush=True))
    return images.get(image_ref)


get = container_records.get


def wait_exit(status_fd: int, c: container_records.Container) -> int:
    return _lifecycle().wait_exit(status_fd, c)


def signal_number(name: str) -> int:
    return _lifecycle().signal_number(name)


def _lifecycle():
    """lifecycle (the monitor, images, cgroups, security): imported by what starts or stops a
    container, never by `ps`, which only reads records."""
    from ..containers import lifecycle

    return lifecycle


def listing(all_: bool = False, filters: list[str] = ()) -> list[dict]:
    """`ps` rows (Docker's `--format json` fields), running containers only unless all_ or a status
    filter asks for others. Filters are Docker's (name=, label=KEY[=VALUE], status=, network=,
    ancestor=, id=): values of one key match any, different keys must all match."""
    from ..containers import endpoints
    from ..networks import network_records
    from ..networks.ports import describe

    checks = _filters(filters)  # every filter is checked before anything is listed
    out = []
    networks = None  # read once, when the first running container is listed
    for c in container_records.list_all():
        if not ((all_ or "status" in checks or c.running) and all(any(ok(c) for ok in alts) for alts in checks.values())):
            continue
        cmd = " ".join([c.config.get("Path", "")] + list(c.config.get("Args", [])))
        cmd = f'"{cmd[:20]}…"' if len(cmd) > 20 else f'"{cmd}"'
        created_at = container_records.parse_iso(c.config.get("Created", ""))
        if c.running and networks is None:
            networks = network_records.attachable()
        eps = endpoints.endpoints(c, networks) if c.running else {}
        ports = ", ".join(describe(p) for e in eps.values() for p in e.get("Ports", []))
        labels = (c.config.get("Config") or {}).get("Labels") or {}
        out.append({"ID": c.id[:12], "Image": c.config.get("ImageRef", ""), "Command": cmd,
                    "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(created_at)),
                    "RunningFor": container_records.human_duration(time.time() - created_at) + " ago",
                    "Status": container_records.status_line(c), "State": c.status, "Ports": ports, "Names": c.name,
                    "Labels": ",".join(f"{k}={v}" for k, v in labels.items()), "ExitCode": c.state.get("ExitCode", 0),
                    "Networks": ",".join(_networks(c)) or c.config.get("HostConfig", {}).get("NetworkMode", ""),
                    **({"Error": c.state["Error"]} if c.broken else {})})
    return out


STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")  # Docker's


def _networks(c: container_records.Container) -> list[str]:
    return list(((c.config.get("NetworkSettings") or {}).get("Networks") or {}))


def _filters(texts: list[str]) -> dict:
    """{key: [predicate, ...]} for `ps --filter KEY=VALUE` texts; a bad one is refused."""
    import re

    checks: dict = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not value:
            raise InvalidArgument(f"Bad filter {text!r}", "a filter is KEY=VALUE", "use e.g. --filter status=exited")
        if key == "name":
            try:
                pattern = re.compile(value)
            except re.error as e:
                raise InvalidArgument(f"Bad filter {text!r}", f"the name is matched as a regular expression: {e}",
                                      "escape special characters, e.g. name=web\\.1") from None
            ok = lambda c, p=pattern: bool(p.search(c.name))
        elif key == "id":
            ok = lambda c, v=value: c.id.startswith(v)
        elif key == "label":
            k, has_value, v = value.partition("=")
            ok = lambda c, k=k, v=v, has_value=has_value: _labels(c).get(k) == v if has_value else k in _labels(c)
        elif key == "status":
            if value not in STATUSES:
                raise InvalidArgument(f"Bad filter {text!r}", f"a status is one of {', '.join(STATUSES)}", "use e.g. status=exited")
            ok = lambda c, v=value: c.status == v
        elif key == "network":
            ok = lambda c, v=value: v in _networks(c) or any(_network_id(n).startswith(v) for n in _networks(c))
        elif key == "ancestor":
            ok = lambda c, v=value: _is_ancestor(c, v)
        else:
            raise InvalidArgument(f"Unknown filter {key!r}", "the filters of ps are name, label, status, network, ancestor and id",
                                  "use e.g. --filter status=exited or --filter label=app=web")
        checks.setdefault(key, []).append(ok)
    return checks


def _labels(c: container_records.Container) -> dict:
    return (c.config.get("Config") or {}).get("Labels") or {}


def _network_id(name: str) -> str:
    from ..networks import network_records as networks

    try:
        return networks.get(name)["Id"]
    except NotFound:
        return ""


def _is_ancestor(c: container_records.Container, ref: str) -> bool:
    """Docker's ancestor=: the container's image by name[:tag] (a missing tag is latest) or id prefix."""
    import re

    from ..images.refs import normalize

    short = ref.removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-f]{4,64}", short) and (c.config.get("Image") or "").removeprefix("sha256:").startswith(short):
        return True
    try:
        return normalize(c.config.get("ImageRef", "")) == normalize(ref)
    except InvalidArgument:
        return False


def exec_in(ref: str, command: list[str], **options) -> int:
    """Run a command in a running container (execute.exec_in's keywords); its exit status."""
    from ..containers import execute

    require_root("exec in a container")
    return execute.exec_in(container_records.get(ref), command, **options)


def logs(ref: str, *, follow: bool = False, tail: int | None = None) -> Iterator[dict]:
    """A container's log records ({"stream", "log", "time"}), the last `tail` ones; with follow,
    until the container stops. Then, as records of stream "notice", what the log lacks: lines its
    monitor could not write, or the end where its monitor died."""
    from ..containers.stdio import DROPPED, LOG_NOTICE, read_log

    c = container_records.get(ref)
    path = c.dir / "container.log"
    records, offset = read_log(path)
    if tail is not None:
        records = records[-tail:] if tail > 0 else []
    yield from records
    while follow:
        time.sleep(0.1)
        records, offset = read_log(path, offset)
        yield from records
        if not records and not container_records.get(c.id).running:
            records, offset = read_log(path, offset)
            yield from records
            break
    c = container_records.get(c.id)
    dropped = c.state.get("LogLinesDropped") or 0
    if dropped and c.status != container_records.RUNNING:  # its monitor could not write the notice line itself
        if not any(r.get("log", "").startswith(LOG_NOTICE) and DROPPED in r["log"] for r in read_log(path)[0]):
            yield {"stream": "notice", "log": f"{LOG_NOTICE}{dropped} {DROPPED}: the log could not be written "
                                              "(no space left in the state directory)\n"}
    if c.unsupervised:
        yield {"stream": "notice", "log": "netdiag: the log stops where its monitor died (run 'netdiag system repair')\n"}


def _usable(c: container_records.Container) -> container_records.Container:
    """Refuse to start a container whose record is unusable (it shows as dead in `ps -a`)."""
    if c.broken:
        raise ContainerError(f"Cannot start container {c.id[:12]}", c.broken,
                             f"remove it with 'netdiag rm -f {c.id[:12]}' and run it again")
    return c


def stop(ref: str, timeout: float | None = None) -> None:
    _lifecycle().stop(container_records.get(ref), timeout)


def kill(ref: str, signal_name: str = "KILL") -> None:
    _lifecycle().kill(container_records.get(ref), _lifecycle().signal_number(signal_name))


def remove(ref: str, *, force: bool = False) -> None:
    _lifecycle().remove(container_records.get(ref), force)


def start(ref: str, *, attach: bool = False) -> tuple[container_records.Container, int]:
    """Start a stopped container; attached, the status pipe to wait_exit on."""
    require_root("start a container")
    c = _usable(container_records.get(ref))
    status = _lifecycle().start(c, attach=attach)
    if not attach:
        os.close(status)
    return c, status


def restart(ref: str, timeout: float | None = None) -> None:
    require_root("restart a container")
    c = _usable(container_records.get(ref))
    _lifecycle().stop(c, timeout)
    os.close(_lifecycle().start(container_records.get(c.id)))


def inspect(ref: str, type_: str | None = None) -> dict:
    """Docker's JSON for a container or an image (type_ None: a container first, like Docker)."""
    from ..containers import inspect as ins
    from ..images import store as images

    if type_ in (None, "container"):
        try:
            return ins.container_json(container_records.get(ref))
        except NotFound:
            if type_ == "container":
                raise
    try:
        return ins.image_json(images.get(ref))
    except NotFound as e:
        if type_ == "image":
            raise
        raise NotFound(f"No such object: {ref}", "no container or image has that name or id",
                       "list them with 'netdiag ps -a' and 'netdiag images'") from e


def prune() -> list[str]:
    return _lifecycle().prune()
