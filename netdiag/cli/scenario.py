"""`netdiag scenario ...`: the training library. This module parses and renders; the work is in
netdiag/scenario/ (library: finding and validating; session: building, grading, tearing down)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .app import app

scenario_app = typer.Typer(
    help="Broken networks to learn from: start one, diagnose it with netdiag, fix it, get graded.",
    no_args_is_help=True,
    suggest_commands=False,
)
app.add_typer(scenario_app, name="scenario")

EXIT_FIXED, EXIT_BROKEN = 0, 1
# Set by `scenario shell` (with NETDIAG_SCENARIO, the scenario's name) to the NETDIAG_ROOT the
# scenarios were started from: there NETDIAG_ROOT is the world's own state (so `netdiag ps` acts on
# the world), and `netdiag scenario hint` still finds the running scenario, that one by default.
SCENARIO_HOME = "NETDIAG_SCENARIO_HOME"


@scenario_app.callback()
def _scenarios_root():
    if os.environ.get(SCENARIO_HOME):
        os.environ["NETDIAG_ROOT"] = os.environ[SCENARIO_HOME]

_NAME = typer.Argument(None, help="The scenario: its number, slug or folder name (default: the one running)")
_JSON = typer.Option(False, "--json", help="Print the result as JSON")


def _lib():
    from ..scenario import library

    return library


def _running_one(ref: str | None):
    """The scenario `ref` names, or the only one running."""
    from runtime.errors import InvalidArgument, NotFound

    from ..scenario import registry

    ref = ref or os.environ.get("NETDIAG_SCENARIO")  # in a scenario's shell: that scenario
    if ref:
        return _lib().load(ref)
    running = [r["name"] for r in registry.running()]
    if len(running) == 1:
        return _lib().load(running[0])
    if not running:
        raise NotFound("No scenario is running", "", "start one: 'netdiag scenario list', then 'netdiag scenario start NAME'")
    raise InvalidArgument("Several scenarios are running", f"running: {', '.join(running)}", "name the one you mean")


def _session(ref: str | None):
    from ..scenario.session import Session

    return Session.attach(_running_one(ref))


def _say(text: str) -> None:
    print(f"  ... {text}", file=sys.stderr, flush=True)


@scenario_app.command("list")
def list_(json_out: bool = _JSON):
    """The library: number, title, difficulty, topics, and whether you fixed it (and with how many hints)."""
    from ..scenario import registry

    done, running = registry.progress(), {r["name"] for r in registry.running()}
    rows = []
    for s in _lib().all_scenarios():
        d = done.get(s.name)
        rows.append({"name": s.name, "title": s.spec["title"], "difficulty": s.spec["difficulty"],
                     "topics": s.spec["topics"], "running": s.name in running, "done": bool(d),
                     "hints_used": d["hints"] if d else None})
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    from .output import table

    def state(r):
        return "running" if r["running"] else (f"fixed ({r['hints_used']} hints)" if r["done"] else "")

    def topics(r):  # the first three; `show` and --json have them all
        return ", ".join(r["topics"][:3]) + (", ..." if len(r["topics"]) > 3 else "")

    table(["#", "SLUG", "TITLE", "LEVEL", "TOPICS", "STATE"],
          [[r["name"][:2], r["name"][3:], r["title"], r["difficulty"], topics(r), state(r)] for r in rows])


@scenario_app.command()
def show(name: str = typer.Argument(..., help="Number, slug or folder name"), json_out: bool = _JSON):
    """The story, as a user would report it, and what it teaches."""
    s = _lib().load(name)
    if json_out:
        print(json.dumps({"name": s.name, "path": str(s.path), "readme": s.readme(), **{k: s.spec[k] for k in ("title", "difficulty", "topics")}},
                         indent=2))
        return
    print(f"{s.name}  [{s.spec['difficulty']}]  {', '.join(s.spec['topics'])}\n")
    print(s.readme().rstrip())


@scenario_app.command()
def start(name: str = typer.Argument(..., help="Number, slug or folder name"), json_out: bool = _JSON):
    """Build the broken world and print the briefing.

    The world runs in a lab namespace of its own (its own eth0, nftables and netdiag state): your
    host's network is not touched."""
    from ..scenario.session import Session

    s = _lib().load(name)
    print(f"Starting {s.name}: {s.spec['title']}", file=sys.stderr)
    session = Session.start(s, progress=_say)
    if json_out:
        print(json.dumps({"name": s.name, "lab": session.lab.name, "state_dir": str(session.lab.state_dir),
                          **({"hosts": list(session.hosts)} if session.multi_host else {})}, indent=2))
        return
    story = s.readme().split("\n## ")[0].strip()
    print(f"\n{story}\n")
    if session.multi_host:
        print(session.briefing())
        return
    print(f"The world runs in lab {session.lab.name}: a host of its own ({session.expand('${host_ip}')}); the internet is its outside "
          f"namespace {session.expand('${outside}')} ({session.expand('${outside_ip}')}). Get a shell there, where `netdiag` acts on it:\n"
          f"    netdiag scenario shell {s.slug}            (the lab host)\n"
          f"    netdiag scenario shell {s.slug} CONTAINER  (inside a container)\n"
          f"Then: netdiag scenario hint | check | solution | reset | stop")


