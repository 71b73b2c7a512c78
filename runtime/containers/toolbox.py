"""The host's network tools inside a debug container (`netdiag debug`), whatever its image.

A host program cannot simply be bound into an image: it names its loader by an absolute path
(/lib64/ld-linux-x86-64.so.2) and finds its libraries in the host's directories, which the image
does not have (busybox has no loader at all). So the host directories holding the tools, their
loader and the library path are bound read-only under /host (/usr -> /host/usr), and each tool
gets a wrapper in /host/bin (first on PATH) that runs it with the host's loader and the host's
library path under /host: `ld.so --library-path /host/usr/lib/... --argv0 ip /host/usr/sbin/ip`.
Nothing of the image is covered, so a toolbox image's own tools keep working next to them.
The wrappers are shell scripts: the image needs /bin/sh (busybox, netshoot, alpine, debian do).
"""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths, state

TOOLS = ("ip", "tcpdump", "nft", "iperf3")
PREFIX = "/host"
BIN = PREFIX + "/bin"
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# host directories a tool may live in and be bound from, read-only; never /etc, /home, /root ...
BINDABLE = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/opt")
DEFAULT_LIB_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
# extra arguments a tool needs in a container: Debian's tcpdump drops to the user "tcpdump",
# whom the image's /etc/passwd does not know ("Couldn't find user 'tcpdump'")
EXTRA_ARGS = {"tcpdump": ("-Z", "root")}


@dataclass
class Toolbox:
    volumes: list[str] = field(default_factory=list)  # -v specs: host roots under /host, the wrappers at /host/bin
    tools: list[str] = field(default_factory=list)    # the host tools it has
    missing: list[str] = field(default_factory=list)  # those the host lacks (or keeps where nothing is bound)


def interpreter(path: str) -> str | None:
    """The ELF program interpreter (PT_INTERP) a binary names; None for a static binary or a script."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
            return None
        e, wide = ("<" if head[5] == 1 else ">"), head[4] == 2
        # e_phoff, e_phentsize, e_phnum; in a program header: p_type, p_offset, p_filesz
        if wide:
            phoff, (phentsize, phnum), at = struct.unpack_from(e + "Q", head, 0x20)[0], struct.unpack_from(e + "HH", head, 0x36), "QQ"
        else:
            phoff, (phentsize, phnum), at = struct.unpack_from(e + "I", head, 0x1C)[0], struct.unpack_from(e + "HH", head, 0x2A), "II"
        for i in range(min(phnum, 256)):
            f.seek(phoff + i * phentsize)
            ph = f.read(phentsize)
            if len(ph) < (56 if wide else 32) or struct.unpack_from(e + "I", ph, 0)[0] != 3:  # PT_INTERP
                continue
            offset = struct.unpack_from(e + at[0], ph, 8 if wide else 4)[0]
            size = struct.unpack_from(e + at[0], ph, 32 if wide else 16)[0]
            f.seek(offset)
            return f.read(min(size, 4096)).split(b"\0")[0].decode() or None
    return None


def library_dirs() -> list[str]:
    """The host's library search path: /etc/ld.so.conf (and its includes), then the defaults."""
    out: list[str] = []

    def read(conf: str, depth: int = 0) -> None:
        try:
            lines = Path(conf).read_text().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith("include ") and depth < 4:
                for inc in sorted(glob.glob(line.split(None, 1)[1])):
                    read(inc, depth + 1)
            elif line.startswith("/"):
                out.append(line)

    read("/etc/ld.so.conf")
    return [d for d in dict.fromkeys(out + list(DEFAULT_LIB_DIRS)) if os.path.isdir(d)]


def _root(path: str) -> str | None:
    """The bindable top-level host directory `path` (resolved) lies in."""
    top = "/" + path.lstrip("/").split("/", 1)[0]
    return top if top in BINDABLE else None


def prepare() -> Toolbox:
    """Find the host's tools, write their wrappers (NETDIAG_ROOT/toolbox/bin, rewritten each time)
    and say what to bind. Tools the host lacks are listed as missing, never faked."""
    box, roots, wrappers = Toolbox(), set(), {}
    libs = list(dict.fromkeys(real for d in library_dirs() if _root(real := os.path.realpath(d))))
    for name in TOOLS:
        found = shutil.which(name, path=SEARCH_PATH)
        real = os.path.realpath(found) if found else None
        loader = interpreter(real) if real else None
        loader = os.path.realpath(loader) if loader else None
        if real is None or _root(real) is None or (loader and _root(loader) is None):
            box.missing.append(name)
            continue
        roots.update(_root(p) for p in (real, loader, *libs) if p)
        run = [PREFIX + real, *EXTRA_ARGS.get(name, ())]
        if loader:
            run = [PREFIX + loader, "--library-path", ":".join(PREFIX + d for d in libs), "--argv0", name] + run
        wrappers[name] = "#!/bin/sh\n# netdiag debug: the host's " + real + ", its loader and libraries under " + PREFIX + \
            "\nexec " + " ".join(shlex.quote(a) for a in run) + ' "$@"\n'
        box.tools.append(name)
    bin_dir = paths.root() / "toolbox" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for old in bin_dir.iterdir():
        if old.name not in wrappers:
            old.unlink()
    for name, text in wrappers.items():
        state.write_bytes(bin_dir / name, text.encode())
        os.chmod(bin_dir / name, 0o755)
    box.volumes = [f"{r}:{PREFIX}{r}:ro" for r in sorted(roots)] + [f"{bin_dir}:{BIN}:ro"]
    return box
