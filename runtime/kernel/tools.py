"""The programs netdiag runs from the host, found one way (kernel tools, and etcd, haproxy, dockerd
for labs and scenarios); the kernel tools it still runs are run one way (iptables-nft-save and
-restore, whose xt rules only they can print and load; nft -f for a whole JSON ruleset; iptables
for Docker's DOCKER-USER chain, whose comments nft's JSON cannot show).

`tool("nft")` is the program's path, searched in PATH and then the sbin directories (a root shell
without them on PATH still finds what apt installed), or KernelError naming the package to
install. `run(argv, ns=...)` runs it, in a namespace when given, and never through a shell."""
from __future__ import annotations

import os
import shutil

from ..errors import KernelError

SBIN = ("/usr/sbin", "/sbin")
PACKAGES = {"nft": "nftables", "ip": "iproute2", "bridge": "iproute2", "tc": "iproute2", "sysctl": "procps"}


def search_path() -> str:
    """PATH with the sbin directories appended."""
    return os.pathsep.join([os.environ.get("PATH", ""), *SBIN])


def find(name: str, *alternatives: str) -> str | None:
    """The path of the first of `name`, `alternatives` that is installed, else None."""
    path = search_path()
    return next((found for n in (name, *alternatives) if (found := shutil.which(n, path=path))), None)


def tool(name: str, *alternatives: str, why: str = "") -> str:
    """Like find(), but a missing program is a KernelError saying what to install."""
    found = find(name, *alternatives)
    if found is None:
        package = PACKAGES.get(name, "iptables" if "tables" in name else name)
        raise KernelError(f"{name} is not installed", why or f"netdiag runs {name} for this",
                          f"install it (apt-get install {package}; scripts/setup does this)")
    return found


def run(argv: list[str], *, ns=None, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `argv` (argv[0] from tool()) with no stdin, capturing its text output; in the network
    namespace `ns` (a Namespace) when given, else in the calling thread's. Raises OSError and
    subprocess.TimeoutExpired; a non-zero exit is the caller's to judge."""
    import subprocess  # not at the top: a bridge `run` imports this module and rarely runs a tool

    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env,
                          preexec_fn=ns.preexec() if ns is not None else None)
