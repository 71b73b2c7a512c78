"""`--verify-fix`: a printed fix, proven live on a throwaway replica, never on the real host.

The namespaces the path touches (both legs, as diagnosed and as the model check retraced it with
the fix; plus what the fix names: world_snapshot) are rebuilt as fresh namespaces from the model
(netdiag/scenario/replay.py; stand-in servers answer where programs listened); without a model
check, the whole world around the host, as `scenario replay` rebuilds it. The flow is probed
there first: a replica where the flow already works proves nothing, and says so. Then the fix
command, rewritten to the replica's names, runs there, and the flow is probed again with a real
connection (request and answer: both directions). The replica is removed afterwards, also on
failure or Ctrl-C, and is recorded in the replay registry while it exists (`netdiag scenario stop
--all` removes one a killed process left behind).

Rewriting (pure: `steps`): a fix command is one or more simple commands joined by `&&` or `;`.
Each runs in a namespace: `ip netns exec NAME ...`, `ip -n NAME ...`, `nsenter -t PID -n ...` and
`nsenter --net=PATH ...` name it; a bare command runs in the host namespace. Each namespace is
mapped to its replica (the replay keeps interface names); an `nft ... handle N` is mapped to the
replica's handle of the rule at the same place in its chain. Only programs that act on one
network namespace's kernel state run (ip, nft, iptables, bridge, tc, sysctl net.*, ...), in a
private mount namespace whose /run/netns is empty, so no name can reach a real namespace. A
command at netdiag's or Docker's level (`netdiag ...`, `docker ...`) acts through state the
replica does not have: it is reported as not verifiable, never run, unless the diagnosis gives the
kernel change it makes (`fix_kernel`, planned by the owner's driver): that runs instead, and the
verdict says so.
"""
from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

from .replica_probe import _guard, probe, probe_many
from .reason.result import Diagnosis, FixClaim

# programs that change only the kernel state of the network namespace they run in
KERNEL_TOOLS = {"ip", "nft", "iptables", "iptables-nft", "iptables-legacy", "ip6tables", "ip6tables-nft",
                "ip6tables-legacy", "bridge", "tc", "sysctl", "conntrack", "ethtool", "arptables", "ebtables"}
OWNERS = {"netdiag": "netdiag's state (its networks and containers)", "docker": "Docker's state (its engine)",
          "podman": "Podman's state", "nerdctl": "containerd's state", "systemctl": "the host's services",
          "service": "the host's services"}
SEPARATORS = {"&&", ";"}
SETTLE = 3  # attempts after the fix: a route's neighbour may take a moment to resolve


class NotVerifiable(Exception):
    """The fix cannot run on a replica; the message says why."""


@dataclass
class Names:
    """The original world's namespaces -> the replica's: by ip netns name, by pid, and the host's."""
    host: tuple[str, str]                                           # (original ns id, replica netns name)
    netns: dict[str, tuple[str, str]] = field(default_factory=dict)  # original netns name -> (ns id, replica)
    pids: dict[int, tuple[str, str]] = field(default_factory=dict)   # pid in the original -> (ns id, replica)


@dataclass
class Step:
    ns_id: str           # the original namespace the command acts on
    netns: str           # the replica's namespace it runs in
    argv: list[str]
    then: str = "&&"     # how the next step follows: "&&" (only if this one worked) or ";"
    nft_handle: int | None = None  # index in argv of an nft rule handle to map to the replica's

    def shown(self) -> str:
        return f"ip netns exec {self.netns} {shlex.join(self.argv)}"


def names_for(model_snapshot: dict, record: dict) -> Names:
    """The mapping of a rebuilt world (replay.rebuild's record) from the snapshot it was built from."""
    spaces = model_snapshot["namespaces"]
    host_id = model_snapshot["host"]
    out = Names(host=(host_id, record["namespaces"][host_id]))
    for ns_id, replica in record["namespaces"].items():
        ns = spaces.get(ns_id) or {}
        for n in ns.get("netns_names") or []:
            out.netns[n] = (ns_id, replica)
        for p in ns.get("pids") or []:
            if isinstance(p, int):
                out.pids[p] = (ns_id, replica)
    return out


