"""The typer application every command module registers on (imported only when a command needs typer)."""
import typer

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
