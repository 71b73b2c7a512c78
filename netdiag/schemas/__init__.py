"""The documents netdiag writes, versioned and described by JSON Schema files beside this module:
a snapshot of a host (snapshot.schema.json) and a diagnosis (trace.schema.json). Pure data."""
from pathlib import Path

SNAPSHOT = "netdiag.snapshot/1"
DIR = Path(__file__).parent


def path(name: str) -> Path:
    """snapshot -> .../snapshot.schema.json"""
    return DIR / f"{name}.schema.json"
