"""Parse the Dockerfile subset the image builder supports, the way Docker (BuildKit) reads it.

Pure: text in, list of `Instruction` out; the builder executes them. One stage only.

Per instruction, `args` is:
  FROM         (image, alias or None)              alias lower-cased, like Docker's stage names
  RUN/CMD/ENTRYPOINT  ("exec", [argv...]) or ("shell", "text")   never variable-expanded
  COPY/ADD     ((src, ...), dest)                  flags: {"chown": "user[:group]"}
  ENV/LABEL    ((key, value), ...)
  ARG          ((name, value or None), ...)        value = build arg, else default, else the
                                                   pre-FROM ARG of that name, else None (unset)
  WORKDIR      (path,)                             a relative path is left for the builder
  USER         (user, group or None)
  EXPOSE       ("80/tcp", ...)                     ranges (8000-8002) expanded, duplicates dropped
  HEALTHCHECK  ("NONE",) or ("CMD", ["CMD-SHELL", text] | ["CMD", argv...])
               flags: {"interval", "timeout", "start-period": nanoseconds, "retries": int},
               always all four; unset or 0 means Docker's default (30s, 30s, 0s, 3)

`$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}` (and `-`/`+` without the colon) are substituted
in FROM, COPY, ADD, ENV, LABEL, ARG, WORKDIR, USER, EXPOSE from the ARG/ENV values declared so far;
ENV wins over ARG. Quotes and the escape character are processed as Docker does.

`original` is the logical line (continuations joined, trimmed). It does not include ARG values,
so a build cache keyed on it must also key RUN on the ARG/ENV values in effect.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from fractions import Fraction

from ..errors import BuildError, InvalidArgument

_USAGE = {
    "FROM": "FROM IMAGE [AS NAME]",
    "ARG": "ARG NAME[=DEFAULT]",
    "ENV": 'ENV KEY=VALUE [KEY2="VALUE 2" ...]',
    "LABEL": 'LABEL KEY=VALUE [KEY2="VALUE 2" ...]',
    "RUN": 'RUN COMMAND, or RUN ["EXECUTABLE", "ARG", ...]',
    "CMD": 'CMD COMMAND, or CMD ["EXECUTABLE", "ARG", ...]',
    "ENTRYPOINT": 'ENTRYPOINT COMMAND, or ENTRYPOINT ["EXECUTABLE", "ARG", ...]',
    "COPY": "COPY [--chown=USER[:GROUP]] SRC... DEST",
    "ADD": "ADD [--chown=USER[:GROUP]] SRC... DEST",
    "WORKDIR": "WORKDIR PATH",
    "USER": "USER NAME[:GROUP]",
    "EXPOSE": "EXPOSE PORT[/tcp|/udp|/sctp] ...",
    "HEALTHCHECK": "HEALTHCHECK [--interval=30s --timeout=30s --start-period=0s --retries=3] CMD "
                   "COMMAND, or HEALTHCHECK NONE",
}
SUPPORTED = tuple(sorted(_USAGE))
_DOCKER_ONLY = ("MAINTAINER", "ONBUILD", "SHELL", "STOPSIGNAL", "VOLUME")
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")    # after a bare $; $1 is a (empty) positional
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_HEALTH_DEFAULTS = {"interval": 30 * 10**9, "timeout": 30 * 10**9, "start-period": 0, "retries": 3}


@dataclass(frozen=True)
class Instruction:
    line: int       # 1-based line where the instruction starts
    cmd: str        # upper-case instruction name
    args: tuple     # see the module docstring
    flags: dict     # flag name without "--" -> parsed value
    original: str   # the logical line as written, used as a build-cache key


class _Bad(Exception):
    """A problem in one instruction; parse() adds the file name and line."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what, self.fix = what, fix


# ---------------------------------------------------------------- words, quotes, substitution

def expand(word: str, env: dict, *, escape: str = "\\") -> str:
    """Process one word like Docker's ProcessWord: substitute variables from `env`, remove quotes
    and escape characters. Single-quoted text is literal; unset variables expand to ""."""
    try:
        return _lex(word, 0, env, escape, None)[0]
    except _Bad as e:
        raise InvalidArgument(f"cannot expand {word!r}", e.what, e.fix) from None


