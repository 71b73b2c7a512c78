"""Docker's `--format` templates: a pure subset of Go's text/template plus Docker's functions.

No maintained Python library implements Go's text/template (PyPI has only a CGo wrapper, 0.0.2),
so this module does, for what Docker users type:

- text and actions `{{ pipeline }}`, trim markers `{{- ... -}}`, comments `{{/* ... */}}`;
- operands: `.`, fields `.A.B.C` (on maps: keys; a key with dots or hyphens via `index`),
  variables `$`, `$x`, `$x.A`, literals ("..." with Go escapes, `raw`, numbers, true, false, nil),
  `(pipeline)` and `(pipeline).Field`;
- pipelines `a | f x` (the value is passed as the last argument), `$x := ...`, `$x = ...`;
- `if`/`else if`/`else`, `range` (lists, maps in key order, integers; `$v :=`, `$k, $v :=`,
  `else`, `break`, `continue`), `with`/`else`, `end`;
- Go's functions and, or, not, len, index, slice, print, printf, println, eq, ne, lt, le, gt, ge;
  Docker's json, join, split, lower, upper, title, pad, truncate.

Values print as Go's %v does: maps as `map[k:v]`, lists as `[a b]`, nil as `<nil>`, and a field
that is not there as `<no value>` (Go's default for maps, which is what Docker's inspect sees). A
`Fields` row (ps, images, network ls) is strict like Docker's formatter structs: an unknown field
is an error naming the fields there are. Not supported: define/template/block, methods, channels,
complex numbers, Docker's float64 rendering of JSON numbers (1e+06): numbers print as written.
Every error is a TemplateError (an InvalidArgument: exit 2) saying what, why and how to fix it.
"""
from __future__ import annotations

import re

from .gotemplate_funcs import FUNCS, NO_VALUE, Fields, TemplateError, kind_of, show, truth

__all__ = ["Fields", "TemplateError", "parse", "render", "show"]


# --- lexing an action ----------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[|(),])
""", re.X)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unquote(text: str) -> str:
    def one(m):
        s = m.group(1)
        if s[0] in "xuU":
            return chr(int(s[1:], 16))
        return _ESCAPES[s]
    try:
        return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", one, text[1:-1])
    except KeyError as e:
        raise TemplateError(f"Bad escape in {text}", f"\\{e.args[0]} is not one of Go's escapes",
                            r'use \t, \n, \", \\ or a `raw string`') from None


def _tokens(src: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise TemplateError(f"Bad template action {{{{{src}}}}}", f"unexpected {src[pos]!r} at {src[pos:pos + 10]!r}",
                                "actions hold fields (.Name), variables ($v), \"strings\", numbers and functions")
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


# --- parsing ----------------------------------------------------------------------------------
# Nodes are tuples: ("text", s) ("action", pipe) ("if"|"with"|"range", pipe, body, else_body)
# ("break",) ("continue",). A pipe is (decls, assign, commands); a command a list of operands:
# ("field", receiver|None, names) ("var", name, names) ("const", value) ("func", name) ("pipe", pipe, names)

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def parse(source: str) -> list:
    """The template's node tree; raises TemplateError on a syntax error."""
    parts, pos = [], 0
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if parts and parts[-1][0] == "trim":
            parts.pop()
            text = text.lstrip()
        parts.append(("text", text))
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            parts.append(("act", body))
        if m.group(3):
            parts.append(("trim",))
        pos = m.end()
    text = source[pos:]
    if parts and parts[-1][0] == "trim":
        parts.pop()
        text = text.lstrip()
    if "{{" in text:
        raise TemplateError("Unclosed action in the template", f"{text[text.index('{{'):][:30]!r} has no closing }}}}",
                            "close every {{ with }}")
    parts.append(("text", text))
    parts = [p for p in parts if p[0] != "trim"]
    nodes, rest, end = _block(parts, 0, top=True)
    return nodes


def _block(parts: list, i: int, top: bool = False):
    """Nodes up to an else/end (returned as the stopper) or, at top level, the end of the text."""
    nodes = []
    while i < len(parts):
        kind, body = parts[i]
        i += 1
        if kind == "text":
            if body:
                nodes.append(("text", body))
            continue
        word = body.split(None, 1)[0] if body else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"Unexpected {{{{{body}}}}} in the template", f"no if, range or with is open for its {word}",
                                    f"remove the {{{{{word}}}}} or open a block before it")
            return nodes, i, body
        if word in ("if", "with", "range"):
            node, i = _control(word, body[len(word):].strip(), parts, i)
            nodes.append(node)
        elif word in ("break", "continue") and body == word:
            nodes.append((word,))
        elif word in ("define", "template", "block"):
            raise TemplateError(f"{{{{{word}}}}} is not supported", "netdiag's templates have no named templates",
                                "write the text inline")
        elif not body:
            raise TemplateError("Empty action {{}} in the template", "an action needs a field, variable or function",
                                "remove it, or write e.g. {{.Name}}")
        else:
            nodes.append(("action", _pipe(_tokens(body), body)))
    if not top:
        raise TemplateError("Unclosed block in the template", "an if, range or with has no {{end}}", "add {{end}}")
    return nodes, i, None


