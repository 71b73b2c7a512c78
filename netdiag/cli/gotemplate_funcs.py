"""Go's printing (%v) and the functions Docker's --format templates can call: Go's and, or, not,
len, index, slice, print, printf, println, eq, ne, lt, le, gt, ge, and Docker's json, join, split,
lower, upper, title, pad, truncate (cli/templates/templates.go). Pure; gotemplate.py runs them."""
from __future__ import annotations

import json
import re

from runtime.errors import InvalidArgument

NO_VALUE = type("NoValue", (), {"__repr__": lambda self: "<no value>", "__bool__": lambda self: False})()


class TemplateError(InvalidArgument):
    """A template that cannot be parsed or run (bad input: exit 2)."""


class Fields(dict):
    """A listing row: its fields are all there is (an unknown one is an error, like Docker's)."""


def kind_of(value) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "list", tuple: "list",
            type(None): "nil"}.get(type(value), "map" if isinstance(value, dict) else type(value).__name__)


def show(value) -> str:
    """Go's %v."""
    if value is NO_VALUE:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{show(k)}:{show(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(show(v) for v in value) + "]"
    return str(value)


def _go_float(f: float) -> str:
    """Go's %v of a float64: the shortest digits, in e-notation from 1e+06 or below 1e-04."""
    if f != f or f in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(f)]
    if f == 0:
        return "0"
    mant, _, e = repr(abs(f)).partition("e")
    whole, _, frac = mant.partition(".")
    if int(whole):
        exp = len(whole) - 1 + int(e or 0)
    else:
        exp = -(len(frac) - len(frac.lstrip("0"))) - 1 + int(e or 0)
    sign = "-" if f < 0 else ""
    if exp < -4 or exp >= 6:
        digits = (whole + frac).lstrip("0").rstrip("0") or "0"
        return f"{sign}{digits[0]}{'.' + digits[1:] if len(digits) > 1 else ''}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return sign + (mant[:-2] if mant.endswith(".0") else mant)


def truth(value) -> bool:
    if value is NO_VALUE or value is None:
        return False
    return bool(value)


def _eq(a, *others):
    if not others:
        raise TemplateError("eq needs two values", "it compares its first argument with the others", 'write e.g. {{if eq .State "running"}}')
    return any(_same(a, b) for b in others)


def _same(a, b):
    if isinstance(a, bool) != isinstance(b, bool) or (isinstance(a, str) != isinstance(b, str)):
        raise TemplateError(f"Incompatible types for comparison: {show(a)!r} and {show(b)!r}",
                            f"a {kind_of(a)} and a {kind_of(b)} cannot be compared", "compare values of one kind")
    return a == b


def _order(op):
    def compare(a, b):
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        if not (numbers or (isinstance(a, str) and isinstance(b, str))):
            raise TemplateError(f"Cannot order {show(a)!r} and {show(b)!r}", "only numbers with numbers and strings with strings",
                                'compare values of one kind, e.g. {{if gt (len .Ports) 0}}')
        return op(a, b)
    return compare


def _index(value, *keys):
    for key in keys:
        if isinstance(value, dict):  # a missing key gives the zero value: "" in Docker's string maps (Labels)
            value = value.get(key, "" if all(isinstance(v, str) for v in value.values()) else NO_VALUE)
        elif isinstance(value, (list, tuple, str)) and isinstance(key, int) and not isinstance(key, bool):
            if not -1 < key < len(value):
                raise TemplateError(f"Index {key} out of range", f"the list has {len(value)} items", "use an index from 0")
            value = value[key]
        elif value is None or value is NO_VALUE:  # like a nil map of Docker's types: nothing there
            return NO_VALUE
        else:
            raise TemplateError(f"Cannot index a {kind_of(value)} with {show(key)!r}", "index takes a map and a key, or a list and a number",
                                'write e.g. {{index .Config.Labels "com.example.key"}}')
    return value


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def _printf(fmt: str, *args) -> str:
    """Go's Printf for the common verbs: %s %v %d %q %x %X %o %b %f %e %g %t %c %%."""
    args, out, pos = list(args), [], 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if not args:
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args.pop(0)
        if verb in "sv":
            text = show(arg)
            if prec is not None and verb == "s":
                text = text[:int(prec)]
        elif verb == "q":
            text = (json.dumps(arg, ensure_ascii=False) if isinstance(arg, str) else show(arg))
        elif verb == "t":
            text = show(arg)
        elif verb in "dxXob" and isinstance(arg, int) and not isinstance(arg, bool):
            text = format(arg, verb)
        elif verb in "feEgG" and isinstance(arg, (int, float)) and not isinstance(arg, bool):
            text = format(float(arg), f".{6 if prec is None else prec}{verb}") if verb not in "gG" or prec else show(float(arg))
        elif verb == "c" and isinstance(arg, int):
            text = chr(arg)
        else:
            out.append(f"%!{verb}({kind_of(arg)}={show(arg)})")
            continue
        w = int(width) if width and width != "*" else 0
        text = text.ljust(w) if flags and "-" in flags else (text.rjust(w, "0") if flags and "0" in flags and verb in "dxXobfeEgG" else text.rjust(w))
        out.append(text)
    out.append(fmt[pos:])
    if args:
        out.append("%!(EXTRA " + ", ".join(f"{kind_of(a)}={show(a)}" for a in args) + ")")
    return "".join(out)


def _print(*args) -> str:
    """Go's Sprint: a space between operands when neither is a string."""
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(show(a))
    return "".join(out)


def _json(value) -> str:
    return json.dumps(None if value is NO_VALUE else value, ensure_ascii=False, separators=(",", ":"))


def _len(value) -> int:
    if isinstance(value, (str, list, tuple, dict)):
        return len(value)
    raise TemplateError(f"len of {show(value)!r}", f"a {kind_of(value)} has no length", "take len of a string, list or map")


def _slice(value, *bounds):
    return value[slice(*bounds)] if len(bounds) < 3 else value[bounds[0]:bounds[1]]


def _str(name):
    def check(value):
        if not isinstance(value, str):
            raise TemplateError(f"{name} takes a string", f"it got a {kind_of(value)}: {show(value)}", f"pass a string field to {name}")
        return value
    return check


FUNCS = {
    "and": lambda *a: next((x for x in a if not truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if truth(x)), a[-1]),
    "not": lambda a: not truth(a),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _print,
    "printf": _printf,
    "println": lambda *a: " ".join(show(x) for x in a) + "\n",
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _order(lambda a, b: a < b),
    "le": _order(lambda a, b: a <= b),
    "gt": _order(lambda a, b: a > b),
    "ge": _order(lambda a, b: a >= b),
    # Docker's (cli/templates/templates.go)
    "json": _json,
    "join": lambda items, sep: sep.join(show(x) for x in (items or [])),
    "split": lambda s, sep: _str("split")(s).split(sep),
    "lower": lambda s: _str("lower")(s).lower(),
    "upper": lambda s: _str("upper")(s).upper(),
    "title": lambda s: re.sub(r"(?<![^\W_])\w", lambda m: m.group().upper(), _str("title")(s)),
    "pad": lambda s, before, after: " " * before + s + " " * after if s else s,
    "truncate": lambda s, n: show(s)[:n],
}