@scenario_app.command()
def status(json_out: bool = _JSON):
    """Which scenarios are running, since when, hints used, and their containers."""
    from ..scenario import registry

    rows = registry.running()
    for r in rows:
        r["containers"] = _containers(r) if not r.get("corrupt") else []
    replays = [{"name": f"replay {r['prefix']}", "lab": r["host"], "started": r.get("started", "?"), "hints": "-",
                "containers": sorted(set(r["namespaces"].values()) - {r["host"]}), "replay": r["prefix"]} for r in registry.replays()]
    if json_out:
        print(json.dumps(rows + replays, indent=2))
        return
    if not rows + replays:
        print("No scenario is running. 'netdiag scenario list' shows the library.")
        return
    from .output import table

    table(["SCENARIO", "LAB", "STARTED", "HINTS", "CONTAINERS"],
          [[r["name"], r.get("lab", "?"), r.get("started", "?") + (" (building)" if r.get("building") else ""),
            str(r.get("hints", 0)), ", ".join(r["containers"])] for r in rows + replays])


def _containers(rec: dict) -> list[str]:
    """The world's containers, as its own `netdiag ps` sees them (on each host of a cluster world;
    best effort: status must show the other scenarios whatever happens to one)."""
    from ..scenario.session import Session

    try:
        return Session.attach(_lib().load(rec["name"])).containers()
    except Exception:  # noqa: BLE001
        return []


@scenario_app.command()
def hint(name: Optional[str] = _NAME):
    """The next hint (each call shows one more; they are counted)."""
    from ..scenario import registry

    s = _running_one(name)
    with registry.locked():
        rec = registry.get(s.name) or {}
        n = rec.get("hints", 0)
        hints = s.spec["hints"]
        if n < len(hints):
            rec["hints"] = n + 1
            registry.save(rec)
    if n >= len(hints):
        print(f"No more hints ({len(hints)} shown). 'netdiag scenario solution {s.slug}' explains the fix.")
        return
    print(f"Hint {n + 1}/{len(hints)}: {_expanded(s, hints[n])}")


def _expanded(s, text: str) -> str:
    from ..scenario.solution import expanded

    return expanded(text, _attached(s))


