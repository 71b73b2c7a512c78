"""The check file, read and validated before anything is probed (exit 2 otherwise).

YAML is composed first (the node tree keeps every value's line), then ${NAME} is substituted in
scalar text - so `port: ${port}` becomes the integer it spells, as if written there - and only
then are the values built and validated against schemas/checkfile.schema.json. Every problem is
reported as FILE:LINE: FIELD: what is wrong, all of them at once.

Variables, weakest first: an included file's `vars:`, the including file's `vars:`, the
environment, `--var NAME=VALUE`. `${NAME:-default}` has a default, `$$` is a literal `$`. A value
that is exactly one ${NAME} (quoted or not) takes the type its text spells: 8080 a number.
A variable's value may use other variables (`url: http://${host}:${port}`); a cycle is refused.
Includes are paths relative to the including file; a file already read is not read twice, a
cycle is refused. Every file is read through runtime.bounded (size, depth and aliases bounded,
regular files only), and an error quotes at most a short excerpt of a value.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field

from runtime import bounded
from runtime.errors import InvalidArgument

from ..schemas import path as schema_path

KINDS = ("reach", "http", "dns", "mtu", "latency", "listening", "published", "internal", "route", "no_listener", "lb",
         "command", "quiet")
PROBE_ONLY = frozenset({"http", "dns", "latency", "lb", "command", "quiet"})  # need a real answer: skipped on a snapshot
STATIC = frozenset({"listening", "published", "internal", "route", "no_listener"})  # the model alone
# reach and mtu: the trace pipeline live, its static path on a snapshot
DEFAULT_PROBE_TIMEOUT = 1.0
DEFAULT_WITHIN = 2.0
MAX_PROBLEMS = 20
MAX_VALUE = 64 << 10  # characters a value may grow to by substitution (a doubling chain of variables grows fast)
MAX_VAR_DEPTH = 16    # variables naming variables naming...: no real file needs more
TOP_KEYS = ("version", "vars", "include", "checks")
_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,40}$")  # a key worth quoting back (a typo of a known one)


class CheckFileError(InvalidArgument):
    """An invalid check file: every problem on its own line, each as FILE:LINE: FIELD: what."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Invalid check file", "", "")

    def render(self) -> str:
        more = len(self.problems) - MAX_PROBLEMS
        lines = self.problems[:MAX_PROBLEMS] + ([f"... and {more} more"] if more > 0 else [])
        return "invalid check file:\n  " + "\n  ".join(lines)


@dataclass(frozen=True)
class Check:
    name: str
    kind: str
    params: dict          # validated and normalised (durations in seconds, expect parsed)
    file: str             # as the user named it (includes: relative to the including file)
    line: int
    skip: str | None = None
    index: int = 0        # position in the run, from 0


@dataclass
class Suite:
    checks: list[Check] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def schema() -> dict:
    with open(schema_path("checkfile")) as f:
        return json.load(f)


def parse_var(text: str) -> tuple[str, str]:
    """--var NAME=VALUE"""
    name, sep, value = text.partition("=")
    if not sep or not _NAME.match(name):
        raise InvalidArgument(f"Invalid --var {text!r}", "it is NAME=VALUE, NAME made of letters, digits and _", "e.g. --var port=8080")
    return name, value