# -- rewriting (pure) --------------------------------------------------------------------------------
def split(command: str) -> list[tuple[list[str], str]]:
    """A command line -> [(argv, separator that follows it)]. Only `&&` and `;` join commands; any
    other shell syntax (pipes, redirections, subshells, expansions, background) is refused."""
    lex = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError as e:
        raise NotVerifiable(f"the command cannot be parsed ({e})") from None
    out, argv = [], []
    for t in tokens:
        if t in SEPARATORS:
            if not argv:
                raise NotVerifiable(f"an empty command before {t!r}")
            out.append((argv, t))
            argv = []
        elif t and set(t) <= set(";&|<>()"):
            raise NotVerifiable(f"it uses shell syntax ({t}) that is not run on a replica")
        elif "$" in t or "`" in t:
            raise NotVerifiable(f"it uses a shell expansion ({t}) that is not run on a replica")
        else:
            argv.append(t)
    if argv:
        out.append((argv, "&&"))
    if not out:
        raise NotVerifiable("the fix has no command")
    return out


def steps(command: str, names: Names) -> list[Step]:
    """The fix as steps on the replica, or NotVerifiable with the reason."""
    out = []
    for argv, sep in split(command):
        ns_id, netns, argv = _where(argv, names)
        step = Step(ns_id, netns, argv, then=sep)
        _check_program(step)
        out.append(step)
    return out


def _lookup_name(name: str, names: Names) -> tuple[str, str]:
    if name not in names.netns:
        raise NotVerifiable(f"it names the namespace {name}, which the replica does not rebuild")
    return names.netns[name]


def _where(argv: list[str], names: Names) -> tuple[str, str, list[str]]:
    """(original ns id, replica netns, the argv to run there) of one simple command."""
    argv = list(argv)
    while argv and argv[0] == "sudo":
        argv.pop(0)
    if argv and "=" in argv[0] and not argv[0].startswith("-"):
        raise NotVerifiable(f"it sets an environment variable ({argv[0]})")
    if not argv:
        raise NotVerifiable("an empty command")
    prog = os.path.basename(argv[0])
    if prog == "ip" and argv[1:3] == ["netns", "exec"]:
        if len(argv) < 5:
            raise NotVerifiable("'ip netns exec' without a namespace and a command")
        ns_id, netns = _lookup_name(argv[3], names)
        inner = argv[4:]
        if inner and os.path.basename(inner[0]) in ("ip", "nsenter") and (
                inner[1:3] == ["netns", "exec"] or os.path.basename(inner[0]) == "nsenter"):
            raise NotVerifiable("it enters a namespace from inside another")
        return ns_id, netns, inner
    if prog in ("ip", "bridge", "tc") and len(argv) > 2 and argv[1] in ("-n", "-netns", "--netns"):
        ns_id, netns = _lookup_name(argv[2], names)
        return ns_id, netns, [argv[0], *argv[3:]]
    if prog == "nsenter":
        return _nsenter(argv, names)
    return names.host[0], names.host[1], argv


def _nsenter(argv: list[str], names: Names) -> tuple[str, str, list[str]]:
    target, net, k = None, None, 1
    while k < len(argv) and argv[k].startswith("-"):
        a = argv[k]
        if a in ("-t", "--target") and k + 1 < len(argv):
            target, k = argv[k + 1], k + 2
            continue
        if a.startswith("--target="):
            target = a.split("=", 1)[1]
        elif a.startswith("-t") and a[2:].isdigit():
            target = a[2:]
        elif a in ("-n", "--net"):
            net = net or True
        elif a.startswith("--net="):
            net = a.split("=", 1)[1]
        elif a == "--":
            k += 1
            break
        else:
            raise NotVerifiable(f"nsenter {a}: it enters more than a network namespace")
        k += 1
    inner = argv[k:]
    if not inner:
        raise NotVerifiable("nsenter without a command")
    if isinstance(net, str):
        if net.startswith(("/run/netns/", "/var/run/netns/")):
            ns_id, netns = _lookup_name(net.rsplit("/", 1)[1], names)
            return ns_id, netns, inner
        pid = net.split("/")[2] if net.startswith("/proc/") and net.endswith("/ns/net") else None
        target = pid if pid else None
        if target is None:
            raise NotVerifiable(f"nsenter --net={net}: not a namespace the replica rebuilds")
    if net is None or target is None or not str(target).isdigit():
        raise NotVerifiable("nsenter without -t PID -n: not a network namespace the replica rebuilds")
    if int(target) not in names.pids:
        raise NotVerifiable(f"it enters the namespace of process {target}, which the replica does not rebuild")
    ns_id, netns = names.pids[int(target)]
    return ns_id, netns, inner


