"""The scenario library: scenarios/NN_slug/ folders, each with scenario.yaml and README.md. A
scenario is found by its folder name, its slug or its number; every file is validated against
netdiag/schemas/scenario.schema.json when loaded, and a broken one is an error naming file, line
and field."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InvalidArgument, NotFound

from .. import yamlfile
from . import placement

_DIR = re.compile(r"^(\d{2})_([a-z0-9_]+)$")


def root() -> Path:
    """scenarios/ beside the netdiag package (a checkout, an editable install), or NETDIAG_SCENARIOS."""
    env = os.environ.get("NETDIAG_SCENARIOS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "scenarios"


@dataclass
class Scenario:
    name: str  # the folder: "01_port_not_published"
    path: Path
    spec: dict
    doc: yamlfile.Document

    @property
    def number(self) -> int:
        return int(self.name[:2])

    @property
    def slug(self) -> str:
        return self.name[3:]

    def readme(self) -> str:
        from runtime import bounded

        try:
            return bounded.read_text(self.path / "README.md", bounded.MAX_YAML)
        except InvalidArgument:
            return ""


def names() -> list[str]:
    base = root()
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if d.is_dir() and _DIR.match(d.name))


def load(ref: str) -> Scenario:
    """By folder name (01_port_not_published), slug (port_not_published) or number (1, 01)."""
    ref = str(ref).strip()
    found = [n for n in names() if ref in (n, n[3:]) or (ref.isdigit() and int(ref) == int(n[:2]))]
    if not found:
        raise NotFound(f"No scenario {ref!r}", f"the library at {root()} has: {', '.join(names()) or 'none'}",
                       "list them with 'netdiag scenario list'")
    return read(root() / found[0])


def read(path: Path) -> Scenario:
    """Load and validate one scenario folder."""
    m = _DIR.match(path.name)
    if not m:
        raise InvalidArgument(f"{path}: a scenario folder is named NN_slug", f"{path.name!r} is not", "rename it, e.g. 17_my_story")
    doc = yamlfile.load(path / "scenario.yaml")
    yamlfile.validate(doc, yamlfile.schema("scenario"))
    if not (path / "README.md").is_file():
        raise InvalidArgument(f"{path}: README.md is missing", "the story a learner reads comes from it", "write it")
    for i, c in enumerate(doc.data["world"].get("containers", [])):
        if c.get("network") in ("host",):
            raise doc.error(("world", "containers", i, "network"), "a scenario's containers may not use the host network",
                            "use bridge or a network of the world")
    placement.check(doc.data, doc)
    return Scenario(path.name, path, doc.data, doc)


def all_scenarios() -> list[Scenario]:
    return [read(root() / n) for n in names()]