def _lex(s: str, i: int, env: dict, esc: str, stop: str | None) -> tuple[str, int]:
    """Process s[i:] up to an unquoted `stop` (consumed) or the end; return (text, next index)."""
    out, n = [], len(s)
    while i < n:
        c = s[i]
        if c == stop:
            return "".join(out), i + 1
        if c == esc:                      # escapes any character; a trailing one is dropped
            out.append(s[i + 1:i + 2])
            i += 2
        elif c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise _Bad("unterminated single quote", "Close the quote, or escape it with " + esc)
            out.append(s[i + 1:j])
            i = j + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise _Bad("unterminated double quote", "Close the quote, or escape it with " + esc)
                c = s[i]
                if c == '"':
                    i += 1
                    break
                if c == "$":
                    value, i = _dollar(s, i, env, esc)
                    out.append(value)
                elif c == esc and s[i + 1:i + 2] in ('"', "$", esc):
                    out.append(s[i + 1])
                    i += 2
                else:
                    out.append(c)
                    i += 1
        elif c == "$":
            value, i = _dollar(s, i, env, esc)
            out.append(value)
        else:
            out.append(c)
            i += 1
    if stop:
        raise _Bad(f"missing '{stop}' in variable substitution", "Write ${NAME} or ${NAME:-default}")
    return "".join(out), i


def _dollar(s: str, i: int, env: dict, esc: str) -> tuple[str, int]:
    """s[i] is '$': return (substituted text, next index)."""
    if not s.startswith("${", i):
        m = _VAR.match(s, i + 1)
        return (env.get(m.group(), ""), m.end()) if m else ("$", i + 1)
    m = _NAME.match(s, i + 2)
    if not m:
        raise _Bad(f"bad variable substitution {s[i:i + 12]!r}", "Write ${NAME} with a name of letters, digits and _")
    name, i = m.group(), m.end()
    if s.startswith("}", i):
        return env.get(name, ""), i + 1
    op = next((o for o in (":-", ":+", "-", "+") if s.startswith(o, i)), None)
    if op is None:
        raise _Bad(f"unsupported substitution ${{{name}{s[i:i + 2]}...}}",
                   "Supported forms: $NAME, ${NAME}, ${NAME:-default}, ${NAME:+alternative}")
    word, i = _lex(s, i + len(op), env, esc, "}")
    value = env.get(name)
    if op == ":-":
        return (value or word), i
    if op == "-":
        return (word if value is None else value), i
    if op == ":+":
        return (word if value else ""), i
    return ("" if value is None else word), i


def _split(text: str, esc: str) -> list[str]:
    """Split on unquoted, unescaped whitespace, keeping quotes and escapes (Docker's parseWords)."""
    words, cur, quote, i, n = [], None, None, 0, len(text)
    while i < n:
        c = text[i]
        if quote is None and c.isspace():
            if cur is not None:
                words.append("".join(cur))
                cur = None
            i += 1
            continue
        cur = cur if cur is not None else []
        if c == esc and quote != "'":
            cur.append(text[i:i + 2])
            i += 2
            continue
        if quote is None and c in "'\"":
            quote = c
        elif c == quote:
            quote = None
        cur.append(c)
        i += 1
    if cur is not None:
        words.append("".join(cur))
    return words


def _maybe_json(rest: str) -> tuple[str, object]:
    """Exec form if `rest` is a JSON array of strings; shell form otherwise (like Docker)."""
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            return "shell", rest
        if not all(isinstance(v, str) for v in value):
            raise _Bad("the JSON (exec) form must be an array of strings",
                       'Quote every element, e.g. ["sleep", "10"]')
        return "exec", value
    return "shell", rest


# ---------------------------------------------------------------- instructions

class _State:
    def __init__(self, escape: str, build_args: dict):
        self.esc, self.build_args = escape, build_args
        self.meta, self.args, self.env = {}, {}, {}   # pre-FROM ARGs, stage ARGs, ENV
        self.from_seen = False

    def vars(self) -> dict:
        args = self.args if self.from_seen else self.meta
        return {**{k: v for k, v in args.items() if v is not None}, **self.env}

    def words(self, text: str) -> list[str]:
        env = self.vars()
        return [_lex(w, 0, env, self.esc, None)[0] for w in _split(text, self.esc)]

    def expand(self, text: str) -> str:
        return _lex(text, 0, self.vars(), self.esc, None)[0]


