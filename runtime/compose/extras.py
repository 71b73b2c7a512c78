"""The service keys of real-world compose files beyond the core (env_file, tty, stdin_open, init,
extra_hosts, expose, logging, stop_grace_period, stop_signal, deploy.resources.limits, read_only,
tmpfs, security_opt, sysctls, ulimits), each turned into what Docker Compose asks of the engine, as
containers.run keywords. What netdiag does not do is refused naming the file and line. Pure apart
from reading env files."""
from __future__ import annotations

from pathlib import Path

from .. import bounded, validate
from ..errors import InvalidArgument
from .document import Document, dotenv

KEYS = {"ulimits", "env_file", "tty", "stdin_open", "init", "extra_hosts", "expose", "logging", "stop_grace_period", "stop_signal",
        "deploy", "read_only", "tmpfs", "security_opt", "sysctls", "profiles"}
LOG_DRIVERS = ("json-file", "local")  # the file drivers: netdiag keeps each container's log itself, like them


def env_files(doc: Document, where: tuple, value, directory: Path, environ: dict) -> list[str]:
    """KEY=VALUE of a service's env_file(s), in order (a later file wins); `environ` resolves bare
    KEYs and ${VAR}s. A missing file is an error unless `required: false`."""
    if value is None:
        return []
    out: dict = {}
    for i, item in enumerate([value] if isinstance(value, str) else value):
        entry = {"path": item} if isinstance(item, str) else item
        here = where + (i,) if not isinstance(value, str) else where
        if entry.get("format") not in (None, "raw") and entry.get("format"):
            raise doc.error(here + ("format",), f"env_file format {entry['format']!r} is not supported", "drop format:")
        path = (directory / Path(entry["path"]).expanduser()).resolve()
        required = entry.get("required", True)
        if isinstance(required, str):
            required = required.lower() not in ("false", "0", "no")
        if not path.is_file():
            if required:
                raise doc.error(here, f"env file {path} not found", "create it, or mark it optional with {path: ..., required: false}")
            continue
        if entry.get("format") == "raw":
            lines = bounded.read_text(path, 1 << 20).splitlines()
            pairs = {k: v for k, _, v in (line.partition("=") for line in lines if "=" in line)}
        else:
            try:
                pairs = dotenv(path, environ)
            except InvalidArgument as e:
                raise doc.error(here, e.what, e.fix) from None
        out.update(pairs)
    return [f"{k}={v}" for k, v in out.items()]


def options(doc: Document, where: tuple, v: dict) -> dict:
    """containers.run keywords for the keys above (env_file and profiles are the model's)."""
    _logging(doc, where + ("logging",), v.get("logging"))
    limits = _limits(doc, where, v)
    grace = v.get("stop_grace_period")
    _confinement(doc, where, v)
    signal = v.get("stop_signal")
    if signal is not None:
        _checked(doc, where + ("stop_signal",), validate.signal_number, signal)
    return {
        **limits,
        "tty": _bool(v.get("tty")), "open_stdin": _bool(v.get("stdin_open")), "init": _bool(v.get("init")),
        "extra_hosts": _extra_hosts(doc, where + ("extra_hosts",), v.get("extra_hosts")),
        "expose": [_checked(doc, where + ("expose", i), validate.expose, e) for i, e in enumerate(v.get("expose") or [])],
        "stop_signal": None if signal is None else str(signal),
        "stop_timeout": None if grace is None else
        int(_checked(doc, where + ("stop_grace_period",), lambda t: validate.duration(t, "stop_grace_period"), grace)),
        "read_only": _bool(v.get("read_only")),
        "tmpfs": [_checked(doc, where + ("tmpfs",), validate.tmpfs, t) for t in ([v["tmpfs"]] if isinstance(v.get("tmpfs"), str) else v.get("tmpfs") or [])],
        "security_opt": [str(o) for o in v.get("security_opt") or []],
        "ulimits": [_checked(doc, where + ("ulimits", k), lambda k: validate.ulimit(k, *_soft_hard(u)), k)
                    for k, u in (v.get("ulimits") or {}).items()],
        "sysctls": _sysctls(doc, where + ("sysctls",), v.get("sysctls"), v.get("network_mode")),
    }


