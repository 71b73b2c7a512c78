"""`netdiag run`, the hottest command, parsed without typer: importing typer and click costs about
40 ms, a third of a container's whole start. The options are declared once, in OPTIONS; typer only
lists the command in `netdiag --help` and hands its arguments over (see containers.py).

`fast_parse` reads the command lines people and scripts type (no argparse: its import, gettext's
and building the parser cost ~10 ms more); anything it does not fully understand (--help, an
abbreviated or unknown option, a value that looks like an option, a bad number) goes to the
argparse parser, whose answers and errors stay the reference (tests/unit/test_startup_imports.py
checks the two agree)."""
from __future__ import annotations

import os
import sys

HELP = "Create and start a container (like `docker run`)."

# dest, flags, kind (flag | value | list | int | float), default, help
OPTIONS = [
    ("detach", ("-d", "--detach"), "flag", False, "Run in the background and print the container id"),
    ("rm", ("--rm",), "flag", False, "Remove the container when it exits"),
    ("name", ("--name",), "value", None, "Name the container (unique)"),
    ("env", ("-e", "--env"), "list", [], "Set an environment variable KEY=VALUE (repeatable)"),
    ("workdir", ("-w", "--workdir"), "value", None, "Working directory inside the container"),
    ("hostname", ("-h", "--hostname"), "value", None, "Container hostname"),
    ("user", ("-u", "--user"), "value", None, "User name or uid[:group]"),
    ("entrypoint", ("--entrypoint",), "value", None, "Override the image's ENTRYPOINT"),
    ("memory", ("-m", "--memory"), "value", None, "Memory limit, e.g. 64m"),
    ("cpus", ("--cpus",), "value", None, "CPU limit, e.g. 0.5"),
    ("pids_limit", ("--pids-limit",), "int", None, "Process limit"),
    ("network", ("--network", "--net"), "value", "bridge", "Network: bridge (default), a user-defined network, host, none, or container:NAME (share its namespace)"),
    ("publish", ("-p", "--publish"), "list", [], "Publish [HOSTIP:][HOSTPORT:]PORT[/udp], ranges allowed (repeatable)"),
    ("publish_all", ("-P", "--publish-all"), "flag", False, "Publish every EXPOSEd port to a free host port"),
    ("ip", ("--ip",), "value", None, "Static IPv4 address on the network"),
    ("network_alias", ("--network-alias",), "list", [], "Extra DNS name on a user-defined network (repeatable)"),
    ("volume", ("-v", "--volume"), "list", [], "Bind a host path or a named volume: SRC:DEST[:ro] (repeatable)"),
    ("restart", ("--restart",), "value", "no", "Restart policy: no, always, unless-stopped, on-failure[:MAX-RETRIES]"),
    ("dns", ("--dns",), "list", [], "DNS server for the container's resolv.conf (repeatable)"),
    ("label", ("-l", "--label"), "list", [], "Set a label KEY[=VALUE] (repeatable; `ps --filter label=KEY` finds it)"),
    ("interactive", ("-i", "--interactive"), "flag", False, "Keep stdin open"),
    ("tty", ("-t", "--tty"), "flag", False, "Keep stdin open without -i, as a terminal would (run -dt keeps a shell running); stdio is passed through (exec -t gives a pty)"),
    ("health_cmd", ("--health-cmd",), "value", None, "Health check command (run with /bin/sh -c)"),
    ("health_interval", ("--health-interval",), "value", "30s", "Time between health checks (Docker's durations: 5s, 500ms, 1m)"),
    ("health_timeout", ("--health-timeout",), "value", "30s", "Time before a check counts as failed (e.g. 3s)"),
    ("health_retries", ("--health-retries",), "int", 3, "Failures in a row before unhealthy"),
    ("cap_add", ("--cap-add",), "list", [], "Add a Linux capability, e.g. NET_ADMIN, or ALL (repeatable)"),
    ("cap_drop", ("--cap-drop",), "list", [], "Drop a Linux capability, or ALL (repeatable)"),
    ("privileged", ("--privileged",), "flag", False, "All capabilities and devices, no seccomp, no masked /proc paths"),
    ("security_opt", ("--security-opt",), "list", [],
     "seccomp=unconfined|FILE, no-new-privileges[=true|false], systempaths=unconfined (repeatable)"),
    ("add_host", ("--add-host",), "list", [], "Add HOST:IP to the container's /etc/hosts (repeatable)"),
    ("expose", ("--expose",), "list", [], "Expose PORT[-PORT][/PROTO] without publishing it (metadata, repeatable)"),
    ("tmpfs", ("--tmpfs",), "list", [], "Mount a tmpfs at PATH[:size=64m,mode=1777,...] (repeatable)"),
    ("read_only", ("--read-only",), "flag", False, "Mount the container's root read-only"),
    ("sysctl", ("--sysctl",), "list", [], "Set a net.* sysctl KEY=VALUE in the container's network namespace (repeatable)"),
    ("init", ("--init",), "flag", False, "Run an init as PID 1 that forwards signals to the command and reaps orphans"),
    ("stop_signal", ("--stop-signal",), "value", None, "Signal that stops the container (default: the image's, else SIGTERM)"),
    ("stop_timeout", ("--stop-timeout",), "int", None, "Seconds between the stop signal and SIGKILL (default 10)"),
    ("ulimit", ("--ulimit",), "list", [], "Resource limit NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable)"),
]


