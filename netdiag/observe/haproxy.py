"""A real HAProxy, read as it runs: its stats socket (`show stat`, `show servers state`) for each
server's state and HAProxy's own check status, and its configuration (found through the process's
command line) for the check it is told to do: TCP or HTTP, the path, the Host header, the expected
status, the check port and the timeouts.

Files and sockets are reached through /proc/PID/root and /proc/PID/cwd, so a HAProxy in a
container or in another mount namespace is read where it is. Nothing is ever written to the
socket but the two read-only `show` commands.
"""
from __future__ import annotations

import csv
import io
import os
import re
import socket
from dataclasses import dataclass, field

from runtime.errors import InvalidArgument, NetdiagError, NotFound, PermissionDenied

SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "userlist", "cache",
            "program", "http-errors", "ring", "mailers", "log-forward")
DEFAULT_INTER = 2.0  # HAProxy's default check interval (and check timeout without `timeout check`)


# -- the stats socket -------------------------------------------------------------------------------

def query(path: str, command: str, timeout: float = 3.0) -> str:
    """One command on the stats socket (non-interactive: HAProxy answers and closes)."""
    if command not in ("show stat", "show servers state", "show info"):
        raise InvalidArgument(f"Not a read-only HAProxy command: {command!r}", "", "")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    except PermissionError as e:
        raise PermissionDenied(f"Cannot open HAProxy's stats socket {path}", e.strerror or str(e), "run netdiag as root") from None
    except FileNotFoundError:
        raise NotFound(f"No HAProxy stats socket at {path}", "", "give the path of 'stats socket' in its global section") from None
    except OSError as e:
        raise NetdiagError(f"Cannot read HAProxy's stats socket {path}", e.strerror or str(e),
                           "check that HAProxy runs and that the path is its 'stats socket'") from None
    finally:
        s.close()
    return b"".join(chunks).decode("utf-8", "replace")


def parse_stat(text: str) -> list[dict]:
    """`show stat` CSV -> one dict per row, keyed by HAProxy's column names."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        raise NetdiagError("HAProxy's 'show stat' answer is not the CSV it should be", (lines[0][:120] if lines else "empty answer"), "")
    rows = list(csv.reader(io.StringIO("\n".join([lines[0][2:]] + lines[1:]))))
    head = rows[0]
    return [dict(zip(head, r)) for r in rows[1:]]


def parse_servers_state(text: str) -> list[dict]:
    """`show servers state` -> one dict per server (the first line is the format version)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = next((ln[2:].split() for ln in lines if ln.startswith("# ")), None)
    if head is None:
        return []
    return [dict(zip(head, ln.split())) for ln in lines if not ln.startswith("#") and len(ln.split()) >= len(head) - 2
            and not ln.strip().isdigit()]


def servers(sock: str) -> list[dict]:
    """Every backend server: its state and check as HAProxy reports them, merged from both commands."""
    state = {(s.get("be_name"), s.get("srv_name")): s for s in parse_servers_state(query(sock, "show servers state"))}
    out = []
    for row in parse_stat(query(sock, "show stat")):
        if row.get("svname") in ("FRONTEND", "BACKEND") or row.get("type") not in (None, "2"):
            continue
        st = state.get((row["pxname"], row["svname"]), {})
        addr, _, port = (row.get("addr") or "").rpartition(":")
        check_port = int(st["srv_check_port"]) if st.get("srv_check_port", "0").isdigit() and int(st["srv_check_port"]) else None
        check_addr = st.get("srv_check_addr") if st.get("srv_check_addr") not in (None, "-", "") else None
        out.append({"backend": row["pxname"], "server": row["svname"], "status": row.get("status", ""),
                    "addr": row.get("addr", ""), "ip": addr or st.get("srv_addr", ""),
                    "port": int(port) if port.isdigit() else int(st.get("srv_port") or 0),
                    "check_status": row.get("check_status", "").lstrip("* "),  # '* ' marks a check under way "check_code": row.get("check_code", ""),
                    "check_duration": int(row["check_duration"]) if row.get("check_duration", "").isdigit() else None,
                    "check_desc": row.get("check_desc", ""), "last_chk": row.get("last_chk", ""),
                    "check_port": check_port, "check_addr": check_addr, "econ": row.get("econ", ""),
                    "eresp": row.get("eresp", ""), "hrsp_5xx": row.get("hrsp_5xx", "")})
    return out


# -- the configuration ------------------------------------------------------------------------------

