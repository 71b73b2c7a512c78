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


def _register() -> None:
    from . import containers, images, system  # noqa: F401  (each registers its commands)


def main() -> None:
    _register()
    try:
        app(standalone_mode=False)
    except NetdiagError as e:
        print(f"netdiag: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and aborts
        import click

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise
