"""Run a fix command netdiag printed, without a shell: the line is split into words (shlex) and
into steps at `&&`; any other shell operator is refused (the user can still run it by hand).
`netdiag ...` steps run this same netdiag (the interpreter running now)."""
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


# -- proofs of a health check's fix --------------------------------------------------------------------

def loss_check(model, rule_ns: str, rule: dict, retrace) -> dict:
    """PACKET_LOSS's fix (the loss rule deleted) on a copy of the model and traced again: the static
    path, which calls a path with a rule that drops at random `unknown (PACKET_LOSS)`, must then
    deliver, request and reply (another loss rule on the way keeps it unknown)."""
    from ..reason import fixes

    return fixes.check(model, fixes.Fix(apply=fixes.remove_rule(rule_ns, rule["family"], rule["table"], rule["chain"],
                                                                 rule["handle"])), retrace)


def dns_names(model, network: str, joining: list[dict] = ()) -> set[str]:
    """The names a network's embedded DNS answers for: its containers' names and aliases there
    (`joining`: containers the fix connects to it, by name)."""
    out = {c["name"].lower() for c in joining}
    for c in model.containers():
        n = (c.get("networks") or {}).get(network)
        if n is not None:
            out |= {c["name"].lower(), *(a.lower() for a in n.get("aliases") or [])}
    return out


def dns_check(model, src_name: str, network: str, name: str, joining: list[dict] = ()) -> dict:
    """A DNS fix that puts the source on `network` (connected, or recreated there): on the model,
    does that network's embedded DNS answer for `name`? (Whether packets then flow is not modelled:
    joining a network adds an interface, which a model copy cannot add.)"""
    key = name.rstrip(".").lower()
    known = dns_names(model, network, joining)
    if key in known:
        return {"checked": True, "delivers": True, "detail": f"on the model: with {src_name} on network {network}, its "
                f"embedded DNS answers for {name} (a container of that network: {', '.join(sorted(known))})"}
    return {"checked": True, "delivers": False, "detail": f"on the model: network {network}'s embedded DNS knows "
            f"{', '.join(sorted(known)) or 'no name'}, not {name}"}
