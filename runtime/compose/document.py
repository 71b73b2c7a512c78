"""A compose file read as Docker Compose reads it: bounded YAML (runtime/bounded.py), variables
interpolated from the environment and the project's `.env`, then validated against the Compose
specification's own JSON schema (compose-spec.json, vendored: see compose-spec.SOURCE). Every
error says FILE:LINE: the field, what is wrong, and what to do (exit 2). Pure apart from reading
the files it is given."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import bounded
from ..errors import InvalidArgument

SCHEMA = Path(__file__).with_name("compose-spec.json")
SPEC = "https://compose-spec.io (the Compose file reference)"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR and $$ (a literal $)
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|"
                       r"\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bad>))")


@dataclass(frozen=True)
class Document:
    path: Path
    data: dict
    lines: dict
    environ: dict = field(default_factory=dict)  # what the file was interpolated from (the environment, then .env)

    def line(self, where: tuple) -> int:
        where = tuple(where)
        while where not in self.lines and where:
            where = where[:-1]
        return self.lines.get(where, 1)

    def error(self, where: tuple, what: str, fix: str = "") -> InvalidArgument:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".") or "(the file)"
        return InvalidArgument(f"{self.path}:{self.line(where)}: {field}: {what}", "", fix or f"see {SPEC}")


def load(path: str | os.PathLike, environ: dict | None = None) -> Document:
    """The compose file at `path`, interpolated and validated against the Compose schema."""
    path = Path(path)
    root = bounded.compose_yaml(bounded.read_text(path, bounded.MAX_YAML), str(path))
    lines = bounded.node_lines(root)
    data = bounded.yaml_data(root, str(path))
    doc = Document(path, data, lines)
    if not isinstance(data, dict):
        raise doc.error((), "a compose file is a mapping with a top-level services: key", "start from 'services:'")
    environ = dict(os.environ if environ is None else environ)
    env = {**dotenv(path.parent / ".env", environ), **environ}
    doc = Document(path, _interpolate(doc, data, env, ()), lines, env)
    _validate(doc)
    return doc


def dotenv(path: Path, environ: dict | None = None, *, keep_unset: bool = False) -> dict:
    """A .env or env_file as Compose reads it, {} when there is none: KEY=VALUE lines (`export `
    allowed, # comments; an unquoted value ends at ' #'), 'single' quotes literal, "double" quotes
    with escapes (\\n \\t \\" \\\\) and both unquoted and double-quoted values interpolated from the
    lines above and `environ`; quoted values may span lines. A bare KEY takes its value from
    `environ` (left out when unset, or kept as None with keep_unset)."""
    if not path.exists():
        return {}
    text = bounded.read_text(path, 1 << 20)
    env = dict(environ or {})
    out: dict = {}
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        line, n = lines[n].strip(), n + 1
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        where = f"{path}:{n}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise InvalidArgument(f"{where}: not a KEY=VALUE line", "", "write one variable per line as KEY=VALUE")
        if not eq:
            have = env.get(key)
            if have is not None or keep_unset:
                out[key] = have
            continue
        value = value.lstrip()
        quote = value[:1] if value[:1] in ("'", '"') else ""
        if quote:
            body = value[1:]
            while _closing(body, quote) < 0 and n < len(lines):  # a quoted value may span lines
                body, n = body + "\n" + lines[n], n + 1
            end = _closing(body, quote)
            if end < 0:
                raise InvalidArgument(f"{where}: {key}'s value has no closing {quote}", "", f"end the value with {quote}")
            value = body[:end]
            if quote == '"':
                value = _expand(_unescape(value), env, where)
        else:
            value = _expand(re.split(r"\s+#", value, maxsplit=1)[0].strip(), env, where)
        out[key] = env[key] = value
    return out


def _closing(body: str, quote: str) -> int:
    """Where the quote that ends `body` is (-1: not on this line); a double quote escaped by \\ is not."""
    i = 0
    while i < len(body):
        if quote == '"' and body[i] == "\\":
            i += 2
            continue
        if body[i] == quote:
            return i
        i += 1
    return -1


def _unescape(text: str) -> str:
    table = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}
    return re.sub(r"\\(.)", lambda m: table.get(m[1], "\\" + m[1]), text)


def _expand(text: str, env: dict, where: str) -> str:
    def fail(what: str, fix: str):
        return InvalidArgument(f"{where}: {what}", "", fix)

    # a '$' that starts no variable stays itself in an env file (a password, a price), as Compose keeps it
    return substitute(re.sub(r"\$(?![A-Za-z_{$])", "$$", text), env, fail)


def _interpolate(doc: Document, value, env: dict, where: tuple):
    if isinstance(value, dict):
        return {k: _interpolate(doc, v, env, where + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(doc, v, env, where + (i,)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    return substitute(value, env, lambda what, fix: doc.error(where, what, fix))


def substitute(text: str, env: dict, fail) -> str:
    """Compose's interpolation of `text`; fail(what, fix) makes the error for a bad or missing variable."""
    def one(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        if m["bad"] is not None:
            raise fail("a '$' that starts no variable", "write $$ for a literal $, or ${NAME} for a variable")
        name = m["plain"] or m["braced"]
        op, arg, have = m["op"], m["arg"] or "", env.get(name)
        unset = have is None or (op is not None and op.startswith(":") and have == "")
        if op in ("-", ":-"):
            return arg if unset else have
        if op in ("?", ":?") and unset:
            raise fail(f"variable {name} is required: {arg or 'it is not set'}", f"set {name} in the environment or .env")
        return have or ""

    return _VARIABLE.sub(one, text)


def _validate(doc: Document) -> None:
    import jsonschema
    from jsonschema.exceptions import best_match

    schema = json.loads(bounded.read_text(SCHEMA, bounded.MAX_JSON))
    error = best_match(jsonschema.Draft7Validator(schema).iter_errors(doc.data))
    if error is None:
        return
    where = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set((error.schema or {}).get("properties") or {})
        unknown = sorted(k for k in error.instance if k not in known and not str(k).startswith("x-"))
        if unknown:
            import difflib

            close = difflib.get_close_matches(str(unknown[0]), known, 1)
            raise doc.error(where + (unknown[0],), f"unknown key {bounded.excerpt(unknown[0])}",
                            f"did you mean {close[0]!r}" if close else f"remove it (see {SPEC})")
    raise doc.error(where, _message(error))


def _message(error) -> str:
    """jsonschema's message with the offending value cut to a short excerpt (it may be huge or secret)."""
    shown = repr(error.instance)
    text = error.message
    if len(shown) > bounded.EXCERPT:
        text = text.replace(shown, bounded.excerpt(error.instance))
    return text
