"""Run a fix command netdiag printed, without a shell: the line is split into words (shlex) and
into steps at `&&`; any other shell operator is refused (the user can still run it by hand).
`netdiag ...` steps run this same netdiag (the interpreter running now). Used by `--fix` (health,
explain); the printed commands come from reason's fixes."""
from __future__ import annotations

import shlex
import subprocess
import sys

from runtime.errors import InvalidArgument


def steps(command: str) -> list[list[str]]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for tok in lexer:
        if tok == "&&":
            out.append([])
        elif tok and set(tok) <= set("();<>|&"):
            raise InvalidArgument(f"Will not run {command!r} without a shell", f"it uses the shell operator {tok!r}",
                                  "run it yourself, as root")
        else:
            out[-1].append(tok)
    if any(not s for s in out):
        raise InvalidArgument(f"Cannot run {command!r}", "an empty step", "")
    return out


def run(command: str, timeout: float = 120) -> dict:
    """Each step in turn, stopping at the first that fails. Returns {"command", "returncode", "output"}."""
    output, rc = [], 0
    for argv in steps(command):
        if argv[0] == "netdiag":
            argv = [sys.executable, "-m", "netdiag", *argv[1:]]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            output.append(f"{argv[0]}: {e}")
            rc = 127
            break
        output.append((p.stdout + p.stderr).strip())
        rc = p.returncode
        if rc:
            break
    return {"command": command, "returncode": rc, "output": "\n".join(o for o in output if o)}
