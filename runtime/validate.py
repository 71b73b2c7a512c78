"""Validation of user input before it reaches the kernel or the state store."""
import os
import re

from .errors import InvalidArgument

# Docker's rule for container names (moby daemon/names: RestrictedNameChars, matched as
# `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`): at least two characters
RESTRICTED_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME = re.compile(f"^{RESTRICTED_NAME_CHARS}+$")
_NAME_MAX = 128  # netdiag's own bound (Docker has none): names are kept in records and DNS answers
_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
_ENV_KEY = re.compile(r"^[^=\0]+$")
_MEMORY_MAX = 2**63 - 1
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def container_name(name: str) -> str:
    """Docker's rule and Docker's words: "Invalid container name (a), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"."""
    n = name.removeprefix("/")
    if not _NAME.match(n):
        raise InvalidArgument(
            f"Invalid container name ({name}), only {RESTRICTED_NAME_CHARS} are allowed",
            "a name is at least 2 characters: a letter or digit, then letters, digits, '_', '.' or '-'",
            "choose a name like 'web1'",
        )
    if len(n) > _NAME_MAX:
        raise InvalidArgument(f"Container name {n[:20]}... is too long", f"netdiag keeps names of at most {_NAME_MAX} characters",
                              "choose a shorter name")
    return n


def hostname(name: str) -> str:
    if len(name) > 64 or not _HOSTNAME.match(name):
        raise InvalidArgument(
            f"Invalid hostname {name!r}",
            "a hostname is at most 64 characters of letters, digits and '-', in dot-separated labels",
            "choose a hostname like 'web1'",
        )
    return name


def memory_bytes(text: str) -> int:
    """'512m' -> 536870912, like Docker's --memory (b, k, m, g, t; at least 6 MiB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", text.lower())
    if not m:
        raise InvalidArgument(
            f"Invalid memory size {text!r}",
            "a size is a number with an optional unit b, k, m, g or t",
            "use e.g. --memory 64m",
        )
    from decimal import Decimal

    value = int(Decimal(m.group(1)) * _UNITS[m.group(2)])  # exact: a float rounds large sizes
    if value > _MEMORY_MAX:
        raise InvalidArgument(
            f"Memory limit {text[:40]!r} is too large",
            "the kernel takes at most 8 EiB (a signed 64-bit byte count)",
            "give a limit below the machine's memory, e.g. --memory 512m; leave -m out for no limit",
        )
    if value < 6 * 1024**2:
        raise InvalidArgument(
            f"Memory limit {text!r} is too small",
            "the kernel needs at least 6 MiB to run a container",
            "use --memory 6m or more",
        )
    return value


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str, what: str = "duration") -> float:
    """Seconds from Docker's duration syntax ("1s", "500ms", "1m30s"); a bare number is seconds."""
    t = str(text).strip()
    try:
        value = float(t)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise InvalidArgument(f"Invalid {what} {text!r}", "a duration is a number with a unit (ms, s, m, h), like Docker's",
                                  f"use e.g. {what.split()[0]} 5s or 500ms") from None
        value = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if value <= 0:
        raise InvalidArgument(f"Invalid {what} {text!r}", "it must be positive", "use e.g. 5s")
    return value


def nano_cpus(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0.01 <= value <= 1024:
        raise InvalidArgument(f"Invalid --cpus value {text!r}", "it is a number of CPUs such as 0.5 or 2", "use e.g. --cpus 0.5")
    have = len(os.sched_getaffinity(0))
    if value > have:  # Docker: "range of CPUs is from 0.01 to N.00, as there are only N CPUs available"
        raise InvalidArgument(f"Invalid --cpus value {text}", f"the range of CPUs is from 0.01 to {have}.00, as there are only "
                              f"{have} CPUs available", f"use --cpus {have} or less")
    return int(value * 1e9)


def pids_limit(value: int) -> int:
    if value < 1 and value != -1:
        raise InvalidArgument(f"Invalid --pids-limit {value}", "it must be a positive number (or -1 for unlimited)", "use e.g. --pids-limit 100")
    return value


def env_pairs(items: list[str]) -> list[str]:
    out = []
    for item in items:
        key = item.split("=", 1)[0]
        if not key or not _ENV_KEY.match(key) or "\0" in item:
            raise InvalidArgument(f"Invalid environment variable {item!r}", "the form is KEY=VALUE (or KEY to pass it through)", "use e.g. -e MODE=debug")
        out.append(item)
    return out


def signal_number(name: str) -> int:
    """A signal by name (TERM, SIGTERM) or number, as Docker's kill -s and StopSignal take it."""
    import signal

    name = str(name).upper()
    if name.isdigit():
        return int(name)
    rt = re.fullmatch(r"(?:SIG)?RTM(IN|AX)([+-]\d+)?", name)  # e.g. systemd images' STOPSIGNAL SIGRTMIN+3
    if rt:
        return int(signal.SIGRTMIN if rt[1] == "IN" else signal.SIGRTMAX) + int(rt[2] or 0)
    try:
        return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))
    except AttributeError:
        raise InvalidArgument(f"Invalid signal {name!r}", "", "use a name like TERM, KILL, HUP or a number") from None