def load(paths: list[str], *, cli_vars: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> Suite:
    """Read, substitute, validate and normalise the check files (in order). Raises CheckFileError."""
    environ = dict(os.environ if environ is None else environ)
    suite, problems, seen = Suite(), [], set()
    for p in paths:
        files = _read_tree(p, p, [], seen, {**environ, **(cli_vars or {})}, problems)
        if files is None:
            continue
        merged, where = {}, {}
        for f in files:  # post-order: included files' vars are defaults for the includer's
            merged.update(f.vars)
            where.update(f.var_lines)
        overrides = {**environ, **(cli_vars or {})}
        values = _expand_vars({**merged, **overrides}, set(merged) - set(overrides), where, problems)
        for f in files:
            suite.files.append(f.display)
            _checks(f, values, suite, problems)
    if problems:  # an include's path is also a value of its file: the same problem may come twice
        raise CheckFileError(sorted(dict.fromkeys(problems), key=_position))
    return suite


def _position(problem: str) -> tuple:
    m = re.match(r"(.*?):(\d+): ", problem)
    return (m.group(1), int(m.group(2))) if m else (problem, 0)


# -- reading files ----------------------------------------------------------------------------------
@dataclass
class _File:
    display: str
    node: object
    vars: dict
    var_lines: dict  # name -> "FILE:LINE: " of its definition


def _read_tree(path: str, display: str, stack: list[str], seen: set, outer: dict, problems: list,
               where: str = "") -> list[_File] | None:
    """The file and everything it includes, included files first (post-order)."""
    import yaml

    real = os.path.realpath(path)
    if real in stack:
        chain = " -> ".join([*(os.path.basename(s) for s in stack[stack.index(real):]), os.path.basename(real)])
        problems.append(f"{where}include: include cycle {chain}")
        return None
    if real in seen:
        return []
    seen.add(real)
    try:
        text = bounded.read_text(path, bounded.MAX_YAML, display)
    except InvalidArgument as e:  # FILE: what (a missing file, /dev/zero, a FIFO, too large, not UTF-8)
        problems.append(f"{where}include: {_plain(e)}" if where else _plain(e))
        return None
    try:
        node = bounded.compose_yaml(text, display)
    except InvalidArgument as e:  # FILE:LINE: what (never a line of the file)
        problems.append(_plain(e))
        return None
    if node is None:
        problems.append(f"{display}:1: the file is empty (it holds a mapping with a checks: list)")
        return None
    if not isinstance(node, yaml.MappingNode):
        problems.append(f"{display}:{node.start_mark.line + 1}: the file must be a mapping (version, vars, include, checks)")
        return None
    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode) and isinstance(k.value, str)]
    if not set(keys) & set(TOP_KEYS):
        # an included /etc/shadow parses as a mapping of its lines: quote none of them, only a typo
        near = [f"{k!r} (did you mean {n[0]!r}?)" for k in keys if _WORD.match(k) and (n := difflib.get_close_matches(k, TOP_KEYS, 1))]
        problems.append(f"{display}:{node.start_mark.line + 1}: not a check file (it has none of {', '.join(TOP_KEYS)})"
                        + (f": {near[0]}" if near else ""))
        return None
    top = {_scalar(k): v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    own_vars, var_lines = {}, {}
    if "vars" in top and isinstance(top["vars"], yaml.MappingNode):
        loader = yaml.SafeLoader("")
        for k, v in top["vars"].value:
            if isinstance(v, yaml.ScalarNode) and v.tag.startswith("tag:yaml.org,2002:"):  # other tags: the schema says
                own_vars[_scalar(k)] = loader.construct_object(v)
                var_lines[_scalar(k)] = f"{display}:{k.start_mark.line + 1}: "
    out: list[_File] = []
    inc = top.get("include")
    if isinstance(inc, yaml.SequenceNode):
        used = {m.group(1) for item in inc.value if isinstance(item, yaml.ScalarNode) for m in _VAR.finditer(item.value) if m.group(1)}
        # only what the paths use: other variables may use variables of the files about to be included
        known = _expand_vars({**own_vars, **outer}, set(own_vars) - set(outer), var_lines, problems, used)
        for item in inc.value:
            if not isinstance(item, yaml.ScalarNode):
                continue  # the schema names it
            here = f"{display}:{item.start_mark.line + 1}: "
            rel = _subst(item.value, known, here, problems)
            if "${" in rel:
                continue
            base = os.path.dirname(path)
            child = _read_tree(os.path.join(base, rel), os.path.normpath(os.path.join(os.path.dirname(display), rel)),
                               [*stack, real], seen, known, problems, here)
            out += child or []
    out.append(_File(display, node, own_vars, var_lines))
    return out


def _scalar(node) -> str:
    return str(node.value)


# -- substitution and construction ----------------------------------------------------------------
def _subst(text: str, values: dict, here: str, problems: list) -> str:
    out, size, last = [], 0, 0
    for m in _VAR.finditer(text):
        name, default = m.group(1), m.group(2)
        if m.group(0) == "$$":
            piece = "$"
        elif name in values:
            v = values[name]
            piece = ("true" if v else "false") if isinstance(v, bool) else str(v)
        elif default is not None:
            piece = default
        else:
            problems.append(f"{here}${{{name}}} is not defined (set it under vars:, in the environment, or with --var {name}=VALUE)")
            piece = m.group(0)
        out += [text[last:m.start()], piece]
        size += m.start() - last + len(piece)
        last = m.end()
        if size > MAX_VALUE:
            problems.append(f"{here}the value grows past {MAX_VALUE} characters with its ${{VARS}} substituted")
            return text
    return "".join(out) + text[last:]


def _expand_vars(values: dict, expand: set, where: dict, problems: list, wanted=None) -> dict:
    """`values` with ${NAME} substituted in the values of the variables in `expand` (those of the
    files: the environment's and --var's are taken as given), or only in those `wanted` and what
    they use. A cycle is refused."""
    out, state = dict(values), {}

    def visit(name: str, chain: list[str]) -> None:
        v = out.get(name)
        if name not in expand or state.get(name) == "done" or not isinstance(v, str) or "$" not in v:
            return
        here = where.get(name, "")
        if state.get(name) == "busy":
            cycle = chain[chain.index(name):] + [name]
            problems.append(f"{here}vars: {name}: variable cycle {' -> '.join(cycle)}")
            return
        if len(chain) >= MAX_VAR_DEPTH:
            problems.append(f"{here}vars: {name}: variables refer to variables more than {MAX_VAR_DEPTH} deep")
            return
        state[name] = "busy"
        for m in _VAR.finditer(v):
            if m.group(1):
                visit(m.group(1), chain + [name])
        out[name] = _subst(v, out, here, problems)
        state[name] = "done"

    for name in sorted(expand if wanted is None else wanted):
        visit(name, [])
    return out


def _substituted(node, values: dict, display: str, problems: list, memo: dict):
    """A copy of the node tree with ${VARS} replaced in scalars; a plain scalar gets its type again
    from its new text (so ${port} can be an integer)."""
    import yaml

    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.ScalarNode):
        here = f"{display}:{node.start_mark.line + 1}: "
        value = _subst(node.value, values, here, problems) if "$" in node.value else node.value
        tag = node.tag
        style = node.style
        if value != node.value and (style is None or _VAR.fullmatch(node.value.strip())):
            # `port: ${port}` or "${port}" (quoted, as flow mappings need): the type its value spells
            tag, style = yaml.SafeLoader("").resolve(yaml.ScalarNode, value, (True, False)), None
        new = yaml.ScalarNode(tag, value, node.start_mark, node.end_mark, style)
    elif isinstance(node, yaml.SequenceNode):
        new = yaml.SequenceNode(node.tag, [], node.start_mark, node.end_mark, node.flow_style)
        memo[id(node)] = new
        new.value = [_substituted(v, values, display, problems, memo) for v in node.value]
    else:
        new = yaml.MappingNode(node.tag, [], node.start_mark, node.end_mark, node.flow_style)
        memo[id(node)] = new
        new.value = [(_substituted(k, values, display, problems, memo), _substituted(v, values, display, problems, memo))
                     for k, v in node.value]
    memo[id(node)] = new
    return new