def _check_program(step: Step) -> None:
    prog = os.path.basename(step.argv[0])
    if prog in OWNERS:
        raise NotVerifiable(f"not verifiable on a replica: '{prog} ...' acts through {OWNERS[prog]}, "
                            "which the replica (plain namespaces) does not have")
    if prog not in KERNEL_TOOLS:
        raise NotVerifiable(f"runs {prog}, which is not one of the kernel tools the replica confines "
                            f"({', '.join(sorted(KERNEL_TOOLS))})")
    args = step.argv[1:]
    if prog in ("ip", "bridge", "tc"):
        if "netns" in args or any(a in ("-n", "-netns", "--netns", "-all", "-a") for a in args):
            raise NotVerifiable(f"'{shlex.join(step.argv)}' reaches other namespaces")
        if any(a in ("-b", "-batch", "--batch") for a in args):
            raise NotVerifiable(f"'{prog} -batch' reads its commands from a file that cannot be checked")
    if prog == "sysctl":
        keys = [a.split("=", 1)[0] for a in args if not a.startswith("-")]
        if any(a in ("-p", "--load", "--system", "-f") for a in args) or not keys:
            raise NotVerifiable("sysctl that loads files or names no key")
        bad = [k for k in keys if not k.replace("/", ".").startswith("net.")]
        if bad:
            raise NotVerifiable(f"sysctl {bad[0]} is not a network namespace's setting: it would change the machine")
    if prog == "nft" and "handle" in args:
        k = args.index("handle")
        if k + 1 < len(args) and args[k + 1].isdigit() and len(args) > 4 and args[0] in ("delete", "replace", "insert", "add"):
            step.nft_handle = k + 2  # in argv (prog first)
    if prog == "nft" and "position" in args:
        raise NotVerifiable("'nft ... position N' names a rule handle the replica may not share")


def nft_chain_of(argv: list[str]) -> tuple[str, str, str] | None:
    """(family, table, chain) of `nft delete|replace|insert|add rule [FAMILY] TABLE CHAIN ... handle N`."""
    args = argv[1:]
    while args and args[0].startswith("-"):
        args = args[1:]
    if len(args) < 4 or args[1] != "rule":
        return None
    rest = args[2:]
    if rest[0] in ("ip", "ip6", "inet", "arp", "bridge", "netdev"):
        family, rest = rest[0], rest[1:]
    else:
        family = "ip"
    return (family, rest[0], rest[1]) if len(rest) >= 2 else None


def map_handle(original: list[int], replica: list[int], handle: int) -> int | None:
    """The replica's handle of the rule at the place `handle` has in the original chain (the
    replica loads each chain's rules in order, but its kernel numbers them afresh)."""
    if handle not in original or len(original) != len(replica):
        return None
    return replica[original.index(handle)]


def chain_handles(ruleset: list, family: str, table: str, chain: str) -> list[int]:
    """Rule handles of one chain, in order, from nft JSON items."""
    return [i["rule"].get("handle") for i in ruleset if isinstance(i, dict) and "rule" in i
            and (i["rule"].get("family"), i["rule"].get("table"), i["rule"].get("chain")) == (family, table, chain)]


