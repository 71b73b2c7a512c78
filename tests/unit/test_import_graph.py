"""The layout is the architecture: no import circles between netdiag's modules (counting imports
inside functions: a lazy import may save start-up time, never hide a circle) nor between its
packages, the reasoning and view layers import nothing that touches the kernel, so every
diagnosis and picture can be made offline from a snapshot, without root, and no module grows past
what one reader holds in mind (MAX_LINES)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("netdiag", "runtime")
# modules that touch the kernel (netlink, namespaces, nftables, processes, mounts) or the host's state
KERNEL = ("runtime.kernel", "runtime.containers", "runtime.networks", "runtime.images", "runtime.build",
          "runtime.clusterhost", "runtime.records",
          "runtime.state", "runtime.fsroot", "netdiag.observe", "netdiag.probe", "netdiag.worlds", "netdiag.diagnose")
PURE_LAYERS = ("netdiag.reason", "netdiag.views", "netdiag.snapshot_model", "netdiag.rulesets")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its body (function-level imports included)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                head = node.module or ""
            targets = [head] + [f"{head}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `from pkg import name` where name is not a module: pkg
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys
    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _parents(name: str) -> set[str]:
    """A package's __init__ runs before any of its modules: importing a.b.c imports a and a.b."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_circles_between_modules():
    g = graph()
    # a package importing its own submodules (re-exports) is not a circle with them
    g = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in g.items()}
    assert cycles(g) == []


def package(name: str) -> str:
    """The package a module belongs to, for the layering: its first two dotted parts (runtime.networks,
    netdiag.reason; a top-level module such as netdiag.diagnose is its own)."""
    return ".".join(name.split(".")[:2])


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which package imports which (a package importing its own subpackages is not an edge)."""
    out: dict[str, set[str]] = {}
    for name, targets in g.items():
        out.setdefault(package(name), set()).update(package(t) for t in targets if package(t) != package(name))
    return out


def test_no_import_circles_between_packages():
    """Packages are layers: each may import the ones below it and none above, so a package can be
    read (and changed) knowing only what is below it. A circle between two packages means one of
    them holds code of the other's layer."""
    g = package_graph(graph())
    found = cycles(g)
    detail = {" <-> ".join(c): {a: sorted(g[a] & set(c)) for a in c} for c in found}
    assert found == [], detail


def test_the_package_check_sees_a_circle():
    """The check above is live: two packages importing each other through their modules are found."""
    g = package_graph({"a.x.m": {"a.y.n"}, "a.y.n": set(), "a.y.o": {"a.x"}, "a.x": {"a.x.m"}})
    assert cycles(g) == [["a.x", "a.y"]]


def test_reasoning_and_views_import_nothing_that_touches_the_kernel():
    g = graph()
    bad = {}
    for name in g:
        if not name.startswith(PURE_LAYERS):
            continue
        seen, todo = set(), [name]
        while todo:
            m = todo.pop()
            for t in g.get(m, ()) | _parents(m):
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        touching = sorted(t for t in seen if t.startswith(KERNEL))
        if touching:
            bad[name] = touching
    assert bad == {}


# what the CLI may use of the runtime: its API, its errors, and the parsers of user input
CLI_MAY_USE = ("runtime.api", "runtime.errors", "runtime.validate", "runtime.bounded", "runtime.state")


def test_the_cli_reaches_the_runtime_only_through_its_api():
    """The CLI parses, calls and prints: the policy (what prune removes, when the firewall is
    rewritten, which driver makes a network) lives in runtime.api and below, written once."""
    g = graph()
    bad = {name: sorted(t for t in targets if t.startswith("runtime.") and not t.startswith(CLI_MAY_USE))
           for name, targets in g.items() if name.startswith("netdiag.cli")}
    assert {k: v for k, v in bad.items() if v} == {}
    # runtime.state only for its DiskFull error (main's error report)
    state_users = [name for name, targets in g.items() if name.startswith("netdiag.cli") and "runtime.state" in targets]
    assert state_users == ["netdiag.cli.main"]


MAX_LINES = 600


def oversized(paths, root: Path = ROOT) -> dict[str, int]:
    """{path relative to root: lines} of the files longer than MAX_LINES."""
    out = {}
    for path in paths:
        with open(path, "rb") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            out[str(path.relative_to(root))] = n
    return out


def test_no_module_is_longer_than_max_lines():
    """A module over MAX_LINES does several jobs: split it by job (as netdiag/reason/static_trace.py
    and its trace_* parts are) rather than raise the limit."""
    assert oversized(modules().values()) == {}


def test_the_length_check_sees_a_long_module(tmp_path):
    (tmp_path / "fits.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert oversized(sorted(tmp_path.iterdir()), tmp_path) == {"long.py": MAX_LINES + 1}


BASE = {"runtime", "runtime.errors", "runtime.paths", "runtime.bounded", "runtime.validate", "runtime.state"}


def layers_table() -> dict[str, set[str]]:
    """README's Architecture table: package -> the packages it may import ('every `runtime`
    package' and 'any `netdiag` module' are what they say)."""
    text = (ROOT / "README.md").read_text()
    rows = text.split("<!-- layers: begin -->", 1)[1].split("<!-- layers: end -->", 1)[0]
    out = {}
    for line in rows.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        allowed = set()
        for item in cells[2].split(","):
            item = item.strip()
            if item.startswith("every `runtime`"):
                allowed.add("runtime.*")
            elif item.startswith("any `netdiag`"):
                allowed.add("netdiag.*")
            elif item.startswith("`"):
                allowed.add(item.strip("`"))
        out[cells[0].strip("`")] = allowed
    return out


def _allowed(target: str, allowed: set[str]) -> bool:
    return target in BASE or target in allowed or any(a.endswith(".*") and (target == a[:-2] or target.startswith(a[:-1]))
                                                      for a in allowed)


def test_each_package_imports_only_what_the_readme_table_allows():
    table = layers_table()
    assert len(table) >= 20 and "netdiag.reason" in table  # the table was found and read
    g = package_graph(graph())
    missing = sorted(p for p in g if p.count(".") == 1 and p not in table and (ROOT / p.replace(".", "/")).is_dir())
    assert missing == [], f"packages without a row in README's Architecture table: {missing}"
    wrong = {p: sorted(t for t in g.get(p, ()) if not _allowed(t, table[p])) for p in table}
    assert {p: t for p, t in wrong.items() if t} == {}, "imports README's table does not allow (fix the import or the row)"


def test_the_table_check_sees_a_forbidden_import():
    assert not _allowed("runtime.kernel", {"netdiag.rulesets", "netdiag.snapshot_model"})
    assert _allowed("runtime.errors", set()) and _allowed("runtime.api", {"runtime.*"}) and _allowed("netdiag.views", {"netdiag.*"})