@dataclass
class CheckConf:
    """The check HAProxy does for one backend (defaults applied)."""
    kind: str = "tcp"                  # tcp | http
    method: str = "OPTIONS"
    uri: str = "/"
    host: str = ""
    expect: str = ""                   # "200", "200-399"... ("" = HAProxy's default: 2xx and 3xx)
    timeout_check: float | None = None
    timeout_connect: float | None = None
    tcp_check_port: int | None = None  # `tcp-check connect port N`


@dataclass
class ServerConf:
    name: str
    address: str
    port: int | None
    check: bool = False
    check_port: int | None = None
    check_addr: str | None = None
    inter: float = DEFAULT_INTER


@dataclass
class Config:
    stats_sockets: list[str] = field(default_factory=list)
    backends: dict[str, tuple[CheckConf, dict[str, ServerConf]]] = field(default_factory=dict)


def duration(text: str) -> float | None:
    """HAProxy's time format (ms by default; us, ms, s, m, h, d) -> seconds."""
    m = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", text.strip())
    if not m:
        return None
    mult = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return int(m.group(1)) * mult


def _words(line: str) -> list[str]:
    """A config line's words: '#' starts a comment, backslash escapes (as in 'Host:\\ x')."""
    out, cur, esc, quote = [], "", False, None
    for ch in line:
        if esc:
            cur += ch
            esc = False
        elif ch == "\\":
            esc = True
        elif quote:
            if ch == quote:
                quote = None
            else:
                cur += ch
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch.isspace():
            if cur:
                out.append(cur)
                cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _expect(words: list[str]) -> str:
    """`http-check expect [!] status 200[,300-310]` or `rstatus RE` -> the statuses as --expect takes them."""
    if not words or words[0] == "!":
        return ""
    if words[0] == "status" and len(words) > 1:
        return words[1]
    if words[0] == "rstatus" and len(words) > 1:
        m = re.fullmatch(r"\^?\(?([1-5](?:\|[1-5])*)\)?(?:\.\*|\[0-9\]\{2\}|\\d\{2\}|\.\.)?\$?", words[1])
        if m:
            return ",".join(f"{d}xx" for d in m.group(1).split("|"))
    return ""


def _server(words: list[str], defaults: dict) -> ServerConf:
    name, addr = words[1], words[2] if len(words) > 2 else ""
    host, _, port = addr.rpartition(":") if ":" in addr else (addr, "", "")
    srv = ServerConf(name=name, address=host or addr, port=int(port) if port.isdigit() else None)
    opts = dict(defaults)
    i = 3
    while i < len(words):
        w = words[i]
        if w in ("check", "no-check"):
            opts["check"] = w == "check"
        elif w in ("port", "addr", "inter") and i + 1 < len(words):
            opts[w] = words[i + 1]
            i += 1
        i += 1
    srv.check = bool(opts.get("check"))
    if str(opts.get("port", "")).isdigit():
        srv.check_port = int(opts["port"])
    srv.check_addr = opts.get("addr")
    srv.inter = duration(str(opts["inter"])) or DEFAULT_INTER if opts.get("inter") else DEFAULT_INTER
    return srv


