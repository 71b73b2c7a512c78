"""`netdiag ps` without typer or click (their import is most of a cold `ps`): `parse` reads the
command lines a script or a user types, and `show` prints the listing. Whatever `parse` does not
fully understand (--help, an unknown option, a missing value) goes to the typer command in
containers.py, which calls the same `show`, so help and usage errors stay click's."""
from __future__ import annotations

import sys

PS_COLUMNS = [("CONTAINER ID", "ID"), ("IMAGE", "Image"), ("COMMAND", "Command"), ("CREATED", "RunningFor"),
              ("STATUS", "Status"), ("PORTS", "Ports"), ("NAMES", "Names")]
PS_HEADERS = {"CreatedAt": "CREATED AT", "State": "STATE", "Networks": "NETWORKS", "Labels": "LABELS"}  # Docker's

# the typer command's options (containers.ps): flag spellings -> keyword
_FLAGS = {"-a": "all_", "--all": "all_", "-q": "quiet", "--quiet": "quiet", "--json": "json_out"}
_VALUES = {"-f": "filters", "--filter": "filters", "--format": "format_"}


def parse(argv: list[str]) -> dict | None:
    """`show`'s keywords for `ps` arguments, or None when typer should read them."""
    opts: dict = {"all_": False, "quiet": False, "filters": [], "format_": None, "json_out": False}

    def put(flag: str, value: str) -> None:
        if _VALUES[flag] == "filters":
            opts["filters"].append(value)
        else:
            opts["format_"] = value

    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in _FLAGS:
            opts[_FLAGS[arg]] = True
        elif arg in _VALUES:
            if i == len(argv) or argv[i].startswith("-"):
                return None
            put(arg, argv[i])
            i += 1
        elif arg.startswith("--") and "=" in arg and arg.partition("=")[0] in _VALUES:
            put(*arg.split("=", 1))
        elif arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            # click's short options run together: -aq, or -fVALUE / -aqfVALUE (the rest is the value)
            for j, ch in enumerate(arg[1:], 1):
                if f"-{ch}" in _FLAGS:
                    opts[_FLAGS[f"-{ch}"]] = True
                elif f"-{ch}" in _VALUES and j + 1 < len(arg):
                    put(f"-{ch}", arg[j + 1:])
                    break
                else:
                    return None
        else:
            return None
    return opts


def show(all_: bool = False, quiet: bool = False, filters: list[str] = (), format_: str | None = None,
         json_out: bool = False) -> None:
    """List containers (like `docker ps`)."""
    from runtime.api import containers

    from .output import listing

    items = containers.listing(all_, list(filters))
    listing(items, PS_COLUMNS, quiet=quiet, as_json=json_out, format_=format_, headers=PS_HEADERS)
    for i in items:  # on stderr, so scripts reading the list still get only the list
        if "Error" in i:
            print(f"netdiag: warning: container {i['ID']} is dead: {i['Error']}. "
                  f"Remove it with 'netdiag rm -f {i['ID']}' or 'netdiag system prune'", file=sys.stderr)


def main(argv: list[str]) -> int | None:
    """The fast path: None when typer should take the command line instead."""
    opts = parse(argv)
    if opts is None:
        return None
    show(**opts)
    return 0
