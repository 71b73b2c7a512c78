"""The one interface every world has.

    world = SomeWorld(...).create()        # built whole, or (after a failure half-way) torn down and re-raised
    world.run_in(where, argv)              # a program in one of its namespaces (None: its host)
    world.netdiag("ps", where=...)         # the netdiag CLI as that host's user runs it (its env)
    world.destroy()                        # removes everything; safe to call twice and after a failed create
    world.leaks()                          # what is left (namespaces, links, mounts, cgroups, nft tables,
                                           # processes); [] after destroy(), or a bug

A subclass builds in `_build()` and names its namespaces (`namespace(where)`), its environment
(`env_of(where)`) and its leftovers (`_leftovers()`); `destroy()` must cope with any prefix of
`_build()` having run. create() also notes the root namespace's links and nftables tables, and
leaks() reports any added or gone since: a world never changes the namespace it is made from.
"""
from __future__ import annotations

import os
import subprocess
import sys

from .leftovers import NETNS_DIR, root_namespace_state


class World:
    """A world of namespaces (and what runs in them) that plays one or more hosts."""

    name: str = ""
    env: dict

    # -- life -------------------------------------------------------------------------------------------
    def create(self):
        self._root_before = root_namespace_state()
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        raise NotImplementedError

    def leaks(self) -> list[str]:
        """What a destroyed world left behind: its own leftovers, and links or nftables tables that
        appeared in (or went from) the root namespace since create(): no world may change it."""
        before = getattr(self, "_root_before", None)
        now = root_namespace_state() if before is not None else frozenset()
        changed = [f"root namespace: {x} appeared" for x in sorted(now - before)] + \
            [f"root namespace: {x} went away" for x in sorted(before - now)] if before is not None else []
        return self._leftovers() + changed

    def _leftovers(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- running things in it ---------------------------------------------------------------------------
    def namespace(self, where: str | None = None) -> str:
        """The path of the network namespace `where` names (None: the world's host; a path, such
        as a container's /proc/PID/ns/net, names itself)."""
        if where and where.startswith("/"):
            return where
        return f"{NETNS_DIR}/{where or self.name}"

    def env_of(self, where: str | None = None) -> dict:
        """The environment a program run at `where` gets (the host's netdiag state, its DNS ...)."""
        return self.env

    def enter(self, where: str | None = None):
        """A preexec_fn that moves a child into the namespace `where` names."""
        from runtime.kernel.ns import Namespace

        return Namespace(self.namespace(where)).preexec()

    def run_in(self, where: str | None, argv, **kw) -> subprocess.CompletedProcess:
        """argv (a list, never a shell string) in the namespace `where` names; output captured as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(list(argv), preexec_fn=self.enter(where), **kw)

    def netdiag(self, *args: str, where: str | None = None, **kw) -> subprocess.CompletedProcess:
        """The netdiag CLI as if on the host `where` names (default the world's host), with its state."""
        kw.setdefault("env", self.env_of(where))
        return self.run_in(where, [sys.executable, "-m", "netdiag", *args], **kw)

    def user_env(self, where: str | None = None) -> dict:
        """What a user's shell on that host has: its environment with this netdiag on PATH."""
        env = self.env_of(where)
        return {**env, "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", os.environ.get("PATH", ""))}
