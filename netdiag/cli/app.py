"""The typer application every command module registers on (imported only when a command needs typer)."""
import typer

app = typer.Typer(
    name="netdiag",
    help="A container runtime with Docker's commands, and the network diagnostics it deserves.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    suggest_commands=False,  # click says "Did you mean" itself: typer would say it a second time
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from netdiag import __version__

        print(f"netdiag version {__version__}")
        raise typer.Exit(0)


@app.callback()
def _group(version: bool = typer.Option(False, "-v", "--version", callback=_version, is_eager=True,
                                        help="Print the version and exit (like docker --version)")) -> None:
    """A callback keeps netdiag a command group even when only one command's module is loaded."""
