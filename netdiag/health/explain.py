"""`netdiag explain CONTAINER` and `netdiag explain --lb haproxy[:SOCKET]`: why a container is
unhealthy, why a load balancer's servers are DOWN.

A kubelet's CNI pod (`cni:ID`): a kubelet's TCP probe of its ports from the host (explain_pod).
A container: its health check (Docker's JSON, from netdiag's `inspect`, a Docker engine's API or `podman inspect`),
status, failing streak and last outputs; a wget/curl/nc check is re-run as `netdiag health` from
the container's own namespace, which names the network cause behind it.

A HAProxy: every server from its stats socket with HAProxy's own check status; each DOWN server is
checked again from HAProxy's namespace exactly as HAProxy is configured to (check address and
port, TCP or HTTP, method, path, Host header, expected status, its timeouts). A server that is UP
but whose check does not use its traffic port (`check port N`), or that is not checked at all,
gets a TCP check of the traffic port too: requests time out there while HAProxy sees it UP.
The checks run at once; the failures are then diagnosed one after the other.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

from runtime.errors import InvalidArgument, NetdiagError, NotFound

from ..observe import haproxy
from . import docker_healthcheck
from .pipeline import Source, conclude, find_container, measure, run_health, target_of
from .spec import Spec, check_host, check_method, check_path, parse_expect

MAX_TIMEOUT = 10.0  # a re-run check waits at most this long (Docker's default health timeout is 30 s)
NS = 1_000_000_000


class CannotDiagnose(NetdiagError):
    exit_code = 3


# -- containers -----------------------------------------------------------------------------------

def _netdiag_inspect(cid: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "netdiag", "inspect", "--type", "container", cid],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise CannotDiagnose(f"Cannot read container {cid[:12]}", p.stderr.strip(), "")
    return json.loads(p.stdout)[0]


def _docker_inspect(cid: str) -> dict:
    from ..observe import docker_api

    sock = docker_api.socket_path()
    if sock is None:
        raise CannotDiagnose(f"Cannot read Docker container {cid[:12]}", "no Docker API socket (DOCKER_HOST, /var/run/docker.sock)",
                             "is the Docker engine running?")
    try:
        return docker_api.get(f"/containers/{cid}/json", sock)
    except OSError as e:
        raise CannotDiagnose(f"Cannot read Docker container {cid[:12]}", str(e), "is the Docker engine running?") from None


def _podman_inspect(cid: str) -> dict:
    """Podman's record of the container (Docker's shape: Config.Healthcheck, State.Health)."""
    from ..observe import podman_cli

    try:
        return podman_cli.inspect(cid)
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
        raise CannotDiagnose(f"Cannot read Podman container {cid[:12]}", str(e), "does it still run ('podman ps')?") from None


INSPECTORS = {"docker": _docker_inspect, "podman": _podman_inspect}


def explain_container(ref: str, *, timeout: float | None = None, model=None) -> dict:
    from netdiag.observe.snapshot import live_model

    model = model or live_model()
    c = find_container(model, ref)
    if c is None:
        raise InvalidArgument(f"No such container: {ref}", "netdiag knows its own containers, a Docker engine's and Podman's",
                              "list them with 'netdiag ps' (or 'docker ps', 'podman ps')")
    if c.get("runtime") == "cni":
        from .explain_pod import explain_pod

        return explain_pod(c, model, timeout)
    if not re.fullmatch(r"[0-9a-f]{12,64}", c["id"]):
        raise CannotDiagnose(f"Unexpected container id {c['id']!r}", "", "")
    detail = INSPECTORS.get(c.get("runtime") or "", _netdiag_inspect)(c["id"])
    hc = (detail.get("Config") or {}).get("Healthcheck") or {}
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        raise InvalidArgument(f"Container {c['name']} has no health check", "neither its image nor its run options define one",
                              "add one with --health-cmd (or HEALTHCHECK in its Dockerfile)")
    state = (detail.get("State") or {}).get("Health") or {}
    hc_timeout = (hc.get("Timeout") or 30 * NS) / NS
    out = {"kind": "container", "container": c["name"], "id": c["id"], "runtime": c.get("runtime", ""),
           "status": state.get("Status"), "failing_streak": state.get("FailingStreak", 0),
           "healthcheck": {"test": test, "command": docker_healthcheck.command_text(test), "interval": (hc.get("Interval") or 30 * NS) / NS,
                           "timeout": hc_timeout, "retries": hc.get("Retries") or 3, "start_period": (hc.get("StartPeriod") or 0) / NS},
           "log": [{"start": e.get("Start"), "end": e.get("End"), "exit_code": e.get("ExitCode"), "output": e.get("Output") or ""}
                   for e in (state.get("Log") or [])[-5:]],
           "network_check": None, "health": None, "note": None}
    net = docker_healthcheck.parse(test)
    if net is None:
        out["note"] = "not a network check (no wget, curl or nc to a URL or port): netdiag cannot re-run it; its outputs above say why it fails"
        out["summary"] = f"{c['name']} is {out['status'] or 'not checked yet'}; " + out["note"]
        out["exit"] = 0 if out["status"] == "healthy" else 1
        return out
    try:
        host = check_host(net.host)
        spec = Spec(host=host, port=net.port, mode=net.mode, path=check_path(net.path) if net.mode == "http" else "/",
                    host_header=net.host_header if net.host_header and re.fullmatch(r"[\x21-\x7e]+", net.host_header) else "",
                    timeout=timeout or min(hc_timeout, MAX_TIMEOUT))
    except InvalidArgument as e:
        out["note"] = f"the check's target cannot be re-run: {e}"
        out["summary"] = f"{c['name']} is {out['status']}; " + out["note"]
        out["exit"] = 3
        return out
    out["network_check"] = {"tool": net.tool, "command": net.command, "target": spec.show(), "type": spec.mode,
                            "timeout": spec.timeout}
    res = run_health(spec, c["id"], model=model)
    out["health"] = res
    if res["healthy"]:
        out["summary"] = (f"{c['name']} is {out['status']}; its check ({spec.show()}) passes now from the container"
                          + (": the failures above are past (it flapped, or was fixed)" if out["status"] != "healthy" else ""))
        out["exit"] = 0
    else:
        out["summary"] = f"{c['name']} is {out['status']} because its check of {spec.show()} fails: " + \
            (f"{res['cause']}: {res['summary']}" if res["cause"] else res["summary"])
        out["exit"] = 1 if res["cause"] else 3
    return out


# -- HAProxy ----------------------------------------------------------------------------------------

def _parse_lb(lb: str) -> tuple[str, str | None]:
    kind, _, sock = lb.partition(":")
    if kind != "haproxy":
        raise InvalidArgument(f"Unknown load balancer {kind!r}", "netdiag reads HAProxy's stats socket", "use --lb haproxy[:STATS_SOCKET]")
    if sock and ("\0" in sock or len(sock) > 4096):
        raise InvalidArgument(f"Invalid stats socket path {sock!r}", "", "")
    return kind, sock or None


def _this_hosts(model, procs: list) -> list:
    """The HAProxies of this host: in its own namespace or its containers (netdiag's, Docker's),
    not in a namespace some other process made (another lab, another host simulated on this
    machine). All of them when none is this host's."""
    kinds = {}
    for meta in model.metas():
        if meta.get("id", "").startswith("ns-"):
            kinds[int(meta["id"][3:])] = meta.get("kind")
    mine = [p for p in procs if kinds.get(p.netns_inode) in ("host", "container")]
    return mine or procs


