"""The one CLI. Each command group lives in its own module and registers itself on the typer app
(app.py); `run` is parsed without typer (run_cmd.py) because start-up time is measured.

Heavy modules (scapy, pyroute2, rich tables) are imported inside commands, never here.
"""
import faulthandler
import sys

from runtime.errors import NetdiagError

# Which module registers which top-level command: a command line imports (and typer converts)
# only its own module, which keeps every command's start-up short. `--help` alone loads them all.
_MODULES = {
    "containers": ("run", "ps", "exec", "logs", "stop", "kill", "rm", "start", "restart", "inspect"),
    "debug": ("debug",),
    "images": ("images", "image", "rmi", "import", "save", "load"),
    "build": ("build",),
    "registry": ("pull", "push", "tag", "login", "logout"),
    "network": ("network",),
    "cluster": ("cluster",),
    "system": ("system", "version", "demo"),
    "observe": ("snapshot", "topo"),
    "trace": ("trace",),
    "watch": ("watch",),
    "health": ("health", "explain"),
    "check": ("check",),
    "scenario": ("scenario",),
    "compose": ("compose",),
}


def _register(argv: list[str] | None = None) -> None:
    import importlib

    first = next((a for a in (argv or []) if not a.startswith("-")), None)
    wanted = [m for m, cmds in _MODULES.items() if first in cmds] or list(_MODULES)
    for module in wanted:
        importlib.import_module(f"{__package__}.{module}")


def _stopped_container(e: NetdiagError) -> NetdiagError:
    """A target that names one of netdiag's stopped containers is said to be stopped (`ps -a` lists
    it: "no such target" would be a lie), with what to do."""
    target = getattr(e, "target", "")
    if not target or ":" in target:
        return e
    try:
        from runtime.api import containers

        row = next((r for r in containers.listing(all_=True) if target in (r["Names"], r["ID"])), None)
    except (NetdiagError, OSError):
        return e
    if row is None or row["State"] == "running":
        return e
    from runtime.errors import InvalidArgument

    return InvalidArgument(f"Container {row['Names']} is not running", f"it is {row['Status'].lower()}; a stopped container "
                           "has no network namespace to trace from or to", f"start it with 'netdiag start {row['Names']}'")


def main() -> None:
    # a crash in a C library (libnftables, libseccomp, libc through ctypes) prints every thread's
    # Python stack on stderr, not a bare "exit -11"
    faulthandler.enable()
    try:
        if sys.argv[1:2] == ["run"]:  # the hot path: no typer, no click (see run_cmd.py)
            from .run_cmd import main as run_main

            sys.exit(run_main(sys.argv[2:]))
        if sys.argv[1:] in (["version"], ["--version"], ["-v"]):  # app.py's and system.py's answers, without typer
            from netdiag import __version__

            print(f"netdiag {'' if sys.argv[1] == 'version' else 'version '}{__version__}")
            sys.exit(0)
        if sys.argv[1:2] == ["ps"]:  # ps_cmd reads what scripts type; help and usage errors stay typer's
            from .ps_cmd import main as ps_main

            rc = ps_main(sys.argv[2:])
            if rc is not None:
                sys.exit(rc)
        if sys.argv[1:2] == ["pull"]:  # a pull of what is here is one request: no typer either (pull_cmd.py)
            from .pull_cmd import main as pull_main

            sys.exit(pull_main(sys.argv[2:]))
        _register(sys.argv[1:])
        from .app import app

        rc = app(standalone_mode=False)  # returns typer.Exit's code instead of exiting
        sys.exit(rc if isinstance(rc, int) else 0)
    except NetdiagError as e:
        e = _stopped_container(e)
        print(f"netdiag: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except OSError as e:  # a full disk met where no command named it (the runtime's own say what failed)
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from runtime.state import DiskFull

        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        print(f"netdiag: error: {DiskFull(f'finish netdiag {command}'.strip(), e.filename, cleaned=False)}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # click's usage errors (typer may vendor click, so no import of it)
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        raise
