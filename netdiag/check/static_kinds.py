"""The checks that need no probe: read from the model alone, so they also run on a snapshot,
offline and without root. Pure: imports nothing that touches the kernel.

Each returns {"status", "summary", "expected", "observed", and when it failed "cause", "hop" (where:
the namespace, container or network), "fix", "evidence"}.
"""
from __future__ import annotations

import shlex

from runtime.errors import NotFound

from ..reason import routing
from ..reason.fixes import in_ns, no_command, owner_cli, recreate

WILDCARD = {"0.0.0.0", "::"}  # "::" without v6only takes IPv4 too (busybox httpd binds it)


def _where(label: str, kind: str, detail: str = "") -> dict:
    return {"n": None, "label": label, "interface": None, "kind": kind, "direction": None, "detail": detail}


def _binds(sock: dict, address: str | None) -> bool:
    if address is None:
        return True
    return sock["local"] in WILDCARD if address in WILDCARD else sock["local"] == address


def _listeners(ns: dict, port: int, proto: str) -> list[dict]:
    return [s for s in ns.get("sockets") or [] if s["port"] == port and s["proto"] == proto
            and (proto == "udp" or s.get("state") == "LISTEN")]


def _sock_text(s: dict) -> str:
    who = f" ({s['process']} pid {s['pid']})" if s.get("process") else ""
    return f"{s['proto']} {s['local']}:{s['port']}{who}"


def listening(p: dict, model) -> dict:
    ns = model.resolve(p["target"])
    socks = _listeners(ns, p["port"], p["proto"])
    hits = [s for s in socks if _binds(s, p["address"])]
    where = f"{p['address']}:{p['port']}" if p["address"] else f"port {p['port']}"
    expected = f"{'listening' if p['expect'] else 'not listening'} on {where}/{p['proto']}"
    observed = ", ".join(_sock_text(s) for s in socks) or "nothing listens on that port"
    evidence = [{"kind": "socket", "detail": f"{ns['label']}: {_sock_text(s)}"} for s in socks]
    out = {"expected": expected, "observed": observed, "evidence": evidence}
    if bool(hits) == p["expect"]:
        return {**out, "status": "passed", "summary": f"{ns['label']}: {observed}"}
    if not p["expect"]:
        return {**out, "status": "failed", "hop": _where(ns["label"], "socket", observed),
                "summary": f"{ns['label']} listens on {where}/{p['proto']}: {', '.join(_sock_text(s) for s in hits)}",
                "fix": f"stop the server, or bind it to another address than {p['address'] or 'any'}"}
    loopback = [s for s in socks if s.get("loopback_only") or s["local"].startswith("127.")]
    cause = "LISTENER_LOOPBACK_ONLY" if loopback and not hits else "NO_LISTENER"
    summary = (f"{ns['label']} listens on {', '.join(_sock_text(s) for s in socks)}, not on {where}" if socks
               else f"nothing in {ns['label']} listens on {p['proto']} port {p['port']}")
    fix = (f"make the server listen on {p['address'] or '0.0.0.0'}:{p['port']} (it binds {loopback[0]['local']} only)" if loopback
           else f"start the server on {p['proto']} port {p['port']} in {ns['label']}, or check its configuration and logs")
    return {**out, "status": "failed", "cause": cause, "hop": _where(ns["label"], "socket", observed), "summary": summary, "fix": fix}


def _container(model, ref: str) -> dict:
    c = model.container(ref)
    if c is None:
        raise NotFound(f"No container {ref!r} on this host", "", "list them with 'netdiag ps' (and 'docker ps')")
    return c


def published(p: dict, model) -> dict:
    c = _container(model, p["target"])
    ports = [x for x in c.get("ports") or [] if x["proto"] == p["proto"]]
    hits = [x for x in ports if x["ctr_port"] <= p["port"] <= (x.get("ctr_end") or x["ctr_port"])
            and (p["host_port"] is None or x["host_port"] + (p["port"] - x["ctr_port"]) == p["host_port"])]
    text = ", ".join(f"{x.get('host_ip') or '0.0.0.0'}:{x['host_port']}"
                     + (f"-{x['host_end']}" if x.get("host_end") and x["host_end"] != x["host_port"] else "")
                     + f"->{x['ctr_port']}/{x['proto']}" for x in ports) or "no published port"
    want = f"{p['port']}/{p['proto']}" + (f" on host port {p['host_port']}" if p["host_port"] else "")
    out = {"expected": ("published: " if p["expect"] else "not published: ") + want, "observed": text,
           "evidence": [{"kind": "ports", "detail": f"{c['name']}: {text}"}]}
    if bool(hits) == p["expect"]:
        return {**out, "status": "passed", "summary": f"{c['name']} publishes {text}"}
    hop = _where(c["name"], "container", text)
    if p["expect"]:
        flag = f"{p['host_port'] or p['port']}:{p['port']}/{p['proto']}"
        cmd = recreate(c, "-p", flag)
        return {**out, "status": "failed", "cause": "PORT_NOT_PUBLISHED", "hop": hop,
                "fix": cmd or f"recreate {c['name']} with -p {flag} ({no_command(c)})", "fix_command": cmd or None,
                "summary": f"{c['name']} does not publish {want} ({text})"}
    keep = [x for x in c.get("ports") or [] if x not in hits]
    cmd = recreate({**c, "ports": keep})
    return {**out, "status": "failed", "hop": hop, "fix": cmd or f"recreate {c['name']} without publishing {want} ({no_command(c)})",
            "fix_command": cmd or None, "summary": f"{c['name']} publishes {want} ({text})"}