def _find(model, sock: str | None, target: str | None):
    """(the HAProxy process or None, the stats socket to read, the namespace's target string)."""
    ns = None
    if target:
        try:
            ns = model.resolve(target)
        except NotFound as e:
            raise InvalidArgument(f"Unknown load balancer namespace {target!r}", e.why or e.what, "give its container, ns:NAME or pid:N") from None
    procs = haproxy.processes()
    if ns is not None:
        procs = [p for p in procs if p.netns_inode == ns.get("inode")]
    if sock:
        procs = [p for p in procs if any(haproxy.same_file(s, sock) or haproxy.same_file(s, haproxy.in_root(p.pid, sock))
                                         for s in p.sockets)]
    if len(procs) > 1 and ns is None:
        procs = _this_hosts(model, procs)
    if len(procs) > 1:
        raise InvalidArgument("Several HAProxy processes match", ", ".join(f"pid {p.pid} ({' '.join(p.configs)})" for p in procs),
                              "give its stats socket (--lb haproxy:PATH) or its container/namespace")
    proc = procs[0] if procs else None
    if proc is None and not (sock and ns is not None):
        where = f" in {ns['label']}" if ns is not None else ""
        raise CannotDiagnose(f"No running HAProxy found{where}" + (f" with the stats socket {sock}" if sock else ""),
                             "netdiag reads a HAProxy process's config through /proc",
                             "give the stats socket and the load balancer's container or namespace")
    path = sock if sock and os.path.exists(sock) else (haproxy.in_root(proc.pid, sock) if sock and proc else None)
    if path is None:
        if proc is None or not proc.sockets:
            raise CannotDiagnose(f"HAProxy pid {proc.pid if proc else '?'} has no stats socket",
                                 "its global section has no 'stats socket' line", "add 'stats socket /run/haproxy.sock level admin' and reload it")
        path = proc.sockets[0]
    if ns is None:
        try:
            ns = model.resolve(f"pid:{proc.pid}")
        except NotFound:
            raise CannotDiagnose(f"Cannot find HAProxy pid {proc.pid}'s network namespace", "it may have just exited",
                                 "give its container or namespace") from None
    src = target or target_of(model, ns)
    if src is None:
        raise CannotDiagnose(f"Cannot name {ns['label']} to check from", "", "")
    return proc, path, src, ns


