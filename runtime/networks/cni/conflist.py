"""A CNI network configuration list, found and checked the way libcni's LoadConfList does it.

Where things are: conflists in NETDIAG_CNI_CONF_DIR (default /etc/cni/net.d, the kubelet's and
Podman's), plugins in the directories of CNI_PATH (default /usr/lib/cni, Debian's, then
/opt/cni/bin, the upstream tarball's), cached results under NETDIAG_CNI_CACHE_DIR (default: libcni's
/var/lib/cni on a host, so other CNI tools see netdiag's attachments; NETDIAG_ROOT/cni when a
private state root is set, so a lab's attachments stay in the lab).

Everything is checked before a plugin runs: the file (bounded reader), the list's shape, names
(libcni's rules), each plugin's type (a plain name, no path) and that the plugin is installed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ... import bounded, paths
from ...errors import InvalidArgument, NotFound

DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
DEFAULT_CACHE_DIR = "/var/lib/cni"
MAX_CONF = 1 << 20
# libcni's utils: network names and container ids; interface names are the kernel's
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


class BadConf(InvalidArgument):
    """A conflist that cannot be used; says which file and what to change."""


@dataclass(frozen=True)
class ConfList:
    name: str
    cni_version: str
    plugins: tuple[dict, ...]
    raw: bytes  # the file's bytes: cached with each result, so DEL works after the file changed
    source: str
    disable_check: bool = False
    capabilities: frozenset[str] = field(default_factory=frozenset)

    def bridge_device(self) -> str:
        """The bridge the `bridge` plugin makes (its default cni0), or "" without that plugin."""
        return next((p.get("bridge") or "cni0" for p in self.plugins if p["type"] == "bridge"), "")

    def ipam_range(self) -> tuple[str, str]:
        """(subnet, gateway) of the first host-local range, as far as the conflist says them."""
        for p in self.plugins:
            ipam = p.get("ipam") if isinstance(p.get("ipam"), dict) else {}
            ranges = ipam.get("ranges") or ([[{"subnet": ipam["subnet"], "gateway": ipam.get("gateway", "")}]]
                                            if ipam.get("subnet") else [])
            for rset in ranges:
                for r in rset if isinstance(rset, list) else []:
                    if isinstance(r, dict) and isinstance(r.get("subnet"), str):
                        return r["subnet"], str(r.get("gateway") or "")
        return "", ""


def conf_dir() -> Path:
    return Path(os.environ.get("NETDIAG_CNI_CONF_DIR") or DEFAULT_CONF_DIR)


def plugin_dirs() -> list[str]:
    given = os.environ.get("CNI_PATH")
    return [d for d in given.split(os.pathsep) if d] if given else list(DEFAULT_PLUGIN_DIRS)


def cache_dir() -> Path:
    if os.environ.get("NETDIAG_CNI_CACHE_DIR"):
        return Path(os.environ["NETDIAG_CNI_CACHE_DIR"])
    return paths.root() / "cni" if os.environ.get("NETDIAG_ROOT") else Path(DEFAULT_CACHE_DIR)


def check_name(name: str, what: str = "CNI network name") -> str:
    if not _NAME.match(name or ""):
        raise InvalidArgument(f"Invalid {what} {name!r}", "it starts with a letter or digit and holds only letters, "
                              "digits, '_', '.' and '-' (libcni's rule)", "use the \"name\" of a conflist")
    return name


def load(name: str) -> ConfList:
    """The conflist named `name` in conf_dir(): *.conflist files first, then single *.conf/*.json
    configurations (wrapped into a list of one), each group in file-name order, like libcni."""
    check_name(name)
    d = conf_dir()
    try:
        files = sorted(p for p in d.iterdir() if p.is_file())
    except OSError as e:
        raise NotFound(f"Cannot read the CNI configuration directory {d}", e.strerror or str(e),
                       "create it with a conflist, or point NETDIAG_CNI_CONF_DIR at one") from None
    seen, unusable = [], []
    for single, suffixes in ((False, (".conflist",)), (True, (".conf", ".json"))):
        for path in (p for p in files if p.suffix in suffixes):
            try:
                raw = bounded.read_bytes(path, MAX_CONF)
                doc = bounded.loads_json(raw, str(path))
            except InvalidArgument as e:  # another network's broken file must not hide this one
                unusable.append(str(e))
                continue
            found = doc.get("name") if isinstance(doc, dict) else None
            seen.append(found if isinstance(found, str) else "?")
            if found == name:
                return from_doc(_as_list(doc, path), None, str(path)) if single else from_doc(doc, raw, str(path))
    known = ", ".join(sorted(seen)) or "none"
    why = f"the configurations there name: {known}" + (f"; unusable: {'; '.join(unusable)}" if unusable else "")
    raise NotFound(f"No CNI network {name!r} in {d}", why,
                   f"add a conflist whose \"name\" is {name!r}, or set NETDIAG_CNI_CONF_DIR")


def _as_list(conf: dict, path: Path) -> dict:
    """A single plugin's configuration as a list of one (libcni's ConfListFromConf)."""
    if not isinstance(conf.get("type"), str):
        raise BadConf(f"CNI configuration {path} has no plugin \"type\"", "", "name the plugin to run, e.g. \"type\": \"bridge\"")
    return {"name": conf.get("name"), "cniVersion": conf.get("cniVersion", ""), "plugins": [conf]}


def from_doc(doc, raw: bytes | None, source: str) -> ConfList:
    """Check a parsed conflist; `raw` is what gets cached (the file's bytes, or the doc re-encoded)."""
    import json

    def bad(what: str, fix: str) -> BadConf:
        return BadConf(f"CNI configuration {source}: {what}", "a plugin would be run with a configuration it cannot use", fix)

    if not isinstance(doc, dict):
        raise bad("not a JSON object", "write a conflist object with name, cniVersion and plugins")
    name, version, plugins = doc.get("name"), doc.get("cniVersion", ""), doc.get("plugins")
    if not isinstance(name, str) or not name:
        raise bad("no \"name\"", "give the network a name")
    check_name(name)
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise bad(f"\"cniVersion\" {version!r} is not a version", "use e.g. \"cniVersion\": \"1.0.0\"")
    if not isinstance(plugins, list) or not plugins:
        raise bad("\"plugins\" is not a non-empty list", "list the plugins to run, e.g. bridge then portmap")
    caps: set[str] = set()
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            raise bad(f"plugin {i + 1} has no \"type\"", "name the plugin to run, e.g. \"type\": \"bridge\"")
        if not _NAME.match(plugin["type"]):
            raise bad(f"plugin type {plugin['type']!r} is not a plain name", "name a plugin in CNI_PATH, without a path")
        declared = plugin.get("capabilities", {})
        if not isinstance(declared, dict):
            raise bad(f"plugin {plugin['type']}'s \"capabilities\" is not an object", "use e.g. {\"portMappings\": true}")
        caps.update(k for k, on in declared.items() if on is True)
    disable = doc.get("disableCheck", False)
    disable = disable is True or str(disable).lower() == "true"
    raw = raw if raw is not None else json.dumps(doc).encode()
    return ConfList(name, version, tuple(plugins), raw, source, disable, frozenset(caps))


def from_cache(raw: bytes, display: str) -> ConfList:
    """The conflist an attachment was made with, from its cached bytes."""
    return from_doc(bounded.loads_json(raw, display), raw, display)


def find_plugin(kind: str) -> str:
    """The executable of plugin `kind` in plugin_dirs() (libcni's FindInPath)."""
    for d in plugin_dirs():
        path = os.path.join(d, kind)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NotFound(f"CNI plugin {kind!r} is not installed", f"it is in none of {os.pathsep.join(plugin_dirs())}",
                   "install containernetworking-plugins (scripts/setup does), or set CNI_PATH")
