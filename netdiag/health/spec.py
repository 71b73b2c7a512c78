"""What a health check checks, validated before anything is sent: every name, port, path and header
that reaches a socket or a command line was checked here first (exit 2 otherwise)."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from runtime.errors import InvalidArgument

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_PATH = re.compile(r"^/[\x21-\x7e]*$")  # printable ASCII, no space: nothing can end the request line
_HEADER = re.compile(r"^[\x21-\x7e]+$")
DEFAULT_EXPECT = ((200, 399),)  # Kubernetes' and HAProxy's notion of success (AWS defaults to 200)
MAX_TIMEOUT = 300.0


@dataclass(frozen=True)
class Spec:
    host: str                 # a DNS name or an IPv4 address, as given
    port: int
    mode: str                 # "tcp" or "http"
    path: str = "/"
    host_header: str = ""     # "" means host[:port], like a browser
    expect: tuple[tuple[int, int], ...] = DEFAULT_EXPECT
    timeout: float = 2.0      # for the whole check: resolution, connect, request, response
    count: int = 1
    interval: float = 1.0
    url: str = ""             # the URL given, if one was
    method: str = "GET"       # HAProxy's checks may use another (OPTIONS by default)
    connect_timeout: float | None = None  # HAProxy's own limit on the handshake (None: the whole timeout)
    endpoint: str = ""        # a name the model resolved to `host` (a CNI pod, `cni:ID`, which no DNS knows)

    @property
    def is_ip(self) -> bool:
        return is_ipv4(self.host)

    @property
    def header_host(self) -> str:
        return self.host_header or (self.host if self.port == 80 else f"{self.host}:{self.port}")

    def show(self) -> str:
        shown = (self.url or f"http://{self.host}:{self.port}{self.path}") if self.mode == "http" else f"{self.host}:{self.port}"
        return f"{shown} ({self.endpoint})" if self.endpoint else shown

    def to_dict(self) -> dict:
        return {"type": self.mode, "host": self.host, "port": self.port,
                "method": self.method if self.mode == "http" else None, "path": self.path if self.mode == "http" else None,
                "host_header": self.header_host if self.mode == "http" else None,
                "expect": expect_text(self.expect) if self.mode == "http" else None,
                "timeout": self.timeout, "count": self.count, "interval": self.interval if self.count > 1 else None,
                **({"endpoint": self.endpoint} if self.endpoint else {})}


def is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


MODEL_NAMED = "cni:"  # endpoints no resolver knows, named as the model names them (a kubelet's CNI pods)


def check_endpoint(name: str) -> str:
    """`cni:ID`: a CNI pod by (a prefix of) its container id, resolved from the model, not by DNS."""
    if re.fullmatch(r"cni:[A-Za-z0-9][A-Za-z0-9_.-]{2,127}", name):
        return name
    raise InvalidArgument(f"Invalid target {name!r}", "cni:ID names a CNI pod by its container id (or its first 3+ characters)",
                          "e.g. cni:4f2a9c1b7d3e:80 (netdiag topo lists the pods)")


def check_host(host: str, what: str = "host") -> str:
    """An IPv4 address or a DNS name (labels of letters, digits, '-', '_'), else exit 2."""
    if is_ipv4(host):
        return host
    name = host[:-1] if host.endswith(".") else host
    if name and len(name) <= 253 and all(_LABEL.match(lb) for lb in name.split(".")) and not is_ipv4(name):
        if not name.replace(".", "").isdigit():
            return host
    raise InvalidArgument(f"Invalid {what} {host!r}", "it is neither an IPv4 address nor a DNS name",
                          "give e.g. web:80, 10.0.0.5:8080 or http://web/health (IPv6 is not supported)")


def check_port(port, what: str = "port") -> int:
    try:
        n = int(port)
    except (TypeError, ValueError):
        n = -1
    if not 1 <= n <= 65535 or not str(port).strip().isdigit():
        raise InvalidArgument(f"Invalid {what} {port!r}", "a port is a number from 1 to 65535", "")
    return n


def check_path(path: str) -> str:
    if not _PATH.match(path) or len(path) > 2048:
        raise InvalidArgument(f"Invalid HTTP path {path!r}", "it must start with '/' and hold printable ASCII only "
                              "(no spaces or control characters; escape them as %20 ...)", "e.g. --http /health")
    return path


def check_header(value: str, what: str = "--host") -> str:
    if not _HEADER.match(value) or len(value) > 255:
        raise InvalidArgument(f"Invalid {what} {value!r}", "a Host header is printable ASCII without spaces", "e.g. --host www.example.com")
    return value


def check_method(method: str) -> str:
    if not re.fullmatch(r"[A-Z]{1,16}", method or ""):
        raise InvalidArgument(f"Invalid HTTP method {method!r}", "a method is an upper-case word such as GET or OPTIONS", "")
    return method


def parse_expect(text: str) -> tuple[tuple[int, int], ...]:
    """"200", "200-399", "2xx", or a comma list of those."""
    out = []
    for part in (text or "").split(","):
        part = part.strip().lower()
        m = re.fullmatch(r"([1-5])xx", part)
        if m:
            lo = int(m.group(1)) * 100
            out.append((lo, lo + 99))
            continue
        m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", part)
        if not m:
            raise InvalidArgument(f"Invalid --expect {text!r}", "it is a status (200), a range (200-399), a class (2xx) or a comma list",
                                  "e.g. --expect 200 or --expect 200-399")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 100 <= lo <= hi <= 599:
            raise InvalidArgument(f"Invalid --expect {text!r}", "HTTP statuses run from 100 to 599, low before high", "")
        out.append((lo, hi))
    return tuple(out)


def expect_text(expect) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in expect)


def expected(status: int, expect) -> bool:
    return any(lo <= status <= hi for lo, hi in expect)


def parse(target: str, *, tcp: bool = False, http: str | None = None, host: str | None = None,
          expect: str | None = None, timeout: float = 2.0, count: int = 1, interval: float = 1.0) -> Spec:
    """TARGET is NAME_OR_IP:PORT or an http:// URL. A URL is an HTTP check (unless --tcp), a
    host:port a TCP check (unless --http PATH)."""
    if tcp and http is not None:
        raise InvalidArgument("--tcp and --http exclude each other", "a check is either a TCP connect or an HTTP GET", "give one")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidArgument(f"Invalid --timeout {timeout:g}", f"it is a number of seconds above 0, at most {MAX_TIMEOUT:g}", "")
    if not 1 <= count <= 1000:
        raise InvalidArgument(f"Invalid --count {count}", "from 1 to 1000 checks", "")
    if not 0 <= interval <= 3600:
        raise InvalidArgument(f"Invalid --interval {interval:g}", "seconds between checks, 0 to 3600", "")
    url = ""
    if "://" in target:
        parts = urlsplit(target)
        if parts.scheme != "http":
            raise InvalidArgument(f"Unsupported URL scheme in {target!r}", "netdiag checks plain HTTP (TLS is not spoken)",
                                  "check the TLS port's TCP handshake with --tcp HOST:PORT")
        if parts.username or parts.password or parts.fragment:
            raise InvalidArgument(f"Invalid URL {target!r}", "no user, password or #fragment in a health check URL", "")
        try:
            port = parts.port or 80
        except ValueError:
            raise InvalidArgument(f"Invalid port in {target!r}", "a port is a number from 1 to 65535", "") from None
        name = check_host(parts.hostname or "")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        path, url = check_path(path), target
        mode = "tcp" if tcp else "http"
        if http is not None:
            path = check_path(http)
    else:
        name, sep, port_text = target.rpartition(":")
        if not sep or not name:
            raise InvalidArgument(f"Invalid target {target!r}", "a target is NAME_OR_IP:PORT or a URL", "e.g. web:80 or http://web/health")
        name, port = check_endpoint(name) if name.startswith(MODEL_NAMED) else check_host(name), check_port(port_text)
        mode = "http" if http is not None else "tcp"
        path = check_path(http) if http is not None else "/"
    if mode == "tcp" and (host or expect):
        raise InvalidArgument("--host and --expect need an HTTP check", "a TCP check only connects", "add --http PATH or give a URL")
    return Spec(host=name, port=check_port(port), mode=mode, path=path, host_header=check_header(host) if host else "",
                expect=parse_expect(expect) if expect else DEFAULT_EXPECT, timeout=float(timeout), count=count,
                interval=float(interval), url=url if mode == "http" and http is None else "")