def _split_flags(rest: str) -> tuple[list[str], str]:
    """Leading `--name[=value]` words (until a non-flag word or a bare `--`), and the rest."""
    flags = []
    while m := re.match(r"--(\S*)\s*", rest):
        rest = rest[m.end():]
        if not m.group(1):
            break
        flags.append(m.group(1))
    return flags, rest


def _flags(cmd: str, words: list[str], allowed: tuple[str, ...]) -> dict:
    out = {}
    for word in words:
        name, eq, value = word.partition("=")
        if cmd in ("COPY", "ADD") and name == "from":
            raise _Bad(f"{cmd} --from is not supported: multi-stage builds are not supported",
                       "Copy from the build context instead, or build the other stage as its own image and FROM it")
        if name not in allowed:
            raise _Bad(f"unknown flag --{name} for {cmd}",
                       "Supported: " + ", ".join("--" + a for a in allowed) if allowed else f"{cmd} takes no flags")
        if not eq or not value:
            raise _Bad(f"flag --{name} needs a value", f"Write --{name}=VALUE")
        if name in out:
            raise _Bad(f"flag --{name} is given twice", "Keep one")
        out[name] = value
    return out


def _from(st: _State, rest: str, flags: dict):
    words = st.words(rest)
    if len(words) == 3 and words[1].lower() == "as":
        alias = words[2].lower()
        if not re.fullmatch(r"[a-z][a-z0-9_.-]*", alias):
            raise _Bad(f'invalid stage name "{words[2]}"', "Start it with a letter; use letters, digits, _ . -")
    elif len(words) == 1:
        alias = None
    else:
        raise _Bad("FROM takes an image and an optional AS NAME", "Usage: " + _USAGE["FROM"])
    if not words[0]:
        raise _Bad("the FROM image name is empty after variable substitution",
                   "Pass the build arg, or give the ARG a default")
    st.from_seen = True
    return (words[0], alias)


def _arg(st: _State, rest: str, flags: dict):
    env, out = st.vars(), []
    for word in _split(rest, st.esc):
        name, eq, raw = word.partition("=")
        if not _NAME.fullmatch(name):
            raise _Bad(f'invalid ARG name "{name}"', "Use letters, digits and _, not starting with a digit")
        default = _lex(raw, 0, env, st.esc, None)[0] if eq else None
        if name in st.build_args:
            value = st.build_args[name]
        elif default is not None or not st.from_seen:
            value = default
        else:
            value = st.meta.get(name)       # `ARG NAME` in the stage inherits the pre-FROM ARG
        (st.args if st.from_seen else st.meta)[name] = value
        out.append((name, value))
    return tuple(out)


def _pairs(cmd: str, st: _State, rest: str) -> tuple:
    words = _split(rest, st.esc)
    if "=" not in words[0]:                 # legacy `ENV KEY value with spaces`
        parts = re.split(r"\s+", rest, maxsplit=1)
        if len(parts) < 2:
            raise _Bad(f"{cmd} {parts[0]} has no value", "Usage: " + _USAGE[cmd])
        raw = [parts]
    else:
        for word in words:
            if "=" not in word:
                raise _Bad(f'{cmd} expects KEY=VALUE, got "{word}"', 'Quote values with spaces: KEY="a b"')
        raw = [word.split("=", 1) for word in words]
    env = st.vars()                         # every pair sees the values from before this line
    pairs = tuple((_lex(k, 0, env, st.esc, None)[0], _lex(v, 0, env, st.esc, None)[0]) for k, v in raw)
    if any(not k for k, _ in pairs):
        raise _Bad(f"{cmd} names cannot be empty", "Usage: " + _USAGE[cmd])
    return pairs


def _env(st: _State, rest: str, flags: dict):
    pairs = _pairs("ENV", st, rest)
    st.env.update(pairs)
    return pairs