def internal(p: dict, model) -> dict:
    nets = [n for n in model.snap.get("networks") or [] if n.get("name") == p["network"]]
    if not nets:
        raise NotFound(f"No network {p['network']!r} on this host", "", "list them with 'netdiag network ls' (and 'docker network ls')")
    n = nets[0]
    is_internal = bool(n.get("internal"))
    cli = owner_cli(n.get("runtime"))
    out = {"expected": "internal" if p["expect"] else "not internal", "observed": "internal" if is_internal else "not internal",
           "evidence": [{"kind": "network", "detail": f"{cli} network {n['name']} ({n.get('driver', 'bridge')}, "
                                                       f"{n.get('subnet') or 'no subnet'}): internal={str(is_internal).lower()}"}]}
    if is_internal == p["expect"]:
        return {**out, "status": "passed", "summary": f"network {n['name']} is {out['observed']}"}
    flag = "--internal " if p["expect"] else ""
    fix = (f"recreate it{' as internal' if p['expect'] else ' without --internal'}: {cli} network rm {shlex.quote(n['name'])} && "
           f"{cli} network create {flag}" + (f"--subnet {n['subnet']} " if n.get("subnet") else "") + shlex.quote(n["name"])
           + " (then reconnect its containers)")
    return {**out, "status": "failed", "hop": _where(n["name"], "network", out["observed"]), "fix": fix,
            "cause": None if p["expect"] else "INTERNAL_NETWORK",
            "summary": f"network {n['name']} is {out['observed']}, expected {out['expected']}"}


def route(p: dict, model) -> dict:
    ns = model.resolve(p["in"])
    if p["to"] == "default":
        found = [r for r in ns["routes"] if r["dst"] == "default" and r["type"] == "unicast"]
        r = routing.Route("default", "unicast", found[0].get("dev"), found[0].get("gateway"), found[0].get("prefsrc"),
                          found[0]["table"]) if found else routing.Route("none", "none", None, None, None, 0)
    else:
        r = routing.lookup(ns, p["to"])
    ok = r.type in ("unicast", "local") and (p["via"] is None or r.gateway == p["via"]) and (p["dev"] is None or r.dev == p["dev"])
    want = f"a route to {p['to']}" + (f" via {p['via']}" if p["via"] else "") + (f" dev {p['dev']}" if p["dev"] else "")
    out = {"expected": want if p["expect"] else f"no {want[2:]}", "observed": r.text,
           "evidence": [{"kind": "route", "detail": f"{ns['label']}: {p['to']} -> {r.text}"}]}
    if ok == p["expect"]:
        return {**out, "status": "passed", "summary": f"{ns['label']}: {p['to']} -> {r.text}"}
    hop = _where(ns["label"], "route", r.text)
    if not p["expect"]:
        return {**out, "status": "failed", "hop": hop, "summary": f"{ns['label']} routes {p['to']}: {r.text}",
                "fix": in_ns(ns, ["ip", "route", "del", r.dst if r.dst != "rule" else p["to"]])}
    cmd = None
    if p["via"] or p["dev"]:
        argv = ["ip", "route", "replace", p["to"]] + (["via", p["via"]] if p["via"] else []) + (["dev", p["dev"]] if p["dev"] else [])
        cmd = in_ns(ns, argv)
    return {**out, "status": "failed", "cause": "NO_ROUTE" if r.type not in ("unicast", "local") else None, "hop": hop,
            "fix": cmd or f"add a route to {p['to']} in {ns['label']}", "fix_command": cmd,
            "summary": f"{ns['label']} has {'no route to ' + p['to'] if r.type == 'none' else 'the route ' + r.text}, expected {want}"}


def no_listener(p: dict, model) -> dict:
    if p["targets"]:
        spaces = [(t, model.resolve(t)) for t in p["targets"]]
    else:
        spaces = [(c["name"], model.ns(c["ns"])) for c in model.containers()
                  if c.get("ns") and c.get("ns") in model.namespaces]
    hits = [(name, s) for name, ns in spaces for s in _listeners(ns, p["port"], p["proto"]) if _binds(s, p["address"])]
    where = f"{p['address']}:{p['port']}/{p['proto']}"
    out = {"expected": f"nothing listens on {where}", "observed": "; ".join(f"{n}: {_sock_text(s)}" for n, s in hits) or "nothing",
           "evidence": [{"kind": "socket", "detail": f"{n}: {_sock_text(s)}"} for n, s in hits]}
    if not hits:
        return {**out, "status": "passed", "summary": f"none of {len(spaces)} {'targets' if p['targets'] else 'containers'} listens on {where}"}
    names = sorted({n for n, _ in hits})
    return {**out, "status": "failed", "hop": _where(names[0], "socket", out["observed"]),
            "summary": f"{', '.join(names)} listen{'s' if len(names) == 1 else ''} on {where}",
            "fix": f"bind the server in {', '.join(names)} to a specific address (127.0.0.1, or the one address it serves), "
                   "or stop it"}


KINDS = {"listening": listening, "published": published, "internal": internal, "route": route, "no_listener": no_listener}


def evaluate(kind: str, params: dict, model) -> dict:
    return KINDS[kind](params, model)