def _bool(value) -> bool:
    return value.lower() in ("true", "yes", "1") if isinstance(value, str) else bool(value)


def _checked(doc: Document, where: tuple, check, value):
    try:
        return check(value)
    except InvalidArgument as e:
        raise doc.error(where, e.what.rstrip(".") + (f": {e.why.rstrip('.')}" if e.why else ""), e.fix) from None


def _confinement(doc: Document, where: tuple, v: dict) -> None:
    """cap_add, cap_drop, privileged and security_opt checked as `run` checks them, but now, at their line."""
    from ..containers import security

    for key in ("security_opt", "cap_add", "cap_drop"):
        _checked(doc, where + (key,), lambda given, key=key: security.host_config(**{key: [str(x) for x in given or []]}), v.get(key))


def _logging(doc: Document, where: tuple, value) -> None:
    driver = (value or {}).get("driver")
    if driver is not None and driver not in LOG_DRIVERS:
        raise doc.error(where + ("driver",), f"log driver {driver!r}: netdiag keeps each container's log itself "
                        "(see 'netdiag logs') and sends it nowhere else", f"remove logging: or use one of {', '.join(LOG_DRIVERS)}")


def _limits(doc: Document, where: tuple, v: dict) -> dict:
    """mem_limit/cpus/pids_limit, or deploy.resources.limits (Compose refuses two different values)."""
    deploy = v.get("deploy") or {}
    for key in deploy:
        if key not in ("resources", "replicas") and not str(key).startswith("x-"):
            raise doc.error(where + ("deploy", key), f"deploy.{key} is a Swarm setting netdiag does not run",
                            "remove it; deploy.resources.limits (memory, cpus, pids) is supported")
    if deploy.get("replicas", 1) not in (1, "1"):
        raise doc.error(where + ("deploy", "replicas"), "netdiag runs one container per service", "remove replicas: or set it to 1")
    resources = deploy.get("resources") or {}
    for key in resources:
        if key != "limits" and not str(key).startswith("x-"):
            raise doc.error(where + ("deploy", "resources", key), f"deploy.resources.{key} is not supported here",
                            "remove it; only limits (memory, cpus, pids) are enforced")
    limits = resources.get("limits") or {}
    out = {}
    for key, own, given in (("memory", "mem_limit", limits.get("memory")), ("cpus", "cpus", limits.get("cpus")),
                            ("pids_limit", "pids_limit", limits.get("pids"))):
        mine = v.get(own)
        if mine is not None and given is not None and str(mine) != str(given):
            raise doc.error(where + ("deploy", "resources", "limits"), f"{own} and deploy.resources.limits give different values",
                            "keep one of them")
        chosen = mine if mine is not None else given
        out[key] = None if chosen is None else int(chosen) if key == "pids_limit" else str(chosen)
    return out


def _extra_hosts(doc: Document, where: tuple, value) -> list[str]:
    """HOST:IP entries (Compose's list form HOST:IP or HOST=IP, or a mapping HOST: IP or [IPs])."""
    if isinstance(value, dict):
        value = [f"{host}:{ip}" for host, ips in value.items() for ip in (ips if isinstance(ips, list) else [ips])]
    return [_checked(doc, where, validate.extra_host, item) for item in value or []]


def _soft_hard(value) -> tuple:
    return (value.get("soft"), value.get("hard")) if isinstance(value, dict) else (value, value)


def _sysctls(doc: Document, where: tuple, value, network_mode) -> dict:
    """net.* only, as Docker allows them: namespaced by the container's own network namespace."""
    if isinstance(value, list):
        value = dict(str(item).partition("=")[::2] for item in value)
    out = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in (value or {}).items()}
    for key in out:
        _checked(doc, where + (key,), lambda k: validate.sysctl(k, out[k]), key)
        if network_mode == "host":
            raise doc.error(where + (key,), f"sysctl {key} with network_mode host would change the host's network",
                            "remove it, or give the service its own network")
    return out