def _copy(cmd: str):
    def handler(st: _State, rest: str, flags: dict):
        if "chown" in flags:
            flags["chown"] = st.expand(flags["chown"])
        form, value = _maybe_json(rest)
        env = st.vars()
        words = [_lex(w, 0, env, st.esc, None)[0] for w in value] if form == "exec" else st.words(rest)
        if len(words) < 2:
            raise _Bad(f"{cmd} needs at least one source and a destination", "Usage: " + _USAGE[cmd])
        if not all(words):
            raise _Bad(f"{cmd} has an empty path after variable substitution", "Check the ARG/ENV names used")
        *srcs, dest = words
        if len(srcs) > 1 and not dest.endswith("/"):
            raise _Bad(f"{cmd} with several sources needs a destination directory ending in /",
                       f'Write "{dest}/"')
        return (tuple(srcs), dest)
    return handler


def _workdir(st: _State, rest: str, flags: dict):
    path = st.expand(rest)
    if not path:
        raise _Bad("WORKDIR path is empty after variable substitution", "Check the ARG/ENV names used")
    return (path,)


def _user(st: _State, rest: str, flags: dict):
    words = st.words(rest)
    if len(words) != 1:
        raise _Bad("USER takes exactly one argument", "Usage: " + _USAGE["USER"])
    user, sep, group = words[0].partition(":")
    if not user or (sep and not group):
        raise _Bad(f'invalid USER "{words[0]}"', "Usage: " + _USAGE["USER"])
    return (user, group or None)


def _expose(st: _State, rest: str, flags: dict):
    ports: dict[str, None] = {}              # an ordered set
    for word in (p for w in st.words(rest) for p in w.split()):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/([a-zA-Z]+))?", word)
        proto = (m.group(3) or "tcp").lower() if m else ""
        first, last = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
        if not m or proto not in ("tcp", "udp", "sctp") or not 1 <= first <= last <= 65535:
            raise _Bad(f'invalid port "{word}"', "Use PORT[/tcp|/udp|/sctp] with a port from 1 to 65535, e.g. 80/tcp")
        ports.update((f"{p}/{proto}", None) for p in range(first, last + 1))
    return tuple(ports)


def _exec_or_shell(st: _State, rest: str, flags: dict):
    return _maybe_json(rest)


def _duration(flag: str, text: str) -> int:
    """A Go duration ("1m30s", "500ms") in nanoseconds, as Docker parses HEALTHCHECK flags."""
    sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    if body == "0":
        return 0
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise _Bad(f'invalid duration "{text}" for --{flag}', "Use a number with a unit: 30s, 1m30s, 500ms, 1h")
    ns = sign * int(sum(Fraction(n) * _DURATION_UNITS[u] for n, u in parts))
    if ns != 0 and ns < 10**6:
        raise _Bad(f"--{flag} cannot be less than 1ms (got {text})", "Use at least 1ms, or 0 for the default")
    return ns


def _healthcheck(st: _State, rest: str, flags: dict):
    kind, _, command = (re.split(r"(\s+)", rest, maxsplit=1) + ["", ""])[:3]
    kind = kind.upper()
    if kind == "NONE":
        if command or flags:
            raise _Bad("HEALTHCHECK NONE takes no options or arguments", "Write just HEALTHCHECK NONE")
        flags.clear()
        return ("NONE",)
    if kind != "CMD":
        raise _Bad(f'unknown HEALTHCHECK type "{kind}"', "Usage: " + _USAGE["HEALTHCHECK"])
    form, value = _maybe_json(command)
    if not value:
        raise _Bad("HEALTHCHECK CMD needs a command", "Usage: " + _USAGE["HEALTHCHECK"])
    parsed = dict(_HEALTH_DEFAULTS)
    for name, text in flags.items():
        if name == "retries":
            if not re.fullmatch(r"[+-]?\d+", text):
                raise _Bad(f'invalid --retries "{text}"', "Use a whole number, e.g. --retries=3")
            if int(text) < 0:
                raise _Bad("--retries cannot be negative", "Use 0 for the default (3), or a positive number")
            number = int(text)
        else:
            number = _duration(name, text)
        parsed[name] = number or _HEALTH_DEFAULTS[name]
    flags.clear()
    flags.update(parsed)
    return ("CMD", ["CMD", *value] if form == "exec" else ["CMD-SHELL", value])