def _build(node, path: tuple, lines: dict, loader, display: str, problems: list):
    """Python values from nodes, recording each value's line by its path."""
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        out = {}
        for k, v in node.value:
            key = loader.construct_object(k, deep=True)
            if not isinstance(key, str):
                problems.append(f"{display}:{k.start_mark.line + 1}: {_field(path)}: keys are words, not {bounded.excerpt(key)}")
                continue
            if key in out:
                problems.append(f"{display}:{k.start_mark.line + 1}: {_field(path + (key,))}: given twice")
            lines[path + (key,)] = k.start_mark.line + 1
            out[key] = _build(v, path + (key,), lines, loader, display, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), lines, loader, display, problems) for i, v in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:  # an unknown !tag: not quoted (it may be part of a secret file's line)
        problems.append(f"{display}:{node.start_mark.line + 1}: {_field(path)}: a value of an unknown type (a !tag?)")
        return None


def _field(path: tuple) -> str:
    out = ""
    for p in path:
        p = p if isinstance(p, int) or _WORD.match(str(p)) else bounded.excerpt(p, 40)
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top)"


def _checks(f: _File, values: dict, suite: Suite, problems: list) -> None:
    import yaml

    node = _substituted(f.node, values, f.display, problems, {})
    lines: dict = {}
    doc = _build(node, (), lines, yaml.SafeLoader(""), f.display, problems)
    found, bad = _validate(doc, lines, f.display)
    problems += found
    if not isinstance(doc, dict) or not isinstance(doc.get("checks"), list):
        return
    for i, raw in enumerate(doc["checks"]):
        if i in bad or "checks" in bad:
            continue
        line = lines.get(("checks", i), 0)
        kind = next(k for k in KINDS if k in raw)
        try:
            params = NORMALISE[kind](raw[kind])
        except InvalidArgument as e:
            sub = getattr(e, "field", None)
            at = lines.get(("checks", i, kind, sub), lines.get(("checks", i, kind), line)) if sub else lines.get(("checks", i, kind), line)
            problems.append(f"{f.display}:{at}: {_field(('checks', i, kind) + ((sub,) if sub else ()))}: {_plain(e)}")
            continue
        skip = raw.get("skip")
        suite.checks.append(Check(name=raw.get("name") or describe(kind, params), kind=kind, params=params, file=f.display,
                                  line=line, skip=(skip if isinstance(skip, str) else "skipped in the check file") if skip else None,
                                  index=len(suite.checks)))


