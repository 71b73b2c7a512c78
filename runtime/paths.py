"""Where netdiag keeps its state. NETDIAG_ROOT moves all of it (tests and labs use a temp dir)."""
import os
from pathlib import Path


def root() -> Path:
    return Path(os.environ.get("NETDIAG_ROOT", "/var/lib/netdiag"))


def images_dir() -> Path:
    """The OCI image layout (oci-layout, index.json, blobs/sha256/...)."""
    return root() / "images"


def layers_dir() -> Path:
    """Extracted layers, one directory per layer digest, used as overlay lowerdirs."""
    return root() / "layers"


def containers_dir() -> Path:
    return root() / "containers"


def build_cache_dir() -> Path:
    return root() / "build-cache"


def cgroup_parent() -> str:
    """The cgroup (relative to each hierarchy's root) under which containers get their cgroups."""
    return os.environ.get("NETDIAG_CGROUP_PARENT", "netdiag")
