"""The documents netdiag writes, versioned and described by JSON Schema files beside this module:
a snapshot of a host (snapshot.schema.json) and a diagnosis (trace.schema.json), and the
validation of a document against them. Pure."""
import os
from pathlib import Path

SNAPSHOT = "netdiag.snapshot/1"
DIR = Path(__file__).parent


def load(name: str) -> dict:
    import json

    return json.loads(path(name).read_text())


def validate(data, name: str, display: str, fix: str = "") -> None:
    """Raise InvalidArgument `DISPLAY: FIELD: what` for the first violation of schema `name` (the
    deepest: the most precise); a value is quoted only as a short excerpt."""
    if _fast(name)(data):  # valid: the common case, checked by compiled code (jsonschema took 8 s on 1.6 MB)
        return
    import jsonschema

    from runtime.errors import InvalidArgument

    errors = jsonschema.Draft202012Validator(load(name), format_checker=_formats()).iter_errors(data)
    best = min(_flat(errors), key=lambda e: (-len(e.absolute_path), _VAGUE.get(e.validator, 0), e.message), default=None)
    if best is not None:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path).lstrip(".")
        raise InvalidArgument(f"{display}: {_cut(field) or '(the document)'}: {message(best)}", "", fix)


_COMPILED: dict = {}


def _fast(name: str):
    """Schema `name` compiled to a Python function (fastjsonschema) that says only valid or not:
    jsonschema interprets the schema for every value, ~50x slower on a big snapshot. Only an
    invalid document goes on to jsonschema, for its precise message. The schemas use nothing
    beyond draft 7 but `$defs` (a plain JSON pointer to fastjsonschema), so they are compiled
    as draft 7; unit tests compare both validators' verdicts on the hostile fixtures."""
    if name not in _COMPILED:
        import ipaddress

        import fastjsonschema

        def check(parse):
            def ok(value) -> bool:
                try:
                    parse(value)
                    return True
                except ValueError:
                    return False
            return ok

        schema = {**load(name), "$schema": "http://json-schema.org/draft-07/schema#"}
        compiled = _compile(schema, {"ip-address": check(ipaddress.ip_address),
                                     "ip-network": check(lambda v: ipaddress.ip_network(v, strict=False))})

        def valid(data) -> bool:
            try:
                compiled(data)
                return True
            except fastjsonschema.JsonSchemaException:
                return False
        _COMPILED[name] = valid
    return _COMPILED[name]


def _compile(schema: dict, formats: dict):
    """fastjsonschema.compile, without the error messages' names: its code names every value it
    checks as `"...{data_key}".format(**locals())` before checking it, valid or not, and building
    that dict of locals per item was half the validation of a 500-container snapshot. Only the
    verdict is read from this validator (jsonschema words the message), so the names may stay
    unformatted. Generating and compiling that code took ~0.18 s of every `trace --snapshot`: the
    code object is kept beside the package's bytecode, as Python keeps .pyc files (and, like
    them, not written under PYTHONDONTWRITEBYTECODE)."""
    import marshal
    import re
    from functools import partial

    import fastjsonschema

    code, patterns, scope_name = _cached_code(schema, formats, fastjsonschema, marshal)
    scope = {"Decimal": __import__("decimal").Decimal, "re": re,
             "REGEX_PATTERNS": {k: re.compile(p, flags) for k, (p, flags) in patterns.items()},
             "JsonSchemaValueException": fastjsonschema.JsonSchemaValueException,
             "JsonSchemaValuesException": fastjsonschema.JsonSchemaValuesException}
    exec(code, scope)
    return partial(scope[scope_name], custom_formats=formats)


def _cached_code(schema: dict, formats: dict, fastjsonschema, marshal) -> tuple:
    """(code object, {name: (regex, flags)}, function name) for schema: from the cache file when
    it is there and readable, else generated (and stored when bytecode may be written)."""
    import hashlib
    import json
    import sys

    key = hashlib.sha256(f"{fastjsonschema.VERSION} {json.dumps(schema, sort_keys=True)}".encode()).hexdigest()[:16]
    cache = DIR / "__pycache__" / f"schema-{key}.{sys.implementation.cache_tag}.marshal"
    try:
        code, patterns, scope_name = marshal.loads(cache.read_bytes())
        return code, patterns, scope_name
    except (OSError, ValueError, EOFError, TypeError):
        pass
    resolver, generator = fastjsonschema._factory(schema, {}, formats)  # what compile() does, the code in hand
    regexes = generator.global_state["REGEX_PATTERNS"]
    code = compile(generator.func_code.replace(".format(**locals())", ""), f"<{cache.name}>", "exec")
    found = (code, {k: (r.pattern, r.flags) for k, r in regexes.items()}, resolver.get_scope_name())
    if not sys.dont_write_bytecode:
        try:
            cache.parent.mkdir(exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(marshal.dumps(found))
            tmp.replace(cache)  # whole or not at all: another process may be reading it
        except OSError:  # a read-only install: generated again next time
            pass
    return found


_VAGUE = {"type": 1, "const": 2, "anyOf": 3, "oneOf": 3}  # at the same depth, the more telling error first


def _flat(errors):
    """The errors and, for anyOf/oneOf, why each alternative failed (the deepest says most)."""
    for e in errors:
        yield e
        yield from _flat(e.context or [])


def _formats():
    """Formats the reasoning parses with ipaddress later: checked the same way here, first."""
    import ipaddress

    import jsonschema

    checker = jsonschema.FormatChecker()
    checker.checks("ip-address", raises=ValueError)(lambda v: not isinstance(v, str) or bool(ipaddress.ip_address(v)))
    checker.checks("ip-network", raises=ValueError)(lambda v: not isinstance(v, str) or bool(ipaddress.ip_network(v, strict=False)))
    return checker


def message(err) -> str:
    """A jsonschema error's message quoting at most an excerpt of the value (which may be huge)."""
    import json

    from runtime import bounded

    text = err.message
    for shown in (repr(err.instance), json.dumps(err.instance, default=str)):
        if len(shown) > bounded.EXCERPT and shown in text:
            text = text.replace(shown, bounded.excerpt(err.instance))
    return _cut(text, 4 * bounded.EXCERPT)


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def path(name: str) -> Path:
    """snapshot -> .../snapshot.schema.json"""
    return DIR / f"{name}.schema.json"
