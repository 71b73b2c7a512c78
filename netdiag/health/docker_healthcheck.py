"""Pure: is a container's health check (Docker's HEALTHCHECK Test, from the image or --health-cmd)
a network check, and if so, which one? wget and curl to a URL (or host:port), nc -z to a port,
found in a shell line (`timeout 3 wget -qO- http://localhost:8080/health || exit 1`) or in an exec
form (["CMD", "curl", "-f", "http://localhost/"])."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

WRAPPERS = {"timeout": 1, "busybox": 0, "exec": 0, "env": 0, "nice": 0, "command": 0}
WGET_ARGS = set("OoTtUPYe") | {"--output-document", "--timeout", "--tries", "--user-agent", "--header", "-O", "--post-data"}
CURL_ARGS = set("oHmXAudewrEKx") | {"--max-time", "--connect-timeout", "--header", "--output", "--request", "--user-agent",
                                    "--data", "--write-out", "--retry", "--resolve", "--user", "--cacert", "--cert", "--proxy"}
NC_ARGS = set("wispqWI")


@dataclass(frozen=True)
class NetworkHealthcheck:
    tool: str
    mode: str          # http | tcp
    host: str
    port: int
    path: str = "/"
    host_header: str = ""
    command: str = ""  # the simple command it came from, for people

    @property
    def target(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}" if self.mode == "http" else f"{self.host}:{self.port}"


def command_text(test: list[str]) -> str:
    if not test:
        return ""
    if test[0] == "CMD-SHELL":
        return " ".join(test[1:])
    return shlex.join(test[1:] if test[0] == "CMD" else test)


def simple_commands(test: list[str]) -> list[list[str]]:
    """The simple commands of a health check (a shell line split at ; && || | and newlines)."""
    if not test or test[0] == "NONE":
        return []
    if test[0] != "CMD-SHELL":
        argv = test[1:] if test[0] == "CMD" else test
        if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash", "ash") and argv[1] == "-c":
            return simple_commands(["CMD-SHELL", argv[2]])
        return [list(argv)]
    lexer = shlex.shlex(" ".join(test[1:]).replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    try:
        for tok in lexer:
            if tok and set(tok) <= set("();<>|&"):
                out.append([])
            else:
                out[-1].append(tok)
    except ValueError:  # unbalanced quotes: not a line we can read
        return []
    return [c for c in out if c]


def _unwrap(argv: list[str]) -> list[str]:
    while argv:
        if "=" in argv[0] and not argv[0].startswith(("-", "/")):  # VAR=value before the command
            argv = argv[1:]
            continue
        name = os.path.basename(argv[0])
        if name not in WRAPPERS:
            return argv
        argv = argv[1:]
        while argv and argv[0].startswith("-"):  # timeout -s KILL 3 ...
            argv = argv[2:] if argv[0] in ("-s", "-k", "--signal", "--kill-after") else argv[1:]
        argv = argv[WRAPPERS[name]:]
    return argv


def _positionals(args: list[str], takes: set[str]) -> tuple[list[str], dict[str, str]]:
    """Positional words and option values (short options may be bundled: -qO- is -q -O -)."""
    pos, opts, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a == "--":
            pos += args[i + 1:]
            break
        if a.startswith("--"):
            key, eq, val = a.partition("=")
            if not eq and key in takes and i + 1 < len(args):
                val = args[i + 1]
                i += 1
            opts[key] = val
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                if ch in takes:
                    val = a[j + 1:]
                    if not val and i + 1 < len(args):
                        val = args[i + 1]
                        i += 1
                    opts["-" + ch] = val
                    break
                opts["-" + ch] = ""
                j += 1
        else:
            pos.append(a)
        i += 1
    return pos, opts


def _url(text: str) -> tuple[str, int, str] | None:
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        return None
    try:
        port = parts.port or 80
    except ValueError:
        return None
    return parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def parse(test: list[str]) -> NetworkHealthcheck | None:
    """The first wget/curl/nc of the check that names a host and a port, or None."""
    for argv in simple_commands(test):
        argv = _unwrap(argv)
        if not argv:
            continue
        tool = os.path.basename(argv[0])
        if tool == "wget":
            pos, _ = _positionals(argv[1:], WGET_ARGS)
            host_header = ""
        elif tool == "curl":
            pos, opts = _positionals(argv[1:], CURL_ARGS)
            header = opts.get("-H") or opts.get("--header") or ""
            host_header = header.split(":", 1)[1].strip() if header.lower().startswith("host:") else ""
        elif tool in ("nc", "netcat"):
            pos, _ = _positionals(argv[1:], NC_ARGS)
            if len(pos) >= 2 and pos[1].isdigit() and 1 <= int(pos[1]) <= 65535:
                return NetworkHealthcheck(tool, "tcp", pos[0], int(pos[1]), command=shlex.join(argv))
            continue
        else:
            continue
        for word in pos:
            u = _url(word)
            if u:
                return NetworkHealthcheck(tool, "http", u[0], u[1], u[2], host_header, shlex.join(argv))
    return None