_HANDLERS = {  # name -> (handler, allowed flags)
    "FROM": (_from, ()),
    "ARG": (_arg, ()),
    "ENV": (_env, ()),
    "LABEL": (lambda st, rest, flags: _pairs("LABEL", st, rest), ()),
    "RUN": (_exec_or_shell, ()),
    "CMD": (_exec_or_shell, ()),
    "ENTRYPOINT": (_exec_or_shell, ()),
    "COPY": (_copy("COPY"), ("chown",)),
    "ADD": (_copy("ADD"), ("chown",)),
    "WORKDIR": (_workdir, ()),
    "USER": (_user, ()),
    "EXPOSE": (_expose, ()),
    "HEALTHCHECK": (_healthcheck, ("interval", "timeout", "start-period", "retries")),
}


def _unknown(word: str, esc: str) -> _Bad:
    supported = "Supported instructions: " + ", ".join(SUPPORTED)
    if word.upper() in _DOCKER_ONLY:
        return _Bad(f'instruction "{word}" is not supported by this builder', "Remove it. " + supported)
    close = difflib.get_close_matches(word.upper(), SUPPORTED, n=1, cutoff=0.6)
    if close:
        return _Bad(f'unknown instruction "{word}"', f"Did you mean {close[0]}? {supported}")
    return _Bad(f'unknown instruction "{word}"',
                f"{supported}. If this line continues the previous one, end that line with {esc}")


# ---------------------------------------------------------------- file structure

def _directives(lines: list[str], filename: str) -> str:
    """Read the parser directives at the top of the file; return the escape character."""
    escape, seen = "\\", set()
    for number, line in enumerate(lines, 1):
        m = _DIRECTIVE.match(line.strip())
        if not m or m.group(1).lower() not in ("syntax", "escape", "check"):
            break                           # the first non-directive line ends the directives
        name, value = m.group(1).lower(), m.group(2)
        if name in seen:
            raise BuildError(f"{filename} line {number}: the {name} parser directive is given twice",
                             fix="Keep only the first")
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise BuildError(f"{filename} line {number}: invalid escape character {value!r}",
                                 fix="Use # escape=\\ or # escape=`")
            escape = value
    return escape


def _logical_lines(lines: list[str], escape: str):
    """Yield (first line number, text) per instruction: comments and blank lines skipped,
    continuation lines joined (comment and blank lines inside a continuation are skipped)."""
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    i = 0
    while i < len(lines):
        start, text = i + 1, lines[i].strip()
        i += 1
        if not text or text.startswith("#"):
            continue
        text, more = continuation.subn("", text)
        while more and i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            piece, more = continuation.subn("", line)
            text += piece
        if text.strip():
            yield start, text.strip()


def parse(text: str, filename: str = "Dockerfile", build_args: dict | None = None) -> list[Instruction]:
    """Parse a Dockerfile. `build_args` are --build-arg values; they override declared ARG
    defaults. Any problem raises BuildError naming `filename` and the line."""
    lines = [line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n")]
    st = _State(_directives(lines, filename), dict(build_args or {}))
    out: list[Instruction] = []
    for number, original in _logical_lines(lines, st.esc):
        try:
            word, _, rest = (re.split(r"(\s+)", original, maxsplit=1) + ["", ""])[:3]
            cmd = word.upper()
            if cmd not in _HANDLERS:
                raise _unknown(word, st.esc)
            handler, allowed = _HANDLERS[cmd]
            flag_words, rest = _split_flags(rest)
            if not rest:
                raise _Bad(f"{cmd} needs arguments", "Usage: " + _USAGE[cmd])
            if cmd == "FROM" and st.from_seen:
                raise _Bad("multi-stage builds are not supported", "Use a single FROM per Dockerfile")
            if cmd not in ("FROM", "ARG") and not st.from_seen:
                raise _Bad(f"{cmd} comes before FROM", "Start with FROM IMAGE; only ARG may come before it")
            flags = _flags(cmd, flag_words, allowed)
            args = handler(st, rest, flags)
        except _Bad as e:
            raise BuildError(f"{filename} line {number}: {e.what}", fix=e.fix) from None
        out.append(Instruction(number, cmd, args, flags, original))
    if not st.from_seen:
        last = max(1, len(text.splitlines()))
        what = "the file has no instructions" if not out else "there is no FROM instruction"
        raise BuildError(f"{filename} line {last}: {what}", fix="Start the file with FROM IMAGE, e.g. FROM alpine:3.20")
    return out