def parse_config(text: str) -> Config:
    conf = Config()
    defaults_check, defaults_server = CheckConf(), {}
    section, name = None, None
    check, servers_, dflt_srv = None, {}, {}

    def close():
        if section in ("backend", "listen") and name is not None:
            conf.backends[name] = (check, servers_)

    for raw in text.splitlines():
        w = _words(raw)
        if not w:
            continue
        if w[0] in SECTIONS:
            close()
            section, name = w[0], (w[1] if len(w) > 1 else "")
            if section == "defaults":
                defaults_check, defaults_server = CheckConf(), {}
                check, dflt_srv = defaults_check, defaults_server
            else:
                check = CheckConf(**vars(defaults_check))
                servers_, dflt_srv = {}, dict(defaults_server)
            continue
        if section == "global":
            if w[:2] == ["stats", "socket"] and len(w) > 2:
                path = w[2].split("@", 1)[1] if w[2].startswith("unix@") else w[2]
                if "@" not in path and ":" not in path:
                    conf.stats_sockets.append(path)
            continue
        if check is None:
            continue
        if w[:2] == ["option", "httpchk"]:
            check.kind = "http"
            rest = w[2:]
            if len(rest) == 1:
                check.uri = rest[0]
            elif len(rest) >= 2:
                check.method, check.uri = rest[0], rest[1]
                if len(rest) >= 3:  # the old trick: the version word carries "\r\nHost: x"
                    m = re.search(r"host:\s*(\S+)", " ".join(rest[2:]).replace("\\r\\n", "\n"), re.I)
                    if m:
                        check.host = m.group(1)
        elif w[:2] == ["option", "tcp-check"]:
            check.kind = "tcp"
        elif w[:2] == ["http-check", "send"]:
            check.kind = "http"
            i = 2
            while i + 1 < len(w):
                if w[i] == "meth":
                    check.method = w[i + 1]
                elif w[i] == "uri":
                    check.uri = w[i + 1]
                elif w[i] == "hdr" and i + 2 < len(w):
                    if w[i + 1].lower() == "host":
                        check.host = w[i + 2]
                    i += 1
                i += 2 if w[i] in ("meth", "uri", "ver", "hdr", "body", "uri-lf", "body-lf") else 1
        elif w[:2] == ["http-check", "expect"]:
            check.expect = _expect(w[2:]) or check.expect
        elif w[:2] == ["tcp-check", "connect"] and "port" in w:
            port = w[w.index("port") + 1] if w.index("port") + 1 < len(w) else ""
            check.tcp_check_port = int(port) if port.isdigit() else None
        elif w[0] == "timeout" and len(w) > 2 and w[1] in ("check", "connect"):
            setattr(check, f"timeout_{w[1]}", duration(w[2]))
        elif w[0] == "default-server":
            for i, word in enumerate(w[1:], 1):
                if word in ("check", "no-check"):
                    dflt_srv["check"] = word == "check"
                elif word in ("port", "addr", "inter") and i + 1 < len(w):
                    dflt_srv[word] = w[i + 1]
        elif w[0] == "server" and len(w) > 2 and section in ("backend", "listen"):
            srv = _server(w, dflt_srv)
            servers_[srv.name] = srv
    close()
    return conf


def check_timeout(check: CheckConf, srv: ServerConf | None) -> tuple[float, float]:
    """(connect, read) timeouts of HAProxy's check: with `timeout check`, min(timeout connect, inter)
    to connect and `timeout check` to read; without it, inter for both."""
    inter = srv.inter if srv else DEFAULT_INTER
    if check.timeout_check:
        return min(check.timeout_connect or inter, inter), check.timeout_check
    return inter, inter


# -- finding the process --------------------------------------------------------------------------

@dataclass
class Process:
    pid: int
    configs: list[str]        # as given on its command line
    config_text: str
    sockets: list[str]        # stats sockets, as this process can open them
    netns_inode: int | None


MAX_CONFIG = 4 << 20  # bytes of one HAProxy configuration file: real ones are a few KB


def in_root(pid: int, path: str) -> str:
    return f"/proc/{pid}/root{path}" if path.startswith("/") else f"/proc/{pid}/cwd/{path}"


def _config_files(pid: int, args: list[str]) -> list[str]:
    files = []
    for i, a in enumerate(args):
        if a == "-f" and i + 1 < len(args):
            files.append(args[i + 1])
        elif a.startswith("-f") and len(a) > 2:
            files.append(a[2:])
    return files


def _read_config(pid: int, files: list[str]) -> str:
    """The configuration HAProxy read, read inside its root (its links must not lead netdiag to the
    host's files) and bounded (a FIFO or a huge file is skipped, like one that cannot be read)."""
    from runtime import bounded, fsroot

    parts = []
    for f in files:
        root, inside = (f"/proc/{pid}/root", f) if f.startswith("/") else (f"/proc/{pid}/cwd", "/" + f)
        names = fsroot.list_in_root(root, inside)
        for path in [f"{inside.rstrip('/')}/{n}" for n in sorted(names) if n.endswith(".cfg")] if names is not None else [inside]:
            try:
                parts.append(fsroot.read_in_root(root, path, MAX_CONFIG).decode("utf-8", errors="replace"))
            except bounded.Refused:
                continue
    return "\n".join(parts)


def processes() -> list[Process]:
    """Every running HAProxy (a master and its worker count once: the same config in one namespace)."""
    out, seen = [], set()
    for entry in sorted(os.listdir("/proc"), key=lambda p: int(p) if p.isdigit() else 0):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "haproxy":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        files = _config_files(pid, args)
        key = (ino, tuple(files))
        if key in seen:
            continue
        seen.add(key)
        text = _read_config(pid, files)
        conf = parse_config(text)
        out.append(Process(pid, files, text, [in_root(pid, s) for s in conf.stats_sockets], ino))
    return out


def same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
