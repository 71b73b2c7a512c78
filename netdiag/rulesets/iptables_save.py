"""iptables-save text, parsed: tables, chains and their -A lines, each rule as its basic matches
(-s -d -i -o -p -f), its `-m` modules with their options, and its target (-j/-g) with its options.
Only the syntax: what the parts mean in nft terms is xt_translate's job. Pure."""
from __future__ import annotations

# what prints the rules of each nft family in iptables' format (netdiag.observe.iptables runs it)
TOOLS = {"ip": "iptables-nft-save", "ip6": "ip6tables-nft-save"}

# plain classes, not dataclasses: this module is imported by every trace, and @dataclass costs
# about a millisecond per class at import


class Opt:
    """One option of a match or target: `! --ctstate NEW,DNAT` -> ("--ctstate", ["NEW,DNAT"], True)."""

    __slots__ = ("name", "args", "neg")

    def __init__(self, name: str, args: list[str], neg: bool = False):
        self.name, self.args, self.neg = name, args, neg

    def text(self) -> str:
        return " ".join((["!"] if self.neg else []) + [self.name] + [_quote(a) for a in self.args])


class Module:
    """`-m NAME` and its options."""

    __slots__ = ("name", "opts")

    def __init__(self, name: str):
        self.name, self.opts = name, []

    def text(self) -> str:
        return " ".join([f"-m {self.name}"] + [o.text() for o in self.opts])


class Rule:
    """One -A line. basic: "-s" -> (negated, value) for -s -d -i -o -p -f; error: why it cannot be read."""

    __slots__ = ("chain", "line", "basic", "modules", "target", "target_opts", "goto", "error")

    def __init__(self, chain: str, line: str, error: str | None = None):
        self.chain, self.line, self.error = chain, line, error
        self.basic: dict[str, tuple[bool, str]] = {}
        self.modules: list[Module] = []
        self.target: str | None = None
        self.target_opts: list[Opt] = []
        self.goto = False


class Table:
    __slots__ = ("name", "chains")

    def __init__(self, name: str):
        self.name = name
        self.chains: dict[str, list[Rule]] = {}  # every declared chain, in order


_BASIC = frozenset({"-s", "-d", "-i", "-o", "-p", "-f"})
_LONG_BASIC = {"--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d", "--in-interface": "-i",
               "--out-interface": "-o", "--protocol": "-p", "--fragment": "-f"}
_LONG_SWITCH = {"--match": "-m", "--jump": "-j", "--goto": "-g"}
_BOUNDARY = _BASIC | {"-m", "-j", "-g"}


def _quote(s: str) -> str:
    if s and not any(c.isspace() or c in "\"'\\" for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tokens(line: str) -> list[tuple[str, bool]]:
    """Split like iptables-restore: whitespace-separated words, double quotes group (with \\" and
    \\\\ escapes inside). Each word comes with whether it was quoted (a quoted "-j" is a value)."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        buf, quoted = [], False
        while i < n and not line[i].isspace():
            if line[i] == '"':
                quoted, i = True, i + 1
                while i < n and line[i] != '"':
                    if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\':
                        i += 1
                    buf.append(line[i])
                    i += 1
                if i >= n:
                    raise ValueError("unterminated quote")
                i += 1
            else:
                buf.append(line[i])
                i += 1
        out.append(("".join(buf), quoted))
    return out


def parse_rule(line: str) -> Rule:
    """One `-A CHAIN ...` line. A line that cannot be parsed gives a Rule with `error` set."""
    line = line.strip()
    head = line.split()[1:] if line.startswith("[") else line.split()  # iptables-save -c: "[pkts:bytes] -A ..."
    chain = head[1] if len(head) > 1 and head[0] == "-A" else ""  # kept on errors: the chain is then not translated
    try:
        toks = tokens(line)
    except ValueError as e:
        return Rule(chain, line, error=f"cannot parse {line!r}: {e}")
    if toks and toks[0][0].startswith("[") and not toks[0][1]:
        toks = toks[1:]
    if len(toks) < 2 or toks[0] != ("-A", False):
        return Rule(chain, line, error=f"not an -A line: {line!r}")
    rule = Rule(toks[1][0], line)
    words = toks[2:]
    i, neg = 0, False
    current: list[Opt] | None = None  # where --options go: the last module's, or the target's

    def values(i: int) -> tuple[list[str], int]:
        args = []
        while i < len(words):
            t, q = words[i]
            if not q and (t in _BOUNDARY or t.startswith("--") or t == "!"):
                break
            args.append(t)
            i += 1
        return args, i

    while i < len(words):
        t, q = words[i]
        if not q:  # long spellings; --source and the like only before any -m/-j (a module may own one)
            t = _LONG_SWITCH.get(t, _LONG_BASIC.get(t, t) if current is None else t)
        if not q and t == "!":
            neg, i = True, i + 1
            continue
        if not q and t in _BASIC:
            if t == "-f":
                rule.basic[t], i = (neg, ""), i + 1
            elif i + 1 < len(words):
                rule.basic[t], i = (neg, words[i + 1][0]), i + 2
            else:
                rule.error = f"{t} without a value in {line!r}"
                return rule
        elif not q and t in ("-m", "-j", "-g") and i + 1 < len(words):
            name = words[i + 1][0]
            if neg:
                rule.error = f"'! {t}' in {line!r}"
                return rule
            if t == "-m":
                rule.modules.append(Module(name))
                current = rule.modules[-1].opts
            else:
                rule.target, rule.goto, current = name, t == "-g", rule.target_opts
            i += 2
        elif not q and t.startswith("--") and current is not None:
            args, j = values(i + 1)
            current.append(Opt(t, args, neg))
            i = j
        else:
            rule.error = f"unexpected {t!r} in {line!r}"
            return rule
        neg = False
    if neg:
        rule.error = f"a trailing '!' in {line!r}"
    return rule


def parse(text: str) -> dict[str, Table]:
    """iptables-save output -> {table name: Table}, the rules of each chain in order."""
    tables: dict[str, Table] = {}
    table: Table | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = tables.setdefault(line[1:].strip(), Table(line[1:].strip()))
        elif line == "COMMIT":
            table = None
        elif table is None:
            continue
        elif line.startswith(":"):
            table.chains.setdefault(line[1:].split()[0] if line[1:].split() else "", [])
        elif line.startswith("-A") or line.startswith("["):
            rule = parse_rule(line)
            table.chains.setdefault(rule.chain, []).append(rule)
    return tables