@scenario_app.command()
def check(name: Optional[str] = _NAME, json_out: bool = _JSON,
          verify_fix: bool = typer.Option(False, "--verify-fix", help="Prove each failed check's fix live on a throwaway "
                                          "replica of the world (never on the world itself)")):
    """Grade: run the scenario's checks in its world. Exit 0 when it is fixed, 1 when not."""
    from ..scenario import registry

    session = _session(name)
    print(f"Checking {session.scenario.name} ...", file=sys.stderr)
    results = session.grade(verify_fix=verify_fix)
    fixed = all(r["passed"] for r in results)
    if fixed:
        registry.mark_done(session.scenario.name, (registry.get(session.scenario.name) or {}).get("hints", 0))
    if json_out:
        print(json.dumps({"name": session.scenario.name, "fixed": fixed, "checks": results}, indent=2))
    else:
        for r in results:
            mark = {True: "PASS", False: "FAIL"}.get(r["passed"], "SKIP")
            print(f"  {mark}  {r['name']}" + (f"\n        {r['detail']}" if r["passed"] is not True and r["detail"] else ""))
            if r.get("fix_proof"):
                print(f"        proof: {r['fix_proof']}")
        print("\nFixed. Well done." if fixed else f"\nNot fixed yet: {sum(r['passed'] is not True for r in results)} of "
              f"{len(results)} checks fail. 'netdiag scenario hint' gives a clue.")
    raise typer.Exit(EXIT_FIXED if fixed else EXIT_BROKEN)


@scenario_app.command()
def solution(name: Optional[str] = _NAME, apply: bool = typer.Option(False, "--apply", help="Run the solution's steps in the world"),
             json_out: bool = _JSON):
    """The reference fix, explained, as commands to paste into the shell each block names (or --apply)."""
    from ..scenario import solution as reference
    from ..scenario.session import Session

    s = _running_one(name) if apply else (_lib().load(name) if name else _running_one(None))
    if json_out and not apply:
        print(json.dumps(s.spec["solution"], indent=2))
        return
    session = _attached(s)
    print(reference.text(s, session))
    if apply:
        session = session or Session.attach(s)
        for step in s.spec["solution"]["steps"]:
            p = session.step(step)
            if p.stdout.strip():
                print(p.stdout.rstrip())
        print("\nApplied. 'netdiag scenario check' grades it.")


def _attached(s):
    """The running world of scenario `s`, or None: printed text names this run's pids and addresses."""
    from ..scenario import registry
    from ..scenario.session import Session

    rec = registry.get(s.name)
    return Session.attach(s) if rec and not rec.get("corrupt") and not rec.get("building") else None


@scenario_app.command()
def reset(name: Optional[str] = _NAME):
    """Back to broken: remove the world and build it again, faults included."""
    from ..scenario.session import Session

    s = _running_one(name)
    Session.attach(s).destroy()
    Session.start(s, progress=_say)
    print(f"{s.name} is broken again, as at the start.")


@scenario_app.command()
def stop(name: Optional[str] = typer.Argument(None, help="The scenario (default: the one running), or a replay's prefix"),
         all_: bool = typer.Option(False, "--all", help="Stop every running scenario and replay")):
    """Remove everything the scenario (or replay) made: processes, containers, namespaces, state."""
    from runtime.errors import NetdiagError

    from ..scenario import registry
    from ..scenario.session import Session

    if name and not all_ and registry.replay(name):
        return _stop_replay(name)
    names = [r["name"] for r in registry.running()] if all_ else [_running_one(name).name]
    left = []
    for n in names:
        left += Session.attach(_lib().load(n)).destroy()
        print(f"stopped {n}")
    for r in registry.replays() if all_ else []:
        _stop_replay(r["prefix"])
    if left:
        raise NetdiagError("Something was left behind", "; ".join(left), "report it; 'netdiag system prune' may remove it")