def _plain(e: InvalidArgument) -> str:
    return ": ".join(p.rstrip(".") for p in (e.what, e.why) if p)


# -- schema validation with lines -----------------------------------------------------------------
def _validate(doc, lines: dict, display: str) -> tuple[list[str], set]:
    """The problems, and which checks (by index; "checks" for the whole list) have them."""
    import jsonschema

    sch = schema()
    validator = jsonschema.Draft202012Validator(sch)
    friendly = {id(sch["$defs"][k]): v for k, v in {
        "duration": "expected a duration: seconds (a number) or 500ms, 2s, 1m30s",
        "expect_reach": "expected reachable, blocked, or blocked for a reason: {blocked: CAUSE} (a cause code)",
        "ipv4": "expected an IPv4 address such as 10.0.0.5",
        "target": "expected a target: a container name or id, ns:NAME, pid:N, host or an IPv4 address",
    }.items()}
    friendly[id(sch["$defs"]["http"]["properties"]["status"])] = "expected a status: 200, 200-399, 2xx or a comma list of those"
    out, bad = [], set()
    for err in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        path = tuple(err.absolute_path)
        if path[:1] == ("checks",):
            bad.add(path[1] if len(path) > 1 else "checks")
        if isinstance(err.instance, str) and "${" in err.instance:
            continue  # an undefined variable, already named
        line = lines.get(path, 0)
        msg = _message(err, friendly)
        if id(err.schema) == id(sch["$defs"]["expect_reach"]):
            msg = _cause_message(err.instance) or msg
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            for key in extra:
                if not _WORD.match(key):  # not a typo of a known key: not quoted either
                    out.append(f"{display}:{lines.get(path + (key,), line)}: {_field(path)}: an unknown key that is not a word (not quoted)")
                    continue
                near = difflib.get_close_matches(key, list(err.schema.get("properties", {})), 1)
                out.append(f"{display}:{lines.get(path + (key,), line)}: {_field(path + (key,))}: unknown key"
                           + (f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(err.schema.get('properties', {}))})"))
            continue
        if err.validator == "oneOf" and "reach" in err.schema.get("properties", {}):
            have = [k for k in KINDS if isinstance(err.instance, dict) and k in err.instance]
            msg = (f"a check has exactly one of {', '.join(KINDS)}" + (f" (it has {', '.join(have)})" if have else " (it has none)"))
        out.append(f"{display}:{line}: {_field(path)}: {msg}")
    return out, bad


