"""Plain output helpers (tables like Docker's, JSON). rich is imported only where colour helps."""
from __future__ import annotations

import json
import sys


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    for row in [headers, *rows]:
        print("   ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def listing(rows: list[dict], columns: list[tuple[str, str]], *, quiet: bool = False, as_json: bool = False,
            format_: str | None = None, headers: dict | None = None) -> None:
    """A `ls`-style command's output: ids only (-q), one JSON object per line, a Go template per
    row (--format, Docker's), or a table of (header, key) columns."""
    if quiet:
        for r in rows:
            print(r["ID"])
    elif as_json or format_ == "json":
        json_lines(rows)
    elif format_ and format_.strip() != "table":
        formatted_rows(rows, format_, {**{k: h for h, k in columns}, **(headers or {})})
    else:
        table([h for h, _ in columns], [[r[k] for _, k in columns] for r in rows])


def formatted_rows(rows: list[dict], format_: str, headers: dict) -> None:
    """Docker's `--format` for listings: `\\t` and `\\n` typed in the shell mean tab and newline,
    and a `table ` prefix adds a header row (the template run on the column names) and aligns the
    tab-separated columns as Docker's tabwriter does."""
    from .gotemplate import Fields, parse, render

    is_table = format_.startswith("table")
    text = format_[len("table"):] if is_table else format_
    nodes = parse(text.strip(" ").replace("\\t", "\t").replace("\\n", "\n"))
    keys = rows[0].keys() if rows else headers.keys()
    lines = [render(nodes, Fields({k: headers.get(k, k.upper()) for k in keys}))] if is_table else []
    lines += [render(nodes, Fields(r)) for r in rows]
    sys.stdout.write(tabwriter(lines) if is_table else "".join(line + "\n" for line in lines))


def tabwriter(lines: list[str], minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter as Docker sets it up (minwidth 10, padding 3, spaces): a tab ends a cell,
    and a column is as wide as its widest cell in each run of lines that have it."""
    cells = [part.split("\t") for text in lines for part in text.split("\n")]
    out: list[str] = []

    def block(widths: list[int], first: int, last: int) -> None:
        col, line = len(widths), first
        while line < last:
            if col >= len(cells[line]) - 1:
                line += 1
                continue
            write(widths, first, line)
            start = line
            width = minwidth
            while line < last and col < len(cells[line]) - 1:
                width = max(width, len(cells[line][col]) + padding)
                line += 1
            block(widths + [width], start, line)
            first = line
        write(widths, first, last)

    def write(widths: list[int], first: int, last: int) -> None:
        for row in cells[first:last]:
            out.append("".join(c.ljust(widths[j]) if j < len(widths) else c for j, c in enumerate(row)) + "\n")

    block([], 0, len(cells))
    return "".join(out)


def inspected(refs: list[str], lookup, format_: str | None) -> None:
    """`inspect`'s output: Docker's JSON array; with --format, the template run on each object, a
    line each ('json': the object as one line of JSON). Like Docker, the objects found are shown
    and each one not found is an error on stderr (exit 1 at the end)."""
    from runtime.errors import NotFound

    from .gotemplate import parse, render

    nodes = None if format_ is None else parse("{{json .}}" if format_ == "json" else format_)  # a bad template first
    objects, missing = [], []
    for ref in refs:
        try:
            objects.append(lookup(ref))
        except NotFound as e:
            missing.append(e)
    if nodes is None:
        print_json(objects)
    else:
        sys.stdout.write("".join(render(nodes, obj) + "\n" for obj in objects))
    for e in missing:
        print(f"netdiag: error: {e}", file=sys.stderr)
    if missing:
        raise SystemExit(1)


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
