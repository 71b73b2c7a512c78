"""The runtime's API: one function per user action, typed arguments, errors from runtime.errors.

  networks    create, remove, prune, connect, disconnect, list, inspect, repair
  containers  run (create + start, nothing left behind when it fails), prune
  debug       a toolbox with the host's network tools in a running container's namespace
  system      prune and repair of everything the runtime owns
  compose     up (nothing left behind when it fails), down, stop, ps, logs of a Compose project

The CLI (netdiag/cli) parses, calls these and prints; the policy (what prune removes, when
netdiag's firewall is rewritten, which driver makes a network) lives here and below. Notes the
user should see and that are not errors go to stderr as `netdiag: note: ...` (note()).
"""
from __future__ import annotations

import sys


def note(text: str, level: str = "note") -> None:
    print(f"netdiag: {level}: {text}", file=sys.stderr)


def require_root(what: str) -> None:
    """A clear error (exit 3) when not root: what needs it and how to run it."""
    from ..kernel.syscalls import require_root as check

    check(what)