def _cause_message(value) -> str | None:
    """For {blocked: CAUSE} with an unknown code: which one, and the nearest known."""
    from ..reason.causes import CAUSES

    causes = value.get("blocked") if isinstance(value, dict) else None
    causes = [causes] if isinstance(causes, str) else causes if isinstance(causes, list) else []
    unknown = [c for c in causes if isinstance(c, str) and c not in CAUSES]
    if not unknown:
        return None
    near = difflib.get_close_matches(unknown[0], list(CAUSES), 1)
    return f"unknown cause {bounded.excerpt(unknown[0])}" + (f" (did you mean {near[0]}?)" if near else " (see netdiag/reason/causes.py)")


def _message(err, friendly: dict) -> str:
    if id(err.schema) in friendly:
        return f"{friendly[id(err.schema)]}, not {bounded.excerpt(err.instance)}"
    if err.validator == "enum" and len(err.validator_value) > 6:
        near = difflib.get_close_matches(str(err.instance), [str(v) for v in err.validator_value], 1)
        return f"{bounded.excerpt(err.instance)} is not a known value" + (f" (did you mean {near[0]}?)" if near else "")
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in (err.instance or {})]
        return "missing " + ", ".join(missing)
    from ..schemas import message

    return message(err)


# -- per kind: normalise (the schema checked the shapes; here what a schema cannot say) -------------
class _Bad(InvalidArgument):
    def __init__(self, field_name: str | None, what: str, why: str = ""):
        self.field = field_name
        super().__init__(what, why, "")


def _seconds(value, name: str) -> float:
    from runtime.validate import duration

    try:
        s = duration(value if isinstance(value, str) else str(value), name)
    except InvalidArgument as e:
        raise _Bad(name, e.what, e.why) from None
    if s > 300:
        raise _Bad(name, f"{bounded.excerpt(value)} is too long", "at most 300 seconds")
    return s


def _target(value: str, name: str) -> str:
    if value.startswith("pid:") and not value[4:].isdigit():
        raise _Bad(name, f"{bounded.excerpt(value)} is not a target", "pid:N takes a process id")
    if value.startswith("ns:") and not value[3:]:
        raise _Bad(name, f"{bounded.excerpt(value)} is not a target", "ns:NAME takes an ip netns name")
    return value


def _expect(value) -> dict:
    if value is None or value == "reachable":
        return {"state": "reachable", "causes": []}
    if value == "blocked":
        return {"state": "blocked", "causes": []}
    if isinstance(value, str):  # "blocked: CAUSE" (the schema checked the shape)
        cause = value.split(":", 1)[1].strip()
        from ..reason.causes import CAUSES

        if cause not in CAUSES:
            near = difflib.get_close_matches(cause, list(CAUSES), 1)
            raise _Bad("expect", f"unknown cause {bounded.excerpt(cause)}" + (f" (did you mean {near[0]}?)" if near else ""))
        return {"state": "blocked", "causes": [cause]}
    causes = value["blocked"]
    return {"state": "blocked", "causes": [causes] if isinstance(causes, str) else list(causes)}