# -- the proof (pure) --------------------------------------------------------------------------------
def proof(fix: FixClaim) -> str | None:
    """Which proof was made of the fix, in one line: 'checked on the model (both directions)',
    'verified on a replica', both, or 'no proof' with why. None where there is no fix command."""
    if not fix.command:
        return None
    check, verified = fix.check or {}, fix.verified
    made, missing = [], []
    if check.get("checked") and check.get("delivers"):
        both = check.get("both_ways")
        if both is None:  # fixes.check says so in its detail when the reply's way could not be followed
            both = "could not be followed" not in str(check.get("detail"))
        made.append("checked on the model (both directions)" if both else "checked on the model (the request only)")
    else:
        missing.append(f"not on the model: {check.get('detail') or 'not checked'}")
    if verified is None:
        missing.append("not on a replica: not tried (use --verify-fix)")
    elif verified.get("replica") is True and verified.get("kernel_equivalent"):
        made.append("its kernel change verified on a replica (the command itself, "
                    f"{verified['kernel_equivalent']['why'].removeprefix('the command itself is ')}, was not run there)")
    elif verified.get("replica") is True:
        made.append("verified on a replica")
    else:
        missing.append(f"not on a replica: {verified.get('detail')}")
    if not made:
        return "no proof: " + "; ".join(missing)
    return " and ".join(made) + (f" ({'; '.join(missing)})" if missing else "")


# -- the replica (root) ------------------------------------------------------------------------------
def world_snapshot(model, result: Diagnosis | None = None, command: str = "") -> dict:
    """The part of the model a replica rebuilds. With a diagnosis (`result`) whose fix was checked
    on the model: the host, the namespaces its path crosses (the request and the reply, as broken
    and as the model check retraced it with the fix applied), those the fix command names, and the
    far ends of veths the path leaves by; veths to anything else are left out (their routes and
    neighbours with them), so no namespace off the path is read or rebuilt. Otherwise: the host,
    its containers and every namespace joined to them by veth pairs."""
    spaces = model.namespaces
    host = model.snap["host"]
    after = ((result.fix.check if result is not None else None) or {}).get("after") or {}
    if result is not None and "namespaces" not in after:  # where the fixed path goes is not known: the whole world
        result = None
    if result is None:
        kinds = {i: (spaces.meta(i) if hasattr(spaces, "meta") else spaces[i]).get("kind") for i in spaces}
        start = [host] + sorted(i for i, k in kinds.items() if k == "container" and i != host)
        seen, todo = list(start), list(start)
        while todo:
            ns = spaces.get(todo.pop(0)) or {}
            for link in ns.get("links") or []:
                peer = (link.get("peer") or {}).get("ns") if link.get("kind") == "veth" else None
                if peer not in seen and peer in spaces and spaces.get(peer) is not None:
                    seen.append(peer)
                    todo.append(peer)
        keep, trim = seen, False
    else:
        keep = list(dict.fromkeys([host] + [h.namespace for h in result.hops if h.namespace in spaces]
                                  + [i for i in after["namespaces"] if i in spaces] + named_by(model, command)))
        for h in result.hops:  # a veth the path leaves by: its far end too
            ns = spaces.get(h.namespace) or {}
            link = next((x for x in ns.get("links") or [] if x["name"] == h.interface and x.get("kind") == "veth"), None)
            peer = ((link or {}).get("peer") or {}).get("ns")
            if peer in spaces and peer not in keep and spaces.get(peer) is not None:
                keep.append(peer)
        trim = True
    snap = {k: v for k, v in model.snap.items() if k != "namespaces"}
    snap["namespaces"] = {i: spaces.get(i) for i in keep if spaces.get(i) is not None}
    if trim:
        snap["namespaces"] = {i: _without_veths_out(ns, snap["namespaces"]) for i, ns in snap["namespaces"].items()}
    snap.pop("probes", None)
    return snap


def _without_veths_out(ns: dict, kept: dict) -> dict:
    """`ns` without its veths to namespaces the replica does not rebuild (each would otherwise be a
    stub namespace of its own), nor the routes, neighbours and addresses on them."""
    gone = {x["name"] for x in ns.get("links") or [] if x.get("kind") == "veth"
            and (x.get("peer") or {}).get("ns") not in kept and (x.get("peer") or {}).get("ns") is not None}
    if not gone:
        return ns
    out = dict(ns)
    out["links"] = [x for x in ns["links"] if x["name"] not in gone]
    for key, dev in (("routes", "dev"), ("neighbours", "ifname"), ("addresses", "ifname"), ("fdb", "ifname")):
        if isinstance(ns.get(key), list):
            out[key] = [r for r in ns[key] if r.get(dev) not in gone]
    return out


