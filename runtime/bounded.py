"""The one reader of every file netdiag parses (check files and their includes, scenario files,
snapshots and recordings, OCI index/manifest/config documents, Dockerfiles, seccomp profiles).

A file given on a command line, or named by another file, may be anything: /dev/zero, a FIFO no one
writes, a 50 MB document, a YAML alias bomb, `[[[[...]]]]` a million deep, /etc/shadow. So: regular
files only (refused before a byte is read, without blocking on a FIFO), at most `limit` bytes,
nesting at most MAX_DEPTH levels (checked without recursion), YAML aliases counted and their
expansion bounded, and errors that say FILE:LINE: what, quoting at most EXCERPT characters of the
file. Errors are InvalidArgument (exit 2). Pure apart from reading the file it is given.
"""
from __future__ import annotations

import json
import os
import stat

from .errors import InvalidArgument

# Documents people write or tools emit: check and scenario files are a few KB, Docker's seccomp
# profile ~60 KB, an OCI manifest at most 4 MiB (the distribution spec's limit). YAML is slower to
# parse (~1 s per MiB), so it gets less.
MAX_JSON = 4 << 20
MAX_YAML = 2 << 20
MAX_DOCKERFILE = 1 << 20
# A host snapshot grows with its namespaces and rules: ~60 KB for a small lab, a few MB for
# hundreds of containers with Docker's rules; 64 MiB is far past any real one yet parses in seconds.
MAX_SNAPSHOT = 64 << 20
# No document netdiag reads nests deeper than ~15 (a snapshot's nftables expressions); 64 leaves
# room and keeps every recursive consumer (jsonschema, the YAML composer) far from Python's limit.
MAX_DEPTH = 64
# YAML anchors are for sharing a block of defaults a few times (`<<: *defaults`); a bomb needs
# many aliases or aliases of aliases, so both the count and the nodes they expand to are capped.
MAX_ALIASES = 100
MAX_ALIAS_NODES = 10_000
EXCERPT = 80


def excerpt(value, limit: int = EXCERPT) -> str:
    """`value` as repr shows it, cut to about `limit` characters: what an error may quote."""
    text = repr(value[:limit + 1] if isinstance(value, str) else value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(value)} items" if isinstance(value, (list, dict)) else ""
    return f"{text[:limit]}...{f' ({size})' if size else ''}"


class Refused(InvalidArgument):
    """FILE:LINE: what is wrong with a file's content, or FILE: why it cannot be read at all (line
    None); `problem` alone for callers that name the file their own way."""

    def __init__(self, display: str, line: int | None, problem: str, fix: str = ""):
        self.display, self.line, self.problem = display, line, problem
        super().__init__(f"{display}:{line}: {problem}" if line else f"{display}: {problem}", "", fix)


def read_bytes(path: str | os.PathLike, limit: int, display: str | None = None) -> bytes:
    """The bytes of the regular file at `path`, refused when it is something else or larger than
    `limit`."""
    display = str(path) if display is None else display
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise Refused(display, None, e.strerror or str(e), "check the path") from None
    try:
        return read_fd(fd, limit, display)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int, display: str) -> bytes:
    """What read_bytes reads, from a descriptor the caller opened (and closes)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket")
            raise Refused(display, None, f"is {kind}, not a regular file", "give the path of a file")
        if st.st_size > limit:
            raise _too_large(display, limit)
        chunks, got = [], 0
        while got <= limit:  # st_size may lie (/proc, a file still growing): read at most limit + 1
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise _too_large(display, limit)
        return b"".join(chunks)
    except OSError as e:
        raise Refused(display, None, e.strerror or str(e), "check the path") from None


def read_stream(f, limit: int, display: str) -> bytes:
    """At most `limit` bytes of an open binary stream (standard input), refused when longer."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise _too_large(display, limit)
    return data


def _too_large(display: str, limit: int) -> Refused:
    return Refused(display, None, f"larger than {limit >> 20} MiB, more than any file of this kind",
                   "check that this is the file you meant")


