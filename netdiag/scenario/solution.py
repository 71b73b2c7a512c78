"""The reference solution as a learner reads it: shell text that works when pasted. Steps are
argument lists run in a place of the world (the lab host, its outside, a container, a host of a
cluster); printed, each becomes one line for the shell `netdiag scenario shell` opens, quoted with
shlex, its variables expanded for this run, and the place turned into the command that enters it
from that shell (`nsenter -t PID -n` for a container, `ip netns exec` for the outside namespace).
Consecutive steps of one shell form one block, headed by the command that opens that shell."""
from __future__ import annotations

import shlex
import textwrap

from runtime.errors import NetdiagError

from .cluster import is_cluster
from .common import _VAR
from .library import Scenario
from .placement import host_names


def blocks(scenario: Scenario, session=None) -> list[tuple[str, list[str]]]:
    """[(the command opening the shell, [the lines to paste there])]. Without a running session
    the variables stay as `${...}` (their values exist only in a running world)."""
    out: list[tuple[str, list[str]]] = []
    for step in scenario.spec["solution"]["steps"]:
        shell, line = shell_line(scenario, step, session)
        if out and out[-1][0] == shell:
            out[-1][1].append(line)
        else:
            out.append((shell, [line]))
    return out


def shell_line(scenario: Scenario, step: dict, session=None) -> tuple[str, str]:
    """(the `netdiag scenario shell ...` to paste `step` into, the line to paste)."""
    expand = session.expand if session is not None else (lambda text: text)
    argv = [expand(a) for a in step["run"]]
    where = step.get("in")
    if is_cluster(scenario):
        hosts = host_names(scenario.spec)
        host = step.get("host") or (where if where in hosts else None)
        if host is None and where is not None:  # a container: the shell of the host that runs it
            host = session.host_of(where) if session is not None else _placed(scenario, where) or hosts[0]
        if where is not None and where not in hosts:
            argv = ["nsenter", "-t", expand(f"${{pid:{where}}}"), "-n", *argv]
        return f"netdiag scenario shell {scenario.slug} {host or hosts[0]}", shlex.join(argv)
    if where == "outside":
        argv = ["ip", "netns", "exec", expand("${outside_ns}"), *argv]
    elif where not in (None, "lab"):
        argv = ["nsenter", "-t", expand(f"${{pid:{where}}}"), "-n", *argv]
    return f"netdiag scenario shell {scenario.slug}", shlex.join(argv)


def _placed(scenario: Scenario, container: str) -> str | None:
    return next((c.get("host") for c in scenario.spec["world"].get("containers", []) if c["name"] == container), None)


def text(scenario: Scenario, session=None) -> str:
    """What `netdiag scenario solution` prints: the explanation, what was broken, and the blocks."""
    sol = scenario.spec["solution"]
    parts = [textwrap.fill(" ".join(sol["explain"].split()), 100)]
    planted = [f["say"] for f in scenario.spec.get("faults", []) if f.get("say")]
    if planted:
        parts.append("What was broken:\n" + "\n".join(f"  - {s}" for s in planted))
    for shell, lines in blocks(scenario, session):
        parts.append(f"Run in `{shell}`:\n" + "\n".join(f"    {line}" for line in lines))
    if session is None and "${" in parts[-1]:
        parts.append("(The ${...} are this run's names and addresses: start the scenario and ask again to see them.)")
    return "\n\n".join(parts)


def expanded(text: str, session=None) -> str:
    """`text` (a hint) with this run's values for its `${...}`; a variable the world cannot answer
    now (a container the learner removed) stays as written."""
    if session is None:
        return text

    def one(m):
        try:
            return session.expand(m.group(0))
        except NetdiagError:
            return m.group(0)

    return _VAR.sub(one, text)