def _control(word: str, rest: str, parts: list, i: int):
    if not rest:
        raise TemplateError(f"{{{{{word}}}}} without a value", f"{word} needs a pipeline to test", f"write e.g. {{{{{word} .Name}}}}")
    pipe = _pipe(_tokens(rest), rest)
    if word == "range" and len(pipe[0]) > 2:
        raise TemplateError(f"Too many variables in {{{{range {rest}}}}}", "range declares at most $key, $value", "use $k, $v :=")
    if word != "range" and len(pipe[0]) > 1:
        raise TemplateError(f"Too many variables in {{{{{word} {rest}}}}}", f"{word} declares one variable", "use $v :=")
    body, i, stop = _block(parts, i)
    else_body = []
    if stop != "end":
        after = stop[4:].strip()
        if after.startswith(("if ", "with ")) and word != "range":  # {{else if ...}}: a nested block sharing our end
            inner = after.split(None, 1)[0]
            node, i = _control(inner, after[len(inner):].strip(), parts, i)
            return (word, pipe, body, [node]), i
        if after:
            raise TemplateError(f"Bad {{{{{stop}}}}} in the template", "else takes nothing after it here", "write {{else}}")
        else_body, i, stop = _block(parts, i)
        if stop != "end":
            raise TemplateError(f"Unexpected {{{{{stop}}}}} in the template", f"the {word} block already had its else", "end it with {{end}}")
    return (word, pipe, body, else_body), i


def _pipe(toks: list, text: str):
    decls, assign = [], False
    k = next((j for j, t in enumerate(toks) if t[0] in ("decl", "assign")), None)
    if k is not None:
        names = toks[:k]
        if not names or any(t[0] != "var" and t != ("punct", ",") for t in names):
            raise TemplateError(f"Bad declaration in {{{{{text}}}}}", "only variables go left of := or =", "write e.g. {{$ip := .IPAddress}}")
        decls = [t[1] for t in names if t[0] == "var"]
        assign = toks[k][0] == "assign"
        toks = toks[k + 1:]
    cmds, cur, depth, groups = [], [], 0, []
    for t in toks:
        if t == ("punct", "(") :
            depth += 1
        elif t == ("punct", ")"):
            depth -= 1
            if depth < 0:
                raise TemplateError(f"Unbalanced ) in {{{{{text}}}}}", "it closes no (", "remove it")
        if t == ("punct", "|") and depth == 0:
            cmds.append(cur)
            cur = []
        else:
            cur.append(t)
    cmds.append(cur)
    if depth:
        raise TemplateError(f"Unclosed ( in {{{{{text}}}}}", "a ( has no )", "add the )")
    if any(not c for c in cmds):
        raise TemplateError(f"Empty command in {{{{{text}}}}}", "a | has nothing on one side", "write e.g. {{.Name | upper}}")
    return decls, assign, [_command(c, text) for c in cmds]


def _command(toks: list, text: str) -> list:
    args, i = [], 0
    while i < len(toks):
        kind, val = toks[i]
        i += 1
        if kind == "punct" and val == "(":
            depth, j = 1, i
            while depth:
                depth += {"(": 1, ")": -1}.get(toks[j][1], 0) if toks[j][0] == "punct" else 0
                j += 1
            inner, i = toks[i:j - 1], j
            names = []
            if i < len(toks) and toks[i][0] == "field" and toks[i][1] != ".":  # (index .M "k").Field
                names, i = toks[i][1].split(".")[1:], i + 1
            args.append(("pipe", _pipe(inner, text), names))
        elif kind == "field":
            args.append(("field", None, [] if val == "." else val.split(".")[1:]))
        elif kind == "var":
            name, *names = val.split(".")
            args.append(("var", name, names))
        elif kind in ("str", "raw"):
            args.append(("const", _unquote(val) if kind == "str" else val[1:-1]))
        elif kind == "char":
            args.append(("const", ord(_unquote(val))))
        elif kind == "num":
            clean = val.replace("_", "")
            args.append(("const", float(clean) if re.search(r"[.eE]", clean) and not clean.lower().startswith(("0x", "-0x", "+0x")) else int(clean, 0)))
        elif kind == "ident":
            consts = {"true": True, "false": False, "nil": None}
            if val in consts:
                args.append(("const", consts[val]))
            elif val in FUNCS:
                args.append(("func", val))
            else:
                raise TemplateError(f"Unknown function {val!r} in {{{{{text}}}}}", f"the functions are {', '.join(sorted(FUNCS))}",
                                    f"for a field write .{val}")
        else:
            raise TemplateError(f"Unexpected {val!r} in {{{{{text}}}}}", "it is not an operand", "check the action's syntax")
    if len(args) > 1 and args[0][0] != "func":
        raise TemplateError(f"Cannot give arguments to a non-function in {{{{{text}}}}}", "only functions take arguments",
                            "call a function, e.g. {{index .Labels \"key\"}}")
    return args