def _spec_for(row: dict, conf: haproxy.Config | None, timeout: float | None) -> tuple[Spec | None, dict]:
    """The check HAProxy does for this server, as a Spec (None: not checked)."""
    check, srv = (conf.backends.get(row["backend"], (None, {})) if conf else (None, {}))
    srv = srv.get(row["server"]) if srv else None
    check = check or haproxy.CheckConf(kind="http" if row["check_status"].startswith("L7") else "tcp", method="GET")
    port = row["check_port"] or (srv.check_port if srv else None) or check.tcp_check_port or row["port"]
    addr = row["check_addr"] or (srv.check_addr if srv else None) or row["ip"]
    connect, read = haproxy.check_timeout(check, srv)
    total = timeout or min(connect + (read if check.kind == "http" else 0), MAX_TIMEOUT)
    info = {"type": check.kind, "address": addr, "port": port, "timeout": total, "connect_timeout": connect, "from_config": conf is not None and srv is not None}
    try:
        host = check_host(addr)
        if check.kind == "http":
            spec = Spec(host=host, port=port, mode="http", path=check_path(check.uri), method=check_method(check.method),
                        host_header=check.host if re.fullmatch(r"[\x21-\x7e]+", check.host or "") else host,
                        expect=parse_expect(check.expect) if check.expect else parse_expect("200-399"), timeout=total,
                        connect_timeout=None if timeout else connect)
            info.update(method=check.method, path=check.uri, host=spec.header_host, expect=check.expect or "2xx,3xx")
        else:
            spec = Spec(host=host, port=port, mode="tcp", timeout=total, connect_timeout=None if timeout else connect)
    except InvalidArgument as e:
        info["error"] = str(e)
        return None, info
    return spec, info


def locate(model, socket: str | None, target: str | None):
    """(the HAProxy process or None, its stats socket, the target to check from, its namespace)."""
    return _find(model, socket, target)


def recheck(model, proc, src_target: str, row: dict, timeout: float | None = None) -> dict | None:
    """HAProxy's check of one server (a `servers()` row) done again from its namespace, with the
    diagnosis of a failure; None when the server is not checked."""
    spec, _ = _spec_for(row, haproxy.parse_config(proc.config_text) if proc else None, timeout)
    if spec is None:
        return None
    src = Source(model, src_target)
    return conclude(model, spec, src, measure(spec, src))


