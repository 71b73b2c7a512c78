"""Running CNI plugins as the spec says (SPEC.md, "Execution Protocol"; libcni's AddNetworkList,
CheckNetworkList, DelNetworkList, re-done here):

- a plugin gets CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH in its environment
  and its network configuration on stdin: the list's plugin entry with the list's `name` and
  `cniVersion`, `prevResult` (the previous plugin's result on ADD; the cached result on CHECK and
  DEL) and `runtimeConfig` holding only the capabilities the entry declares (`portMappings` ...);
- ADD runs the plugins in order, each result the next one's prevResult, and caches the last one
  with the list's bytes (libcni's `cniCacheV1` file, CACHE/results/NET-CONTAINERID-IFNAME);
- CHECK runs them in order against the cached result; DEL in reverse order, then drops the cache.
  DEL succeeds when things are already gone (the plugins' promise; netdiag relies on it).
A failing plugin's error object (`code`, `msg`, `details`) becomes a PluginError that quotes it.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ... import bounded, state
from ...errors import NetdiagError
from ...kernel import pidns
from ...kernel.tools import search_path
from . import conflist

CACHE_KIND = "cniCacheV1"
TIMEOUT = 60  # seconds per plugin: the bridge plugin waits for its veth, host-local for its lock
MAX_OUTPUT = 1 << 20


class PluginError(NetdiagError):
    """A CNI plugin refused or failed."""


@dataclass(frozen=True)
class RuntimeConf:
    container_id: str
    netns: str
    ifname: str
    capability_args: dict = field(default_factory=dict)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def run_plugin(kind: str, command: str, stdin: dict, rt: RuntimeConf | None) -> dict | None:
    """One plugin run; its parsed stdout (None when it printed nothing, as DEL and CHECK do)."""
    path = conflist.find_plugin(kind)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    # the plugins run iptables and ip by name: a root shell without the sbin directories must work too
    env.update(PATH=search_path(), CNI_COMMAND=command, CNI_PATH=os.pathsep.join(conflist.plugin_dirs()))
    if rt is not None:
        env.update(CNI_CONTAINERID=rt.container_id, CNI_NETNS=rt.netns, CNI_IFNAME=rt.ifname)
    try:
        with pidns.own_children():  # from a container's monitor: not a process of the container
            p = subprocess.run([path], input=json.dumps(stdin).encode(), capture_output=True, env=env, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PluginError(f"CNI plugin {kind} did not answer {command} within {TIMEOUT} s", "it may wait for a lock",
                          "look for a stuck plugin process") from None
    except OSError as e:
        raise PluginError(f"CNI plugin {path} cannot be run", e.strerror or str(e), "reinstall containernetworking-plugins") from None
    out = p.stdout[:MAX_OUTPUT]
    if p.returncode != 0:
        raise _failure(kind, command, out, p.stderr)
    if not out.strip():
        return None
    try:
        return json.loads(out)
    except ValueError:
        raise PluginError(f"CNI plugin {kind} printed no JSON result for {command}", "", "") from None


def _failure(kind: str, command: str, out: bytes, err: bytes) -> PluginError:
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "msg" in doc:
        what = f"{doc['msg']}" + (f": {doc['details']}" if doc.get("details") else "")
        why = f"CNI error code {doc.get('code')}"
    else:
        what, why = bounded.excerpt((err or out).decode("utf-8", "replace").strip(), 300), "it printed no CNI error object"
    return PluginError(f"CNI plugin {kind} failed ({command}): {what}", why,
                       "fix the conflist (or what the plugin names) and run again")


def supported_versions(kind: str, version: str) -> list[str]:
    """VERSION: the spec versions the plugin accepts."""
    doc = run_plugin(kind, "VERSION", {"cniVersion": version}, None) or {}
    return [v for v in doc.get("supportedVersions", []) if isinstance(v, str)]


def _stdin(conf: conflist.ConfList, plugin: dict, prev: dict | None, rt: RuntimeConf) -> dict:
    """libcni's buildOneConfig: the entry with the list's name and version, prevResult, runtimeConfig."""
    out = dict(plugin, name=conf.name, cniVersion=conf.cni_version)
    if prev is not None:
        out["prevResult"] = prev
    caps = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in rt.capability_args.items() if caps.get(k) is True}
    if runtime:
        out["runtimeConfig"] = runtime
    return out


def add(conf: conflist.ConfList, rt: RuntimeConf) -> dict:
    result = None
    for plugin in conf.plugins:
        result = run_plugin(plugin["type"], "ADD", _stdin(conf, plugin, result, rt), rt)
        if not isinstance(result, dict):
            raise PluginError(f"CNI plugin {plugin['type']} returned no result for ADD", "the spec requires one", "")
    _cache_write(conf, rt, result)
    return result


def check(conf: conflist.ConfList, rt: RuntimeConf) -> None:
    """CHECK the attachment (spec 0.4.0 and later; a list may disable it)."""
    if _version_tuple(conf.cni_version) < (0, 4, 0):
        raise PluginError(f"CNI network {conf.name} is version {conf.cni_version}", "CHECK needs version 0.4.0 or later", "")
    if conf.disable_check:
        return
    cached = cached_result(conf.name, rt)
    for plugin in conf.plugins:
        run_plugin(plugin["type"], "CHECK", _stdin(conf, plugin, cached, rt), rt)


def delete(conf: conflist.ConfList, rt: RuntimeConf) -> None:
    """DEL in reverse order with the cached result; the cache goes once every plugin succeeded.
    Unlike libcni, a failing plugin does not stop the others' DEL (the first error is raised after
    all ran): a firewall plugin that cannot parse its config must not keep the bridge plugin from
    releasing the address and the veth. A later DEL repeats them all, which the spec allows."""
    cached = cached_result(conf.name, rt) if _version_tuple(conf.cni_version) >= (0, 4, 0) else None
    failed = []
    for plugin in reversed(conf.plugins):
        try:
            run_plugin(plugin["type"], "DEL", _stdin(conf, plugin, cached, rt), rt)
        except NetdiagError as e:
            failed.append(e)
    if failed:
        raise failed[0]
    cache_path(conf.name, rt.container_id, rt.ifname).unlink(missing_ok=True)


def delete_attachment(net: str, container_id: str, ifname: str, netns: str,
                      current: conflist.ConfList | None = None, caps: dict | None = None) -> bool:
    """DEL an attachment with the conflist and capability arguments it was made with (cached),
    else `current` or the conflist as it is now and `caps` (a failed ADD's: nothing was cached).
    False when no conflist is left to tell the plugins anything (nothing was run)."""
    conf = cached_conf(net, container_id, ifname) or current
    if conf is None:
        try:
            conf = conflist.load(net)
        except NetdiagError:
            return False
    entry = cached(conf.name, container_id, ifname) or {}
    delete(conf, RuntimeConf(container_id, netns, ifname, entry.get("capabilityArgs") or caps or {}))
    return True


# -- the result cache (libcni's file format, so other CNI tools read netdiag's attachments) ---------
def cache_path(net: str, container_id: str, ifname: str) -> Path:
    return conflist.cache_dir() / "results" / f"{net}-{container_id}-{ifname}"


def _cache_write(conf: conflist.ConfList, rt: RuntimeConf, result: dict) -> None:
    doc = {"kind": CACHE_KIND, "containerId": rt.container_id, "config": base64.b64encode(conf.raw).decode(),
           "ifName": rt.ifname, "networkName": conf.name, "netns": rt.netns, "result": result}
    if rt.capability_args:
        doc["capabilityArgs"] = rt.capability_args
    path = cache_path(conf.name, rt.container_id, rt.ifname)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.write_json(path, doc)
    os.chmod(path, 0o600)


def cached(net: str, container_id: str, ifname: str) -> dict | None:
    """An attachment's cache entry, or None when there is none (or it is unusable, as libcni treats it)."""
    path = cache_path(net, container_id, ifname)
    try:
        doc = bounded.loads_json(bounded.read_bytes(path, conflist.MAX_CONF), str(path))
    except NetdiagError:
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == CACHE_KIND else None


def cached_all() -> list[tuple[str, dict]]:
    """Every usable entry of the result cache, as (file, document): libcni's files, whoever wrote
    them (a kubelet's runtime, Podman, netdiag), in file-name order."""
    d = conflist.cache_dir() / "results"
    try:
        names = sorted(p.name for p in d.iterdir())
    except OSError:
        return []
    out = []
    for name in names:
        try:
            doc = bounded.loads_json(bounded.read_bytes(d / name, conflist.MAX_CONF), str(d / name))
        except NetdiagError:
            continue
        if isinstance(doc, dict) and doc.get("kind") == CACHE_KIND and isinstance(doc.get("result"), dict):
            out.append((str(d / name), doc))
    return out


def cached_result(net: str, rt: RuntimeConf) -> dict | None:
    doc = cached(net, rt.container_id, rt.ifname)
    result = (doc or {}).get("result")
    return result if isinstance(result, dict) else None


def cached_conf(net: str, container_id: str, ifname: str) -> conflist.ConfList | None:
    """The conflist an attachment was made with (it may have changed or gone since)."""
    doc = cached(net, container_id, ifname)
    if not doc or not isinstance(doc.get("config"), str):
        return None
    try:
        return conflist.from_cache(base64.b64decode(doc["config"]), str(cache_path(net, container_id, ifname)))
    except (ValueError, NetdiagError):
        return None
