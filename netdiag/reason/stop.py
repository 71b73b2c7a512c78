"""Where a walk ends: the verdict, the cause code, a sentence, the evidence and a checkable fix."""
from __future__ import annotations

from .causes import CAUSES
from .fixes import Fix
from .result import Evidence


class Stop(Exception):
    """The packet dies here (or the walk cannot go on)."""

    def __init__(self, verdict: str, cause: str | None, summary: str, fix: Fix | str | None = None,
                 evidence: list | None = None):
        super().__init__(summary)
        if cause is not None and cause not in CAUSES:
            raise ValueError(f"unknown cause code {cause!r}")  # every code is in the catalogue
        if isinstance(fix, str):
            fix = Fix(advice=fix, why_unchecked="the model cannot express this change") if fix else None
        self.verdict, self.cause, self.summary, self.fix = verdict, cause, summary, fix
        self.evidence = [Evidence.of(e) for e in evidence or []]


def sentence(text: str, names: list[str]) -> str:
    """`text` as a sentence: its first letter upper case, unless it begins with a name (a
    container, a namespace, a device), whose spelling is not ours to change."""
    if not text or any(n and text.startswith(n) for n in names):
        return text
    return text[0].upper() + text[1:]