def named_by(model, command: str) -> list[str]:
    """Ids of the namespaces a fix command acts in (by `ip netns exec NAME`, `ip -n`, `nsenter -t PID`)."""
    if not command:
        return []
    spaces = model.namespaces
    names = Names(host=(model.snap["host"], ""))
    for i in spaces:
        meta = spaces.meta(i) if hasattr(spaces, "meta") else spaces[i]
        for n in meta.get("netns_names") or []:
            names.netns[n] = (i, "")
        for p in meta.get("pids") or []:
            if isinstance(p, int):
                names.pids[p] = (i, "")
    out = []
    try:
        for argv, _ in split(command):
            try:
                out.append(_where(argv, names)[0])
            except NotVerifiable:
                continue
    except NotVerifiable:
        return []
    return out


def _path(netns: str) -> str:
    return f"/run/netns/{netns}"


def _run(step: Step, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(step.argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=_guard(_path(step.netns)), cwd="/")


def _replica_handles(netns: str, family: str, table: str, chain: str) -> list[int] | None:
    import json

    p = _run(Step("", netns, ["nft", "-j", "list", "chain", family, table, chain]))
    if p.returncode != 0:
        return None
    try:
        return chain_handles(json.loads(p.stdout).get("nftables", []), family, table, chain)
    except ValueError:
        return None


def _map_nft(step: Step, snap: dict) -> None:
    where = nft_chain_of(step.argv)
    ns = snap["namespaces"].get(step.ns_id) or {}
    original = chain_handles(((ns.get("nftables") or {}).get("nftables") or []), *where) if where else []
    replica = _replica_handles(step.netns, *where) if where else None
    handle = int(step.argv[step.nft_handle])
    mapped = map_handle(original, replica or [], handle)
    if mapped is None:
        raise NotVerifiable(f"nft rule handle {handle} has no counterpart in the replica's chain")
    step.argv[step.nft_handle] = str(mapped)


class _Terminate:
    """SIGTERM raises (like Ctrl-C) while a replica exists, so the finally that removes it runs."""

    def __enter__(self):
        self.old = None
        if threading.current_thread() is threading.main_thread():
            def stop(signum, frame):
                raise KeyboardInterrupt("terminated")
            self.old = signal.getsignal(signal.SIGTERM)  # read first: a ^C right after the change keeps it
            try:
                signal.signal(signal.SIGTERM, stop)
            except BaseException:
                signal.signal(signal.SIGTERM, self.old)
                raise
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)