# Docker's exit codes for `run`: 125 when run itself failed (bad flags, unknown image, a network
# that does not exist, the container could not be made), else the container's own (126/127 when
# its command cannot be invoked or is not found)
RUN_FAILED = 125


def parser():
    """The argparse parser: the reference for every command line, and the one that explains errors."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):
            self.print_usage(sys.stderr)
            print(f"netdiag run: error: {message}\nSee 'netdiag run --help'.", file=sys.stderr)
            sys.exit(RUN_FAILED)

    p = _Parser(prog="netdiag run", description=HELP, add_help=False,
                                usage="netdiag run [OPTIONS] IMAGE [COMMAND [ARG...]]")
    p.add_argument("--help", action="help", help="Show this message and exit")
    for dest, flags, kind, default, text in OPTIONS:
        if kind == "flag":
            p.add_argument(*flags, dest=dest, action="store_true", default=default, help=text)
        elif kind == "list":
            p.add_argument(*flags, dest=dest, action="append", default=list(default), metavar="VALUE", help=text)
        else:
            typ = {"int": int, "float": float}.get(kind, str)
            p.add_argument(*flags, dest=dest, type=typ, default=default, metavar=kind.upper() if kind != "value" else "VALUE", help=text)
    p.add_argument("image", help="Image to run, e.g. busybox")
    p.add_argument("command", nargs=argparse.REMAINDER, help="Command and arguments (default: the image's CMD)")
    return p


_BY_FLAG = {flag: (dest, kind) for dest, flags, kind, _default, _help in OPTIONS for flag in flags}
_CONVERT = {"int": int, "float": float}


def fast_parse(argv: list[str]):
    """The parsed options as argparse would give them, or None when argparse should read `argv`."""
    from types import SimpleNamespace

    opts = {dest: (list(default) if kind == "list" else default) for dest, _flags, kind, default, _help in OPTIONS}

    def take(flag: str, value: str | None) -> bool:
        dest, kind = _BY_FLAG[flag]
        if kind == "flag":
            if value is not None:
                return False
            opts[dest] = True
            return True
        if value is None or value.startswith("-"):  # argparse's own reading of such values differs
            return False
        if kind == "list":
            opts[dest].append(value)
        else:
            try:
                opts[dest] = _CONVERT[kind](value) if kind in _CONVERT else value
            except ValueError:
                return False
        return True

    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            if "--" in argv[i + 1:]:
                return None  # argparse drops a "--" from the command
            return SimpleNamespace(**opts, image=arg, command=argv[i + 1:])
        i += 1
        flag, eq, value = arg.partition("=")
        if arg.startswith("--") and eq and flag in _BY_FLAG:  # --name=web
            if not take(flag, value):
                return None
            continue
        if arg in _BY_FLAG:
            if _BY_FLAG[arg][1] == "flag":
                take(arg, None)
                continue
            if i == len(argv) or not take(arg, argv[i]):
                return None
            i += 1
            continue
        if arg.startswith("--") or len(arg) < 3:
            return None  # --help, an abbreviation, an unknown option
        # short options together: -dit, or -eVALUE
        if _BY_FLAG.get(arg[:2], ("", "flag"))[1] != "flag":
            if not take(arg[:2], arg[2:]):
                return None
            continue
        if not all(_BY_FLAG.get(f"-{ch}", ("", ""))[1] == "flag" for ch in arg[1:]):
            return None
        for ch in arg[1:]:
            take(f"-{ch}", None)
    return None  # no image: argparse says so


def _ulimit(text: str) -> dict:
    name, _, limits = text.partition("=")
    soft, _, hard = limits.partition(":")
    return {"Name": name, "Soft": soft, "Hard": hard or soft}


def main(argv: list[str]) -> int:
    a = fast_parse(argv) or parser().parse_args(argv)
    from runtime import validate
    from runtime.api import containers
    from runtime.errors import NetdiagError

    try:
        c, status = containers.run(
            a.image, a.command or [], name=a.name, detach=a.detach, interactive=a.interactive,
            entrypoint=a.entrypoint, env=a.env, workdir=a.workdir, hostname=a.hostname,
            user=a.user, network=a.network, memory=a.memory, cpus=a.cpus, pids_limit=a.pids_limit, auto_remove=a.rm,
            publish=a.publish, publish_all=a.publish_all, ip=a.ip, aliases=a.network_alias, dns=a.dns,
            health_cmd=a.health_cmd, health_interval=validate.duration(a.health_interval, "--health-interval"),
            health_timeout=validate.duration(a.health_timeout, "--health-timeout"),
            health_retries=a.health_retries, cap_add=a.cap_add, cap_drop=a.cap_drop, privileged=a.privileged,
            security_opt=a.security_opt, volumes=a.volume, restart=a.restart, labels=dict(text.partition("=")[::2] for text in a.label),
            tty=a.tty, extra_hosts=a.add_host, expose=a.expose, tmpfs=a.tmpfs, read_only=a.read_only, init=a.init,
            sysctls=dict(text.partition("=")[::2] for text in a.sysctl), stop_signal=a.stop_signal, stop_timeout=a.stop_timeout,
            ulimits=[_ulimit(text) for text in a.ulimit],
        )
    except NetdiagError as e:
        print(f"netdiag: error: {e}", file=sys.stderr)
        return e.exit_code if e.exit_code in (126, 127) else RUN_FAILED  # the command could not be invoked / found
    if a.detach:
        os.close(status)
        print(c.id)
        return 0
    sys.stdout.flush()
    return containers.wait_exit(status, c)