# --- executing --------------------------------------------------------------------------------

class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def render(source: str | list, data) -> str:
    """The template (text or parse()'s tree) executed on data."""
    nodes = parse(source) if isinstance(source, str) else source
    out: list[str] = []
    _run(nodes, data, [("$", data)], out)
    return "".join(out)


def _run(nodes, dot, vars_, out):
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            value = _pipeline(node[1], dot, vars_)
            if not node[1][0]:
                out.append(show(value))
        elif kind == "break":
            raise _Break
        elif kind == "continue":
            raise _Continue
        else:
            _, pipe, body, else_body = node
            mark = len(vars_)
            value = _pipeline(pipe, dot, vars_, declare=kind != "range")
            if kind == "range":
                _range(pipe, value, body, else_body, vars_, out)
            elif truth(value):
                _run(body, value if kind == "with" else dot, vars_, out)
            else:
                _run(else_body, dot, vars_, out)
            del vars_[mark:]


def _range(pipe, value, body, else_body, vars_, out):
    if value is None or value is NO_VALUE:
        items = []
    elif isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: (str(type(kv[0])), kv[0]))
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [(i, i) for i in range(value)]
    else:
        raise TemplateError(f"Cannot range over {show(value)!r}", f"it is a {kind_of(value)}, not a list or map",
                            "range over a list or a map, e.g. {{range $k, $v := .NetworkSettings.Networks}}")
    if not items:
        _run(else_body, None, vars_, out)
        return
    decls, mark = pipe[0], len(vars_)
    for key, elem in items:
        del vars_[mark:]
        if len(decls) == 2:
            vars_ += [(decls[0], key), (decls[1], elem)]
        elif decls:
            vars_.append((decls[0], elem))
        try:
            _run(body, elem, vars_, out)
        except _Continue:
            continue
        except _Break:
            break


def _pipeline(pipe, dot, vars_, declare=True):
    decls, assign, cmds = pipe
    value, piped = None, False
    for cmd in cmds:
        value = _command_value(cmd, dot, vars_, value if piped else _NOARG)
        piped = True
    if decls and declare:
        if assign:
            for i in range(len(vars_) - 1, -1, -1):
                if vars_[i][0] == decls[0]:
                    vars_[i] = (decls[0], value)
                    break
            else:
                raise TemplateError(f"Undefined variable {decls[0]}", "= assigns to a variable declared before", f"declare it with {decls[0]} :=")
        else:
            vars_.append((decls[0], value))
    return value


_NOARG = object()


def _command_value(cmd, dot, vars_, piped):
    head = cmd[0]
    if head[0] == "func" and head[1] in ("and", "or") and len(cmd) > 1:  # Go's stop at the first value that decides
        last = None
        for value in (_operand(a, dot, vars_) for a in cmd[1:]):
            last = value
            if truth(value) == (head[1] == "or"):
                return value
        return last if piped is _NOARG else piped
    if head[0] == "func":
        args = [_operand(a, dot, vars_) for a in cmd[1:]] + ([] if piped is _NOARG else [piped])
        try:
            return FUNCS[head[1]](*args)
        except TemplateError:
            raise
        except (TypeError, ValueError, IndexError, KeyError) as e:
            why = re.sub(r"^(<lambda>|_\w+)\(\)", head[1], str(e))
            raise TemplateError(f"Error calling {head[1]} with {', '.join(repr(show(a)) for a in args) or 'no arguments'}", why,
                                f"check {head[1]}'s arguments") from None
    if piped is not _NOARG:
        raise TemplateError("Cannot pipe a value into a field or variable", "only functions take piped values",
                            "pipe into a function, e.g. {{.Name | upper}}")
    return _operand(head, dot, vars_)


def _operand(arg, dot, vars_):
    kind = arg[0]
    if kind == "const":
        return arg[1]
    if kind == "func":  # a function named as an argument: called with no arguments
        return _command_value([arg], dot, vars_, _NOARG)
    if kind == "field":
        return _fields(dot, arg[2])
    if kind == "var":
        for name, value in reversed(vars_):
            if name == arg[1]:
                return _fields(value, arg[2])
        raise TemplateError(f"Undefined variable {arg[1]}", "it is not declared in this block", f"declare it with {{{{{arg[1]} := ...}}}}")
    return _fields(_pipeline(arg[1], dot, vars_), arg[2])


def _fields(value, names):
    for name in names:
        if value is None or value is NO_VALUE:
            return NO_VALUE
        if isinstance(value, Fields):
            if name not in value:
                raise TemplateError(f"Cannot evaluate field {name}", f"the fields are {', '.join('.' + k for k in value)}",
                                    "use one of them (field names are case-sensitive)")
            value = value[name]
        elif isinstance(value, dict):
            value = value.get(name, NO_VALUE)
        else:
            raise TemplateError(f"Cannot evaluate field {name} in {show(value)!r}", f"it is a {kind_of(value)}, which has no fields",
                                "take fields of a map, e.g. {{.NetworkSettings.Networks}}")
    return value