def verify(model, result: Diagnosis, *, command: str | None = None, timeout: float = 2.0, say=lambda text: None,
           count: int = 1) -> dict:
    """`fix_verified` for a diagnosis (its source namespace, dst_ip, proto, port, size, and the fix
    checked on the model). `command`: the fix to verify (default: the diagnosis's fix command).
    `count` > 1 (a TCP flow with a loss): that many handshakes each time; before the fix some must
    be lost, after it none."""
    command = command if command is not None else result.fix.command

    def no(detail: str, **more) -> dict:
        return {"replica": None, "detail": detail, **more}

    if not command:
        return no("no fix command to verify")
    if any(h.kind == "vxlan" for h in result.hops):
        return no("the path crosses hosts over VXLAN: a replica rebuilds this host's namespaces, not the other "
                  "hosts' (checked on the model only; verify by applying it, then trace again)")
    if os.geteuid() != 0:
        return no("a replica needs root (it builds network namespaces)")
    hops = result.hops
    if not hops or not result.dst_ip:
        return no("the diagnosis has no source namespace or destination address to probe")
    instead = None  # the owner-level command a kernel equivalent stands in for
    try:
        split(command)
    except NotVerifiable as e:
        return no(str(e))
    kernel = result.fix.kernel if command == result.fix.command else None
    if kernel:
        try:
            steps(command, Names(host=("", "")))
        except NotVerifiable as e:
            if "not verifiable on a replica" in str(e):  # netdiag's or Docker's command: its kernel change instead
                instead, command = (command, str(e)), kernel
    from .scenario import registry, replay, replay_plan
    from runtime.errors import NetdiagError

    snap = world_snapshot(model, result, command)
    src_id = hops[0].namespace
    if src_id not in snap["namespaces"]:
        return no(f"the source namespace {hops[0].label} is not joined to the host: not rebuilt")
    prefix = f"vf{secrets.token_hex(3)}"
    try:
        plan = replay_plan.plan(snap, prefix)
        names = names_for(snap, {"namespaces": plan["namespaces"]})
        todo = steps(command, names)
    except NotVerifiable as e:
        return no(str(e))
    except NetdiagError as e:
        return no(f"the world cannot be rebuilt: {e}")
    pending = {"prefix": prefix, "namespaces": plan["namespaces"], "host": plan["host"], "stubs": sorted(plan["stubs"]),
               "pids": [], "purpose": "verify-fix"}
    out = no("", commands=[s.shown() for s in todo])
    if instead:
        out["kernel_equivalent"] = {"command": instead[0], "ran_instead": command,
                                    "why": f"the command itself is {instead[1].removeprefix('not verifiable on a replica: ')}"}
    with _Terminate():
        try:
            registry.save_replay(pending)  # found by `scenario stop --all` if this process is killed
        except (OSError, NetdiagError):
            pass
        record = None
        try:
            t0 = time.monotonic()
            record = replay.rebuild(snap, prefix, say=say)
            out["replica_world"] = {"prefix": prefix, "namespaces": sorted(record["namespaces"].values()),
                                    "stubs": record["stubs"], "built_in": round(time.monotonic() - t0, 2),
                                    "not_reproduced": record["skipped"]}
            src_path = _path(record["namespaces"][src_id])
            args = (src_path, result.dst_ip, result.proto, int(result.port or 0), int(result.size or 0), timeout)
            if count > 1 and result.proto == "tcp":
                args = (src_path, result.dst_ip, int(result.port or 0), count)
                probe_once = probe_many
            else:
                probe_once = probe
            before = probe_once(*args)
            out["probe"] = {"flow": f"{result.proto} {result.dst_ip}" + (f":{result.port}" if result.proto != "icmp" else ""),
                            "before": before}
            if before["ok"]:
                out["detail"] = ("the replica does not reproduce the failure (the flow works there before the fix), so it "
                                 "proves nothing; what the replica lacks: " + "; ".join(record["skipped"][:3]))
                return out
            ran = []
            for s in todo:
                if s.nft_handle is not None:
                    _map_nft(s, snap)
                p = _run(s)
                ran.append({"command": s.shown(), "returncode": p.returncode, "output": (p.stderr or p.stdout).strip()[-300:]})
                if p.returncode != 0 and s.then == "&&":
                    break
            out["commands"], out["applied"] = [s.shown() for s in todo], ran
            if ran[-1]["returncode"] != 0:
                out.update(replica=False, detail=f"the fix failed on the replica: {ran[-1]['command']}: exit "
                                                 f"{ran[-1]['returncode']}: {ran[-1]['output'] or 'no output'}")
                return out
            for attempt in range(SETTLE):
                after = probe_once(*args)
                if after["ok"]:
                    break
                time.sleep(0.2)
            out["probe"]["after"] = after
            if after["ok"]:
                out.update(replica=True, detail=f"on a replica of {len(record['namespaces'])} namespaces the flow failed "
                                                f"({before['outcome']}) before the fix and works after it ({after['detail']})"
                           + (f"; what ran there is the kernel change the command makes ({command}), not the command "
                              f"itself, which cannot run on a replica" if instead else ""))
            else:
                out.update(replica=False, detail=f"on a replica the flow still fails after the fix ({after['outcome']}: "
                                                 f"{after['detail']})" + (f"; what ran there is the kernel change the command "
                                                                          f"makes ({command})" if instead else ""))
            return out
        except NotVerifiable as e:
            out.update(replica=None, detail=str(e))
            return out
        except NetdiagError as e:
            out.update(replica=None, detail=f"the replica could not be built: {e}")
            return out
        except (OSError, subprocess.SubprocessError) as e:  # a probe or a step the kernel or a tool refused
            out.update(replica=None, detail=f"the verification could not run: {type(e).__name__}: {e}")
            return out
        finally:
            left = replay.remove(record or pending)
            if left:
                out["left_behind"] = left
            else:
                try:
                    registry.forget_replay(prefix)
                except OSError:
                    pass


__all__ = ["verify", "proof", "steps", "split", "Names", "NotVerifiable", "map_handle", "world_snapshot", "probe"]