def _reach(p: dict) -> dict:
    proto = p.get("proto", "tcp")
    if proto != "icmp" and "port" not in p:
        raise _Bad("port", f"a {proto} check needs a port", "add port: N, or use proto: icmp")
    if proto == "icmp" and "port" in p:
        raise _Bad("port", "icmp has no port", "drop port:, or use proto: tcp|udp")
    return {"from": _target(p["from"], "from"), "to": _target(p["to"], "to"), "proto": proto, "port": p.get("port", 0),
            "expect": _expect(p.get("expect")), "timeout": _seconds(p.get("timeout", DEFAULT_PROBE_TIMEOUT), "timeout")}


def _http(p: dict) -> dict:
    from ..health import spec as hspec

    within = _seconds(p.get("within", DEFAULT_WITHIN), "within")
    status = p.get("status")
    try:
        hs = hspec.parse(p["url"], host=p.get("host"), expect=str(status) if status is not None else None, timeout=within)
    except InvalidArgument as e:
        raise _Bad("status" if "expect" in e.what else "host" if "--host" in e.what else "url",
                   e.what.replace("--expect", "status").replace("--host", "host"), e.why) from None
    return {"from": _target(p["from"], "from"), "url": p["url"], "host": p.get("host"), "status": hspec.expect_text(hs.expect),
            "body_contains": p.get("body_contains"), "within": within}


def _dns(p: dict) -> dict:
    from ..health import spec as hspec

    try:
        hspec.check_host(p["name"], "name")
    except InvalidArgument as e:
        raise _Bad("name", e.what, e.why) from None
    address = p.get("address")
    if address is not None and not p.get("resolves", True):
        raise _Bad("address", "address: and resolves: false exclude each other", "a name that must not resolve has no address")
    return {"from": _target(p["from"], "from"), "name": p["name"], "resolves": p.get("resolves", True),
            "address": [address] if isinstance(address, str) else address, "within": _seconds(p.get("within", DEFAULT_WITHIN), "within")}


def _mtu(p: dict) -> dict:
    return {"from": _target(p["from"], "from"), "to": _target(p["to"], "to"), "size": p["size"],
            "timeout": _seconds(p.get("timeout", DEFAULT_PROBE_TIMEOUT), "timeout")}


def _latency(p: dict) -> dict:
    return {"from": _target(p["from"], "from"), "to": _target(p["to"], "to"), "port": p["port"],
            "below": _seconds(p["below"], "below"), "count": p.get("count", 5)}


def _listening(p: dict) -> dict:
    return {"target": _target(p["target"], "target"), "port": p["port"], "proto": p.get("proto", "tcp"),
            "address": p.get("address"), "expect": p.get("expect", True)}


def _published(p: dict) -> dict:
    return {"target": _target(p["target"], "target"), "port": p["port"], "proto": p.get("proto", "tcp"),
            "host_port": p.get("host_port"), "expect": p.get("expect", True)}


def _internal(p: dict) -> dict:
    return {"network": p["network"], "expect": p.get("expect", True)}


def _route(p: dict) -> dict:
    return {"in": _target(p["in"], "in"), "to": p["to"], "via": p.get("via"), "dev": p.get("dev"), "expect": p.get("expect", True)}


def _no_listener(p: dict) -> dict:
    address = p.get("address", "0.0.0.0")
    return {"port": p["port"], "address": address, "proto": p.get("proto", "tcp"),
            "targets": [_target(t, "targets") for t in p.get("targets") or []]}


def _lb(p: dict) -> dict:
    where = p["haproxy"]
    if where.startswith("/"):
        target, sock = None, where
    else:
        target, sock = _target(where, "haproxy"), None
    return {"target": target, "socket": sock, "backend": p.get("backend"), "servers": p.get("servers"), "up": p.get("up", True),
            "for": _seconds(p["for"], "for") if "for" in p else 0.0}


