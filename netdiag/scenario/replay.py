"""`netdiag scenario replay SNAPSHOT`: rebuild, on this machine, a world of fresh network namespaces
that reproduces a snapshot's network, so a real incident becomes an exercise and `netdiag trace`
in it (run in the replayed host namespace) reaches the same diagnosis.

The plan (which namespaces, links, routes ...; what cannot be rebuilt and why) is pure and
validated: replay_plan.py. This module applies it through runtime.kernel, inside the new namespaces
only (never the one it runs in), starts stand-in servers (standin.py) and takes it all down.
Each namespace starts from a lab's explicit sysctls (netdiag/worlds/host.py fresh_sysctls), never the
machine's, and then gets the snapshot's own. The replica is a world of netdiag.worlds' interface
(`Replica`: create, run_in by the snapshot's namespace ids, destroy, leaks); `rebuild`/`remove`
are its entry points by record, which the registry keeps for a removal from another process.
"""
from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address

from runtime.errors import Conflict, KernelError, NetdiagError
from runtime.kernel import addr, bridge, fdb, link, neigh, ns, route, sysctl, tools, vxlan

from ..worlds import World, fresh_sysctls
from . import replay_plan
from .common import kill_in, netns_inodes

READY_TIMEOUT = 10.0
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,14}$")


class Replica(World):
    """A snapshot's network rebuilt as fresh namespaces, on netdiag.worlds' interface: `where` names
    one of them by the snapshot's namespace id (or its netns name); None is the snapshot's host.
    Its `record` (JSON-able, kept by the registry) is all `Replica.of(record)` needs to remove it
    from any process."""

    def __init__(self, snapshot: dict | None, prefix: str, say=lambda text: None):
        self.snapshot, self.prefix, self.say = snapshot, prefix, say
        self.name, self.env = prefix, dict(os.environ)
        self.record = {"prefix": prefix, "namespaces": {}, "host": None, "stubs": [], "pids": [], "skipped": []}
        self._made: list[str] = []  # namespaces made so far: what a failure half-way removes
        self._alive: list[int] = []

    @classmethod
    def of(cls, record: dict) -> "Replica":
        r = cls(None, str(record.get("prefix") or ""))
        r.record = record
        return r

    def _build(self) -> None:
        p = replay_plan.plan(self.snapshot, self.prefix)
        spaces = p["spaces"]
        taken = [s["name"] for s in spaces if os.path.exists(_path(s["name"]))]
        if taken:  # refused before anything is made: a failure here removes nothing of theirs
            raise Conflict(f"Namespace {taken[0]} already exists", f"a replay with prefix {self.prefix} may be running",
                           "remove that replay first, or choose another prefix")
        record = self.record
        record.update(host=p["host"], skipped=list(p["skipped"]))
        say = self.say
        say(f"{len(spaces)} namespaces: {', '.join(s['name'] for s in spaces)}")
        for s in spaces:
            _do(f"create namespace {s['name']}", ns.create, s["name"])
            self._made.append(s["name"])
            # a lab's explicit sysctls, not the machine's; _layer3 then sets the snapshot's own
            _do(f"set the sysctls of namespace {s['name']}", fresh_sysctls, _path(s["name"]))
        say(f"{sum(len(s['links']) for s in spaces)} interfaces, {len(p['veths'])} veth pairs")
        _links(spaces, p["veths"])
        for s in spaces:
            with ns.netns(_path(s["name"])):
                _layer3(s, record["skipped"])
        say("firewalls: " + (", ".join(s["name"] for s in spaces if s["nft"] or s["iptables"]) or "none"))
        for s in spaces:
            _firewall(s)
        servers = [s for s in spaces if s["servers"]]
        say(f"{sum(len(s['servers']) for s in servers)} stand-in listeners in {len(servers)} namespaces")
        _standins(servers, record)
        record.update(namespaces=p["namespaces"], stubs=sorted(p["stubs"]))

    def _names(self) -> list[str]:
        """Its namespaces: the record's and those made so far, only names of this prefix."""
        rec = self.record
        return sorted({n for n in [*dict(rec.get("namespaces") or {}).values(), *(rec.get("stubs") or []), *self._made]
                       if isinstance(n, str) and NAME.fullmatch(n) and n.startswith(self.prefix + "-")})

    def destroy(self) -> None:
        """The stand-ins, anything else running in its namespaces, the namespaces."""
        names = self._names()
        self._alive = sorted(kill_in(netns_inodes(names)))  # the stand-ins, and whatever a learner started in there
        for n in names:
            try:
                ns.remove(n)
            except OSError:
                pass
        if self._made and (left := self._leftovers()):
            self.say(f"could not remove: {', '.join(left)}")

    def _leftovers(self) -> list[str]:
        return [f"netns {n}" for n in self._names() if os.path.exists(_path(n))] + [f"process {pid}" for pid in self._alive]

    def namespace(self, where: str | None = None) -> str:
        if where is None:
            return _path(self.record["host"])
        return super().namespace((self.record.get("namespaces") or {}).get(where, where))