def extra_host(text: str) -> str:
    """--add-host / Compose's extra_hosts entry HOST:IP (or HOST=IP, [IPv6] allowed) as HOST:IP."""
    import ipaddress

    host, sep, ip = str(text).partition("=")
    if not sep:
        host, sep, ip = str(text).partition(":")
    if not sep:
        raise InvalidArgument(f"Invalid extra host {text!r}", "an extra host is HOST:IP", "write e.g. db.local:10.0.0.5")
    if ip == "host-gateway":
        raise InvalidArgument(f"Invalid extra host {text!r}", "host-gateway is not supported here",
                              "give the host's address on the network instead")
    try:
        ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        raise InvalidArgument(f"Invalid extra host {text!r}", f"{ip!r} is not an IP address", "write e.g. db.local:10.0.0.5") from None
    return f"{hostname(host)}:{ip.strip('[]')}"


TMPFS_FLAGS = {"ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev"}


def tmpfs(text: str) -> str:
    """--tmpfs / Compose's tmpfs entry PATH[:OPTIONS], the options those Docker passes to the kernel."""
    path, _, opts = str(text).partition(":")
    if not path.startswith("/"):
        raise InvalidArgument(f"Invalid tmpfs {text!r}", "it needs an absolute path", "write e.g. /run or /tmp:size=64m")
    for opt in filter(None, opts.split(",")):
        if opt not in TMPFS_FLAGS and not re.fullmatch(r"(size|mode|uid|gid|nr_inodes)=\w+", opt):
            raise InvalidArgument(f"Invalid tmpfs {text!r}", f"option {opt!r} is not supported",
                                  f"use size=, mode=, uid=, gid=, nr_inodes= or {', '.join(sorted(TMPFS_FLAGS))}")
    return str(text)


def sysctl(key: str, value: str = "1") -> str:
    """A --sysctl / Compose sysctls key (and its value): net.* only, the ones a container's own
    network namespace holds."""
    if str(value) == "":
        raise InvalidArgument(f"Sysctl {key} has no value", "a sysctl is KEY=VALUE", f"write e.g. {key}=1")
    if not re.fullmatch(r"net\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise InvalidArgument(f"Sysctl {key} is not supported here", "only net.* keys are namespaced per container",
                              "remove it; a host-wide setting belongs on the host")
    return key


def expose(text: str) -> str:
    """--expose / Compose's expose entry PORT[-PORT][/tcp|udp]."""
    m = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(tcp|udp))?", str(text))
    if not m or not 0 < int(m[1]) <= int(m[2] or m[1]) <= 65535:
        raise InvalidArgument(f"Invalid expose {text!r}", "it is PORT[-PORT][/PROTO], ports 1-65535", "write e.g. 8080 or 8080/udp")
    return str(text)


ULIMITS = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
           "rtprio", "rttime", "sigpending", "stack")  # Docker's names, RLIMIT_<NAME> upper-cased


def ulimit(name: str, soft, hard=None) -> dict:
    """--ulimit NAME=SOFT[:HARD] / Compose's ulimits entry as HostConfig.Ulimits' {Name, Soft, Hard} (-1: unlimited)."""
    if name not in ULIMITS:
        raise InvalidArgument(f"Invalid ulimit {name!r}", f"the ulimits are {', '.join(ULIMITS)}", "use e.g. nofile=1024:2048")
    try:
        soft, hard = int(soft), int(soft if hard is None else hard)
    except (TypeError, ValueError):
        raise InvalidArgument(f"Invalid ulimit {name}", "the limits are whole numbers (-1: unlimited)", "use e.g. nofile=1024:2048") from None
    if min(soft, hard) < -1 or (hard != -1 and (soft == -1 or soft > hard)):
        raise InvalidArgument(f"Invalid ulimit {name}={soft}:{hard}", "the soft limit may not exceed the hard one",
                              "use e.g. nofile=1024:2048")
    return {"Name": name, "Soft": soft, "Hard": hard}
