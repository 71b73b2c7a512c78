"""The built-in `busybox` image, made offline from the host's busybox-static (no registry needed)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import state
from ..errors import ImageError

BUSYBOX_REF = "busybox:latest"
_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def provides(ref: str) -> bool:
    return ref == BUSYBOX_REF


def host_busybox() -> Path:
    for c in _CANDIDATES:
        p = Path(c)
        if p.is_file():
            return p
    raise ImageError(
        "Cannot make the built-in busybox image",
        "no busybox binary was found at /bin/busybox",
        "install Debian's busybox-static ('apt-get install busybox-static'), or run scripts/setup",
    )


def _is_static(binary: Path) -> bool:
    with open(binary, "rb") as f:
        head = f.read(4096)
    return b"/lib64/ld-linux" not in head and b"/lib/ld-linux" not in head


def provide(ref: str):
    """The store's fallback for `ref`: the busybox image, made on first use; None for other names."""
    return ensure(ref) if provides(ref) else None


def ensure(ref: str = BUSYBOX_REF):
    """Create the busybox image if the store lacks it; returns the Image."""
    from . import layers
    from .store import adding, commit, get, list_images, put_layer_file, writing

    binary = host_busybox()
    if not _is_static(binary):
        raise ImageError(
            f"{binary} is dynamically linked",
            "a container root has no shared libraries, so only a static busybox works",
            "install Debian's busybox-static",
        )
    # List applets with their install paths (bin/sh, sbin/ip, usr/bin/wget...). Fixed argv, no shell.
    import subprocess
    from datetime import datetime, timezone

    applets = subprocess.run([str(binary), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    with adding(f"install the built-in {ref} image"), state.scratch_dir("busybox") as tmp:
        rootfs = tmp / "rootfs"
        for d, mode in (("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755), ("etc", 0o755),
                        ("root", 0o700), ("tmp", 0o1777), ("var/www", 0o755), ("home", 0o755),
                        ("proc", 0o555), ("sys", 0o555), ("dev", 0o755)):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
            os.chmod(rootfs / d, mode)
        shutil.copyfile(binary, rootfs / "bin/busybox")
        os.chmod(rootfs / "bin/busybox", 0o755)
        for applet in applets:
            target = rootfs / applet
            if applet == "bin/busybox" or target.exists() or target.is_symlink():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", target)
        (rootfs / "etc/passwd").write_text(_PASSWD)
        (rootfs / "etc/group").write_text(_GROUP)
        tar = tmp / "layer.tar"
        layers.tar_directory(rootfs, tar)
        config = {
            # the binary's time, not the clock's: the same busybox gives the same image id on every run
            "created": datetime.fromtimestamp(int(os.stat(binary).st_mtime), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "history": [{"created_by": f"netdiag: built-in image from the host's {binary}"}],
        }
        with state.locked("builtin-busybox"):
            for img in list_images():
                if ref in img.tags:
                    return img
            with writing():  # the layer blob is referenced by the index before prune may look
                commit(config, [put_layer_file(tar)], tag=ref)
    return get(ref)