def _command(p: dict) -> dict:
    return {"run": [str(a) for a in p["run"]], "exit": p.get("exit", 0), "within": _seconds(p.get("within", 60), "within")}


def _quiet(p: dict) -> dict:
    listed = {k: [v] if isinstance(v, str) else list(v) for k, v in p.items() if k in ("container", "network", "ns", "reason")}
    for t in listed.get("container", []):
        _target(t, "container")
    return {"for": _seconds(p.get("for", 10), "for"), "containers": listed.get("container", []), "networks": listed.get("network", []),
            "namespaces": [n[3:] if n.startswith("ns:") else n for n in listed.get("ns", [])],  # ns: edge or ns: "ns:edge"
            "reasons": [r.upper() for r in listed.get("reason", [])]}


NORMALISE = {"command": _command, "quiet": _quiet, "reach": _reach, "http": _http, "dns": _dns, "mtu": _mtu, "latency": _latency, "listening": _listening,
             "published": _published, "internal": _internal, "route": _route, "no_listener": _no_listener, "lb": _lb}


def describe(kind: str, p: dict) -> str:
    """A check's default name: what it asserts."""
    if kind == "reach":
        e = p["expect"]
        want = "reachable" if e["state"] == "reachable" else "blocked" + (f" ({'|'.join(e['causes'])})" if e["causes"] else "")
        what = "icmp" if p["proto"] == "icmp" else f"{p['proto']}/{p['port']}"
        return f"{p['from']} -> {p['to']} {what} {want}"
    if kind == "http":
        return f"{p['from']} GET {p['url']} -> {p['status']}" + (f" containing {p['body_contains']!r}" if p["body_contains"] else "")
    if kind == "dns":
        if not p["resolves"]:
            return f"{p['name']} does not resolve from {p['from']}"
        return f"{p['name']} resolves from {p['from']}" + (f" to {' or '.join(p['address'])}" if p["address"] else "")
    if kind == "mtu":
        return f"{p['from']} -> {p['to']} carries {p['size']}-byte packets"
    if kind == "latency":
        return f"{p['from']} -> {p['to']}:{p['port']} handshake below {p['below'] * 1000:g} ms"
    if kind == "listening":
        return f"{p['target']} {'listens' if p['expect'] else 'does not listen'} on {p['address'] or '*'}:{p['port']}/{p['proto']}"
    if kind == "published":
        return (f"{p['target']} {'publishes' if p['expect'] else 'does not publish'} {p['port']}/{p['proto']}"
                + (f" on host port {p['host_port']}" if p["host_port"] else ""))
    if kind == "internal":
        return f"network {p['network']} is {'' if p['expect'] else 'not '}internal"
    if kind == "lb":
        which = ", ".join(p["servers"]) if p["servers"] else f"every server of {p['backend']}" if p["backend"] else "every server"
        return (f"HAProxy {p['target'] or p['socket']}: {which} {'UP' if p['up'] else 'not UP'}"
                + (f" for {p['for']:g}s" if p["for"] else ""))
    if kind == "command":
        return f"`{' '.join(p['run'])}` exits {p['exit']}"
    if kind == "quiet":
        where = [*p["containers"], *(f"network {n}" for n in p["networks"]), *(f"ns:{n}" for n in p["namespaces"])]
        return f"no failing flow for {p['for']:g}s " + (f"in {', '.join(where)}" if where else "on this host")
    if kind == "route":
        return (f"{p['in']} has {'a' if p['expect'] else 'no'} route to {p['to']}" + (f" via {p['via']}" if p["via"] else "")
                + (f" dev {p['dev']}" if p["dev"] else ""))
    return f"nothing listens on {p['address']}:{p['port']}/{p['proto']}" + (f" in {', '.join(p['targets'])}" if p["targets"] else " in any container")
