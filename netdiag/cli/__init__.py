"""The one CLI, `netdiag`: one module per command group, each registering on the typer app (app.py);
`run` is parsed with argparse (run_cmd.py) because its start-up is measured. Commands parse
arguments, call the runtime or netdiag.diagnose, and print; they hold no logic of their own.
May import anything below it; heavy modules only inside the command that needs them."""