def decode(data: bytes, display: str) -> str:
    """UTF-8 text; a bad byte is named by its line, not quoted."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise Refused(display, line, "not UTF-8 text", "save the file as UTF-8") from None


def read_text(path: str | os.PathLike, limit: int, display: str | None = None) -> str:
    display = str(path) if display is None else display
    return decode(read_bytes(path, limit, display), display)


# -- JSON -------------------------------------------------------------------------------------------
def loads_json(data: bytes | str, display: str, max_depth: int = MAX_DEPTH):
    """Parse JSON, refusing documents nested deeper than `max_depth`."""
    try:
        value = json.loads(data)
    except RecursionError:  # the C decoder stops at the interpreter's limit: far deeper than ours
        raise Refused(display, 1, f"nested more than {max_depth} levels deep") from None
    except UnicodeDecodeError:
        raise Refused(display, 1, "not UTF-8 text") from None
    except ValueError as e:  # JSONDecodeError: its message names a position, never the text
        raise Refused(display, getattr(e, "lineno", 1), f"not valid JSON: {getattr(e, 'msg', e)}") from None
    if depth(value, max_depth) > max_depth:
        raise Refused(display, 1, f"nested more than {max_depth} levels deep")
    return value


def load_json(path: str | os.PathLike, limit: int = MAX_JSON, display: str | None = None, max_depth: int = MAX_DEPTH):
    display = str(path) if display is None else display
    return loads_json(read_bytes(path, limit, display), display, max_depth)


def depth(value, stop: int) -> int:
    """How deep lists and dicts nest in `value` (a scalar is 0), without recursion; gives up once
    past `stop`. Shared objects (YAML aliases) are visited once per path, so bound them first.
    Level by level: every node of a 500-container snapshot passes here, and a stack of (node, depth)
    pairs cost twice as much."""
    level = [value] if isinstance(value, (dict, list)) else []
    deepest = 0
    while level:
        deepest += 1
        if deepest > stop:
            return deepest
        below = []
        for v in level:
            below += [x for x in (v.values() if isinstance(v, dict) else v) if isinstance(x, (dict, list))]
        level = below
    return deepest


# -- YAML -------------------------------------------------------------------------------------------
def compose_yaml(text: str, display: str):
    """The YAML node tree of one document (None when empty), with every node's line in its
    start_mark. Refuses depth past MAX_DEPTH, more than MAX_ALIASES aliases, or aliases that would
    expand to more than MAX_ALIAS_NODES nodes. Nodes an alias names are shared, not copied: walk
    them once."""
    import yaml

    loader = _loader()(text, display)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        # the problem alone: str(e) would quote the offending line of a file that may be a secret
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise Refused(display, mark.line + 1 if mark else 1, f"not valid YAML: {problem}", "fix the syntax at that line") from None
    finally:
        loader.dispose()


def yaml_data(node, display: str):
    """Python values of a node tree from compose_yaml (YAML's safe types only)."""
    import yaml

    if node is None:
        return None
    try:
        return yaml.SafeLoader("").construct_document(node)
    except yaml.YAMLError as e:  # an unknown !tag, a bad timestamp: not quoted (the tag is text of the file)
        mark = getattr(e, "problem_mark", None)
        raise Refused(display, mark.line + 1 if mark else 1, "a value of a type YAML's safe loader does not know (a !tag?)") from None


def node_lines(root) -> dict[tuple, int]:
    """The line of every mapping value and list item of a compose_yaml tree, keyed by its path of
    keys and indexes (the root is ()). No recursion; a node an alias shares is walked once (its
    other uses keep the line of what the alias names)."""
    import yaml

    lines: dict[tuple, int] = {}
    todo, seen = ([((), root)] if root is not None else []), set()
    while todo:
        where, node = todo.pop()
        lines[where] = node.start_mark.line + 1
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            todo += [(where + (k.value,), v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            todo += [(where + (i,), v) for i, v in enumerate(node.value)]
    return lines


_LOADER = None


def _loader():
    """A SafeLoader whose composer (Python, so it can count) reads libyaml's events when present."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    parser = yaml.cyaml.CParser if yaml.__with_libyaml__ else None

    class Bounded(Composer, *([parser] if parser else [yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser]),
                  SafeConstructor, Resolver):
        def __init__(self, text: str, display: str):
            if parser:
                parser.__init__(self, text)
            else:
                yaml.reader.Reader.__init__(self, text)
                yaml.scanner.Scanner.__init__(self)
                yaml.parser.Parser.__init__(self)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self.display, self.levels, self.aliases, self.sizes = display, 0, 0, {}
            self.total = 0     # nodes as a consumer that follows aliases meets them
            self.expanded = 0  # of which reached through an alias

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                line = self.peek_event().start_mark.line + 1
                node = super().compose_node(parent, index)
                self.aliases += 1
                self.total += self.sizes.get(id(node), 1)
                self.expanded += self.sizes.get(id(node), 1)
                if self.aliases > MAX_ALIASES:
                    raise Refused(self.display, line, f"more than {MAX_ALIASES} aliases (*name)", "write the values out")
                if self.expanded > MAX_ALIAS_NODES:
                    raise Refused(self.display, line, f"aliases (*name) expand to more than {MAX_ALIAS_NODES} values",
                                  "write the values out")
                return node
            self.levels += 1
            if self.levels > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise Refused(self.display, line, f"nested more than {MAX_DEPTH} levels deep")
            before = self.total
            node = super().compose_node(parent, index)
            self.levels -= 1
            self.total += 1
            self.sizes[id(node)] = self.total - before  # what an alias of it expands to
            return node

    _LOADER = Bounded
    return Bounded