def explain_lb(lb: str, target: str | None = None, *, timeout: float | None = None, model=None) -> dict:
    from netdiag.observe.snapshot import live_model

    sock = _parse_lb(lb)[1]
    model = model or live_model()
    proc, path, src_target, ns = _find(model, sock, target)
    rows = haproxy.servers(path)
    conf = haproxy.parse_config(proc.config_text) if proc else None
    src = Source(model, src_target)
    jobs = []  # (row, "check"|"traffic", spec)
    for row in rows:
        status = row["status"]
        entry = {**row, "health": None, "traffic": None, "check": None}
        row["_entry"] = entry
        if status.startswith("MAINT") or status.startswith("DRAIN"):
            entry["note"] = "in maintenance (set by an admin): not checked"
            continue
        spec, info = _spec_for(row, conf, timeout)
        entry["check"] = info
        if status.startswith("DOWN") and spec is not None:
            jobs.append((entry, "health", spec))
        elif status.startswith("UP") or status == "no check":
            if spec is None or spec.port != row["port"] or status == "no check" or spec.host != row["ip"]:
                if row["ip"] and row["port"]:  # requests wait `timeout connect` for the handshake
                    backend = conf.backends.get(row["backend"], (None, {}))[0] if conf else None
                    limit = timeout or min((backend.timeout_connect if backend else None) or haproxy.DEFAULT_INTER, MAX_TIMEOUT)
                    jobs.append((entry, "traffic", Spec(host=row["ip"], port=row["port"], mode="tcp", timeout=limit)))
    measured: list = [None] * len(jobs)

    def run(i: int, spec: Spec) -> None:
        try:
            measured[i] = measure(spec, src)
        except NetdiagError as e:
            measured[i] = e

    threads = [threading.Thread(target=run, args=(i, spec), daemon=True) for i, (_, _, spec) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (entry, what, spec), m in zip(jobs, measured):
        if isinstance(m, NetdiagError):
            raise m
        res = conclude(model, spec, src, m)
        if what == "health" or not res["healthy"]:
            entry[what] = res
    servers = [r["_entry"] for r in rows]
    return _lb_summary(servers, proc, path, ns)


def _lb_summary(servers: list[dict], proc, path: str, ns: dict) -> dict:
    down = [s for s in servers if s["status"].startswith("DOWN")]
    traffic = [s for s in servers if s.get("traffic") and not s["traffic"]["healthy"]]
    parts = []
    for s in down:
        h = s.get("health")
        if h is None:
            parts.append(f"{s['backend']}/{s['server']} DOWN ({s['check_status']}): not re-checked")
        elif h["healthy"]:
            parts.append(f"{s['backend']}/{s['server']} DOWN ({s['check_status']}) but its check passes now: HAProxy will see it at its next checks")
        else:
            parts.append(f"{s['backend']}/{s['server']} DOWN ({s['check_status']}): {h['cause'] or 'cause unknown'} - {h['summary']}")
    for s in traffic:
        t = s["traffic"]
        parts.append(f"{s['backend']}/{s['server']} is {s['status']} for HAProxy (its check uses port {s['check']['port']}), "
                     f"but its traffic port {s['port']} fails: {t['cause'] or 'cause unknown'} - {t['summary']}")
    unexplained = [s for s in down if s.get("health") and not s["health"]["healthy"] and not s["health"]["cause"]] + \
        [s for s in traffic if not s["traffic"]["cause"]]
    failing = [s for s in down if not (s.get("health") or {}).get("healthy")] + traffic
    summary = "; ".join(parts) if parts else f"every server of HAProxy pid {proc.pid if proc else '?'} is UP and its traffic port answers"
    return {"kind": "lb", "lb": "haproxy", "pid": proc.pid if proc else None, "config": " ".join(proc.configs) if proc else None,
            "socket": path, "namespace": ns["label"], "servers": servers, "down": len(down), "traffic_failing": len(traffic),
            "summary": summary, "exit": 3 if unexplained else 1 if failing else 0}


# -- fixes ----------------------------------------------------------------------------------------

def fix_commands(result: dict) -> list[str]:
    """The fix commands of an explanation, once each, in order."""
    found = []
    if result["kind"] in ("container", "pod"):
        found.append((result.get("health") or {}).get("fix_command"))
    else:
        for s in result["servers"]:
            for key in ("health", "traffic"):
                h = s.get(key) or {}
                if not h.get("healthy"):
                    found.append(h.get("fix_command"))
    return list(dict.fromkeys(c for c in found if c))


def after_fix(result: dict, again, wait: float = 10.0) -> dict:
    """Explain again once the fix can show: for HAProxy, after its own checks saw the servers the
    fix was for come UP (or `wait` seconds)."""
    if result["kind"] == "lb":
        wanted = {(s["backend"], s["server"]) for s in result["servers"]
                  if s["status"].startswith("DOWN") and s.get("health") and not s["health"]["healthy"]}
        deadline = time.monotonic() + wait
        while wanted and time.monotonic() < deadline:
            try:
                now = {(r["backend"], r["server"]): r["status"] for r in haproxy.servers(result["socket"])}
            except NetdiagError:
                break
            if all(now.get(k, "").startswith("UP") for k in wanted):
                break
            time.sleep(0.25)
    return again()