@scenario_app.command()
def shell(name: str = typer.Argument(..., help="Number, slug or folder name"),
          container: Optional[str] = typer.Argument(None, help="A container of the world (default: the lab host); "
                                                    "in a world of several hosts, a host or a container (default: the first host)"),
          command: Optional[str] = typer.Option(None, "-c", help="Run this shell command instead of an interactive shell")):
    """A shell on the scenario's lab host, or in a container.

    On the lab host, netdiag, ip and nft act on the world. In a world of several hosts: on a host
    (`shell NAME h2`), or in a container on the host that runs it."""
    import shutil
    import subprocess

    session = _session(name)
    sh = shutil.which("bash") or "sh"
    base_env, enter, container, host = session.shell_target(container)
    label = session.scenario.slug + (f" {host}" if host else "")
    from ..scenario import registry

    env = {**base_env, "PS1": f"[{label}] \\w# ", "NETDIAG_SCENARIO": session.scenario.name, SCENARIO_HOME: str(registry.home())}
    if container:
        argv = [sys.executable, "-m", "netdiag", "exec"] + (["-it"] if sys.stdin.isatty() and not command else ["-i"]) + \
               [container, "sh"] + (["-c", command] if command else [])
    else:
        argv = [sh, "--norc", "-i"] if not command and sh.endswith("bash") else [sh]
        if command:
            argv += ["-c", command]
        elif sys.stdin.isatty():
            where = f"Host {host}" if host else "Lab host"
            print(f"{where} of {session.scenario.name}: `netdiag ps`, `netdiag trace ...`, `ip`, `nft` act on the world. "
                  "Exit to leave.", file=sys.stderr)
    raise typer.Exit(subprocess.call(argv, env=env, preexec_fn=enter))


@scenario_app.command()
def record(name: Optional[str] = _NAME,
           output: Path = typer.Option(..., "-o", "--output", help="The snapshot file to write (JSON)")):
    """Save the broken world's snapshot with the live probe of its diagnosis.

    The diagnosis then replays offline, without root: `netdiag trace --snapshot FILE ...`."""
    session = _session(name)
    print(f"Recording {session.scenario.name} ...", file=sys.stderr)
    snap = session.record()
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(json.dumps(snap, indent=1) + "\n")
    os.replace(tmp, output)
    d = snap["recorded"]
    print(f"wrote {output}: {len(snap['namespaces'])} namespaces, live diagnosis {d['live'].get('cause') or d['live'].get('verdict')}.\n"
          f"Replay it offline: netdiag trace --snapshot {output} {' '.join(d['argv'])}")


def _stop_replay(prefix: str) -> None:
    from runtime.errors import NetdiagError

    from ..scenario import registry, replay

    left = replay.remove(registry.replay(prefix))
    registry.forget_replay(prefix)
    print(f"stopped replay {prefix}")
    if left:
        raise NetdiagError("Something was left behind", "; ".join(left), "report it")


@scenario_app.command("replay")
def replay_(snapshot: Path = typer.Argument(..., help="A snapshot file (`netdiag snapshot -o FILE` on a real host)"),
            prefix: str = typer.Option("rp", "--prefix", help="Names of the new namespaces: PREFIX-host, PREFIX-<container>, ..."),
            json_out: bool = _JSON):
    """Rebuild a snapshot's network as a lab, so a real incident becomes an exercise.

    Every namespace of the snapshot becomes a fresh named namespace with its links, addresses,
    routes, rules, sysctls, nftables rules and, for every listening socket, a stand-in server.
    Run `netdiag trace` inside PREFIX-host; `netdiag scenario stop PREFIX` removes it all."""
    from runtime.errors import Conflict

    from ..snapshot_model import read_snapshot
    from ..scenario import registry, replay

    snap = read_snapshot(str(snapshot))
    if registry.replay(prefix):
        raise Conflict(f"A replay with prefix {prefix} is running", "", f"stop it ('netdiag scenario stop {prefix}') or use --prefix")
    rec = replay.rebuild(snap, prefix, say=_say)
    rec["snapshot"], rec["started"] = str(snapshot.resolve()), registry.now()
    registry.save_replay(rec)
    if json_out:
        print(json.dumps(rec, indent=2))
        return
    print(f"Replay {prefix} of {snapshot}: {len(rec['namespaces'])} namespaces ({', '.join(sorted(rec['namespaces'].values()))}).")
    if rec["skipped"]:
        print("Not reproduced:\n" + "\n".join(f"  - {s}" for s in rec["skipped"]))
    print(f"Diagnose it from its host:  ip netns exec {rec['host']} netdiag trace ns:{prefix}-<name> ADDRESS --port N\n"
          f"Remove it:                  netdiag scenario stop {prefix}")
