"""Plain output helpers (tables like Docker's, JSON). rich is imported only where colour helps."""
import json
import sys


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    for row in [headers, *rows]:
        print("   ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def listing(rows: list[dict], columns: list[tuple[str, str]], *, quiet: bool = False, as_json: bool = False) -> None:
    """A `ls`-style command's output: ids only (-q), one JSON object per line, or a table of
    (header, key) columns."""
    if quiet:
        for r in rows:
            print(r["ID"])
    elif as_json:
        json_lines(rows)
    else:
        table([h for h, _ in columns], [[r[k] for _, k in columns] for r in rows])


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=4)
    sys.stdout.write("\n")


def json_lines(items) -> None:
    for item in items:
        print(json.dumps(item))


def for_each(refs, lookup, action) -> None:
    """Look up and act on each object; like Docker, report errors per object, print the names that
    worked, and exit 1 at the end if any failed."""
    from runtime.errors import NetdiagError, PermissionDenied

    failed = False
    for ref in refs:
        try:
            action(lookup(ref))
            print(ref)
        except PermissionDenied:  # the same for every object: say it once, with its own exit code
            raise
        except NetdiagError as e:
            print(f"netdiag: error: {e}", file=sys.stderr)
            failed = True
    if failed:
        raise SystemExit(1)