def rebuild(snapshot: dict, prefix: str, say=lambda text: None) -> dict:
    """Build the replica; return its record: {"prefix", "namespaces": {snapshot ns id: netns name},
    "host": netns name of the snapshot's host namespace, "stubs": [stub netns names], "pids": [stand-in
    server pids], "skipped": ["what could not be reproduced and why", ...]}. On any failure remove
    what was built, then raise."""
    return Replica(snapshot, prefix, say).create().record


def remove(record: dict) -> list[str]:
    """Remove everything rebuild made (servers, anything else running in its namespaces, the
    namespaces); return what was left behind (should be [])."""
    r = Replica.of(record)
    r.destroy()
    return r.leaks()


# -- applying the plan -------------------------------------------------------------------------------
def _path(name: str) -> str:
    return f"/run/netns/{name}"


def _do(what: str, fn, *args, **kw):
    """One kernel step; its failure names what was being done (the kernel's words as the reason)."""
    try:
        return fn(*args, **kw)
    except NetdiagError:
        raise
    except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError, OSError
        raise KernelError(f"Replay could not {what}", str(e), "this needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); "
                          "the reason above names the kernel's objection") from e


def _links(spaces: list[dict], veths: list[dict]) -> None:
    """Bridges, veth pairs across namespaces (born in place), VXLAN devices on their underlay, then
    each link's MAC, MTU, master, port flags and state: ports before the bridge comes up."""
    for s in spaces:
        with ns.netns(_path(s["name"])):
            for x in s["links"]:
                if x["kind"] == "bridge":
                    _do(f"create bridge {x['name']} in {s['name']}", bridge.create, x["name"], x["mtu"], x["mac"])
    for v in veths:
        a, b = v["a"], v["b"]
        fd = os.open(_path(b["ns"]), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with ns.netns(_path(a["ns"])):
                _do(f"create veth {a['ns']}/{a['name']} - {b['ns']}/{b['name']}", link.create_veth,
                    a["name"], b["name"], fd, a["mtu"] or 1500, b["mac"])
        finally:
            os.close(fd)
    for s in spaces:
        with ns.netns(_path(s["name"])):
            for x in s["links"]:
                if x["kind"] == "vxlan":
                    v = x["vxlan"]
                    _do(f"create VXLAN {x['name']} in {s['name']}", vxlan.create, x["name"], v["vni"], v["port"],
                        v["local"], v["dev"], v["learning"], x["mtu"], x["mac"])
            for x in s["links"]:
                if x["kind"] != "loopback":
                    _do(f"set {x['name']}'s MAC/MTU in {s['name']}", link.configure, x["name"], mac=x["mac"], mtu=x["mtu"])
            for x in s["links"]:
                if x["master"]:
                    _do(f"enslave {x['name']} to {x['master']} in {s['name']}", link.configure, x["name"], master=x["master"])
                    if x["hairpin"] or x["isolated"]:
                        _do(f"set {x['name']}'s port flags", link.set_port, x["name"], hairpin=x["hairpin"], isolated=x["isolated"])
            for x in sorted(s["links"], key=lambda x: x["kind"] == "bridge"):
                _do(f"set {x['name']} {'up' if x['up'] else 'down'} in {s['name']}", link.configure, x["name"], up=x["up"])


def _layer3(s: dict, skipped: list) -> None:
    """Addresses, sysctls, routes and rules made equal to the snapshot's (the kernel adds routes of
    its own for each address: those the snapshot lacks go), permanent neighbours, VXLAN FDB. The
    calling thread is in the namespace."""
    name = s["name"]
    for a in s["addresses"]:
        try:
            addr.add(link.index(a["dev"]), IPv4Address(a["address"]), a["prefixlen"])
        except FileExistsError:
            pass  # 127.0.0.1 on lo comes with lo
        except OSError as e:
            raise KernelError(f"Replay could not add {a['address']}/{a['prefixlen']} to {a['dev']} in {name}", str(e)) from e
    for key, path, value in s["sysctls"]:
        if sysctl.read(path) is None:
            skipped.append(f"{name}: sysctl {key}: not present here (e.g. br_netfilter is not loaded)")
            continue
        try:
            sysctl.write(path, value)
        except OSError as e:
            skipped.append(f"{name}: sysctl {key}={value}: {e}")
    if s["routes"] is not None:
        _reconcile(name, s["routes"], _routes_here(), replay_plan.route_key, route.add, route.delete,
                   "route", skipped, first=lambda r: r.get("gateway") is not None)
    if s["rules"] is not None:
        here = [r for r in (replay_plan.normal_rule(x) for x in route.rules()) if r]
        _reconcile(name, s["rules"], here, replay_plan.rule_key, route.add_rule, route.delete_rule, "rule", skipped)
    for n in s["neighbours"]:
        _try(skipped, f"{name}: permanent neighbour {n['address']} on {n['dev']}", neigh.add,
             n["dev"], n["address"], n["lladdr"])
    for f in s["fdb"]:
        _try(skipped, f"{name}: VXLAN FDB {f['lladdr']} -> {f['dst']} on {f['dev']}", fdb.append,
             f["dev"], f["lladdr"], f["dst"], f["vni"])


def _reconcile(name, want, have, key, add, delete, what, skipped, first=lambda x: False) -> None:
    """Add what is missing (next hops without a gateway first: gateways must be reachable), then
    remove what the kernel made that the snapshot does not have."""
    have_keys, want_keys = {key(x) for x in have}, {key(x) for x in want}
    for x in sorted((x for x in want if key(x) not in have_keys), key=first):
        _try(skipped, f"{name}: {what} {_show(x)}", add, x)
    for x in have:
        if key(x) not in want_keys:
            _try(skipped, f"{name}: removing the kernel's {what} {_show(x)}", delete, x)


def _show(x: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in x.items() if v not in (None, "", 0) and k not in ("proto",))


def _try(skipped: list, what: str, fn, *args) -> None:
    """A step the world can do without (listed in skipped with the kernel's reason)."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - pyroute2's NetlinkError, OSError
        skipped.append(f"{what}: the kernel refused it ({e})")


def _routes_here() -> list[dict]:
    """This namespace's IPv4 routes in the snapshot's form."""
    types, scopes = {v: k for k, v in route.TYPES.items()}, {v: k for k, v in route.SCOPES.items()}
    names = {x["index"]: x["name"] for x in link.dump()}
    out = []
    for r in route.dump():
        raw = {"table": r["table"], "dst": f"{r['dst']}/{r['dst_len']}" if r["dst"] else "default",
               "type": types.get(r["type"], str(r["type"])), "scope": scopes.get(r["scope"], "global"),
               "proto": r["proto"], "gateway": r["gateway"], "dev": names.get(r["oif"]), "prefsrc": r["prefsrc"],
               "metric": r["metric"]}
        normal, _ = replay_plan.normal_route(raw, set(names.values()))
        if normal:
            out.append(normal)
    return out


def _firewall(s: dict) -> None:
    """The snapshot's ruleset, loaded in the namespace from a temp file (nft -j -f; one transaction),
    and the iptables-nft tables from their iptables-nft-save text (iptables-nft-restore)."""
    loads = []
    if s["nft"]:
        loads.append(([tools.tool("nft"), "-j", "-f"], json.dumps({"nftables": s["nft"]})))
    for family, text in sorted(s["iptables"].items()):
        loads.append(([tools.tool({"ip": "iptables-nft-restore", "ip6": "ip6tables-nft-restore"}[family])], text))
    for argv, text in loads:
        with tempfile.NamedTemporaryFile("w", prefix="netdiag-replay-", suffix=".rules") as f:
            f.write(text)
            f.flush()
            p = tools.run([*argv, f.name], ns=ns.Namespace(_path(s["name"])))
        if p.returncode != 0:
            raise KernelError(f"Replay could not load the firewall of {s['label']} into {s['name']}",
                              f"{os.path.basename(argv[0])}: {p.stderr.strip()[-400:]}",
                              "the snapshot's ruleset may use a feature this kernel or nft lacks")


def _standins(spaces: list[dict], record: dict) -> None:
    """One stand-in process per program and namespace, named like the program and bound where it
    listened; waits until each has bound (or refused) every socket."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    started = []
    groups = {}
    for s in spaces:
        for x in s["servers"]:
            groups.setdefault((s["name"], x["process"]), (s, []))[1].append(f"{x['proto']}/{x['local']}/{x['port']}/{x['process']}")
    for s, specs in groups.values():
        proc = subprocess.Popen([sys.executable, "-m", "netdiag.scenario.standin", *specs], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/",
                                start_new_session=True, preexec_fn=ns.enter(_path(s["name"])))
        record["pids"].append(proc.pid)
        started.append((s, proc))
    for s, proc in started:
        report = _ready(proc)
        for spec, error in report.get("failed", {}).items():
            record["skipped"].append(f"{s['name']}: stand-in for {spec}: {error}")
        if not report.get("bound"):
            record["pids"].remove(proc.pid)
            proc.wait()


def _ready(proc: subprocess.Popen) -> dict:
    line = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            line += chunk
    proc.stdout.close()
    try:
        return json.loads(line)
    except ValueError:
        raise KernelError("A stand-in server did not start", f"it printed {line[:200]!r}",
                          "run 'python -m netdiag.scenario.standin tcp/127.0.0.1/8080' to see why") from None


__all__ = ["rebuild", "remove"]
