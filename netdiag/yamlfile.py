"""YAML documents that people write (scenario files, check files), loaded with the line of every
value and validated against a JSON Schema, so a mistake is reported as FILE:LINE, the field, and
what was expected. Pure: reads the file it is given, nothing else."""
from __future__ import annotations

import json
from pathlib import Path

from runtime import bounded
from runtime.errors import InvalidArgument


class Document:
    """The data of a YAML file and where each value stands in it."""

    def __init__(self, path: Path, data, lines: dict[tuple, int]):
        self.path, self.data, self._lines = path, data, lines

    def line(self, where: tuple) -> int | None:
        """The line of the value at `where` (a path of keys and indexes), or of its nearest parent."""
        where = tuple(where)
        while where not in self._lines and where:
            where = where[:-1]
        return self._lines.get(where)

    def error(self, where: tuple, what: str, fix: str = "") -> InvalidArgument:
        field = ".".join(str(p) for p in where) or "(the document)"
        line = self.line(where)
        return InvalidArgument(f"{self.path}:{line or 1}: {field}: {what}", "", fix)


def load(path: str | Path) -> Document:
    """Parse `path` (bounded: see runtime.bounded) keeping the line of every mapping value and list item."""
    path = Path(path)
    root = bounded.compose_yaml(bounded.read_text(path, bounded.MAX_YAML), str(path))
    return Document(path, bounded.yaml_data(root, str(path)), bounded.node_lines(root))


def validate(doc: Document, schema: dict) -> None:
    """Raise InvalidArgument naming FILE:LINE and the field of the first schema violation (the
    deepest one, which is the most precise)."""
    import jsonschema

    from .schemas import message

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc.data),
                    key=lambda e: (-len(e.absolute_path), e.message))
    if errors:
        e = errors[0]
        what = message(e)
        raise doc.error(tuple(e.absolute_path), what, f"see {e.schema.get('description') or 'the file format in the README'}"
                        if isinstance(e.schema, dict) and e.schema.get("description") else "see the file format in the README")


def schema(name: str) -> dict:
    """A schema shipped in netdiag/schemas."""
    from .schemas import path

    return json.loads(path(name).read_text())
