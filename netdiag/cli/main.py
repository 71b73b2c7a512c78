"""The one CLI. Each command group lives in its own module and registers itself on `app`.

Heavy modules (scapy, pyroute2, rich tables) are imported inside commands, never here.
"""
import sys

import typer

from runtime.errors import NetdiagError

app = typer.Typer(
    name="netdiag",
    help="A container runtime with Docker's commands, and the network diagnostics it deserves.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _group() -> None:
    """A callback keeps netdiag a command group even when only one command's module is loaded."""


# Which module registers which top-level command: a command line imports (and typer converts)
# only its own module, which keeps every command's start-up short. `--help` alone loads them all.
_MODULES = {
    "containers": ("run", "ps", "exec", "logs", "stop", "kill", "rm", "start", "restart", "inspect"),
    "images": ("images", "image", "rmi", "import", "save", "load"),
    "build": ("build",),
    "network": ("network",),
    "system": ("system", "version", "demo"),
    "observe": ("snapshot", "topo"),
    "trace": ("trace",),
}


def _register(argv: list[str] | None = None) -> None:
    import importlib

    first = next((a for a in (argv or []) if not a.startswith("-")), None)
    wanted = [m for m, cmds in _MODULES.items() if first in cmds] or list(_MODULES)
    for module in wanted:
        importlib.import_module(f"{__package__}.{module}")


def main() -> None:
    _register(sys.argv[1:])
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code instead of exiting
        sys.exit(rc if isinstance(rc, int) else 0)
    except NetdiagError as e:
        print(f"netdiag: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click's usage errors (typer may vendor click, so no import of it)
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        raise
