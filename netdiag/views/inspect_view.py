"""`netdiag inspect --net TARGET`: one namespace as a person needs to see it — its interfaces, routes,
neighbours, listening sockets and resolver, and the host side: veth peer, bridge, published
ports and the nftables rules that mention it. Pure over the model."""
from __future__ import annotations

from ..snapshot_model import Model
from ..reason import hostports, overlay


def view(model: Model, target: str) -> dict:
    ns = model.resolve(target)
    c = model.container_of(ns)
    my_ips = [a["address"] for a in ns["addresses"] if not a["address"].startswith("127.")]
    interfaces, host_side, notes = [], [], []
    for link in ns["links"]:
        item = {"name": link["name"], "kind": link["kind"], "state": link["state"], "up": link["up"], "mtu": link["mtu"],
                "mac": link["mac"], "addresses": model.addresses(ns, link["name"]), "master": link.get("master")}
        if link["kind"] == "loopback" and not link["up"]:
            notes.append(f"lo is DOWN: programs in {ns['label']} cannot reach 127.0.0.1")
        elif link["kind"] != "loopback" and not link["up"]:
            notes.append(f"{link['name']} is DOWN: nothing leaves through it")
        pair = model.peer(ns, link) if link["kind"] == "veth" else None
        if pair:
            other, peer = pair
            item["peer"] = {"namespace": other["label"], "interface": peer["name"], "up": peer["up"]}
            if ns["kind"] != "host":
                host_side.append(_host_side(model, ns, link, other, peer, my_ips, c, notes))
        interfaces.append(item)
    sockets = []
    for s in ns.get("sockets", []):
        sockets.append({k: s.get(k) for k in ("proto", "local", "port", "process", "pid", "loopback_only")})
        if s.get("loopback_only") and ns["kind"] == "container":
            notes.append(f"{s.get('process') or 'a process'} listens on {s['local']}:{s['port']}/{s['proto']} only: "
                         f"other containers and published ports cannot reach it; make it listen on 0.0.0.0:{s['port']}")
    overlays = []
    for link in ns["links"]:
        rep = overlay.report(model, ns, link) if link["kind"] == "vxlan" else None
        if rep is None:
            continue
        overlays.append(rep)
        for e in rep["fdb"]:
            if e["status"] == "stale":
                notes.append(f"{link['name']}: the FDB entry for {e['mac']} ({e['endpoint']}) points at {e['dst']}, but the cluster "
                             f"store has it on {e['host']} ({e['expected']}): stale; fix: bridge fdb replace {e['mac']} dev "
                             f"{link['name']} dst {e['expected']} self permanent")
            elif e["status"] == "unknown":
                notes.append(f"{link['name']}: the FDB entry for {e['mac']} -> {e['dst']} names no endpoint the cluster store lists: "
                             f"stale; fix: bridge fdb del {e['mac']} dev {link['name']} self")
        for m in rep["missing"]:
            what = " and ".join(w for w, miss in (("FDB", m["fdb"]), ("ARP", m["arp"])) if miss)
            notes.append(f"{link['name']}: no {what} entry for {m['name']} ({m['ip']}, {m['mac']} on {m['host']} at {m['vtep']}), "
                         "which the cluster store lists: its traffic cannot reach it")
    if c is not None and c.get("ports") and ns["kind"] != "host":
        notes += hostports.shared_ports(model, c)  # pods' hostPorts collide: portmap refuses nothing
    routes = [r for r in ns["routes"] if r["table"] != 255]
    if ns["kind"] == "container" and not any(r["dst"] == "default" for r in routes) and len(ns["links"]) > 1:
        notes.append("no default route: only directly connected subnets are reachable")
    sysctls = {k: v for k, v in ns.get("sysctls", {}).items()
               if k in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.bridge.bridge-nf-call-iptables")
               or any(k.startswith(f"net.ipv4.conf.{i['name']}.") for i in interfaces)}
    return {
        "target": target, "namespace": {"id": ns["id"], "kind": ns["kind"], "label": ns["label"], "netns_names": ns.get("netns_names", [])},
        "container": {**{k: c.get(k) for k in ("runtime", "id", "name", "image", "pid")}, "networks": sorted(c.get("networks") or {})}
        if c else None,
        "interfaces": interfaces, "routes": routes, "rules": [r for r in ns["rules"] if r["table"] not in (253, 254, 255)],
        "neighbours": ns["neighbours"], "sockets": sockets, "resolv_conf": ns.get("resolv_conf"), "sysctls": sysctls,
        "host_side": host_side, "overlay": overlays, "findings": notes,
    }


def _host_side(model: Model, ns: dict, link: dict, other: dict, peer: dict, my_ips: list[str], c: dict | None, notes: list) -> dict:
    bridge_name = peer.get("master")
    bridge = model.link(other, bridge_name) if bridge_name else None
    if not peer["up"]:
        notes.append(f"the host end {peer['name']} of {link['name']} is DOWN in {other['label']}")
    if bridge and not bridge["up"]:
        notes.append(f"bridge {bridge_name} is DOWN in {other['label']}")
    ports = [p for p in (c or {}).get("ports", [])]
    words = set(my_ips) | {peer["name"]} | ({bridge_name} if bridge_name else set())
    rules = [{"table": f"{r['family']} {r['table']}", "chain": r["chain"], "rule": r["text"]}
             for r in model.nft_rules(other) if any(w and w in r["text"] for w in words)]
    return {"interface": link["name"], "veth": peer["name"], "namespace": other["label"], "veth_up": peer["up"],
            "bridge": bridge_name, "bridge_up": bridge["up"] if bridge else None,
            "bridge_addresses": model.addresses(other, bridge_name) if bridge_name else [],
            "published_ports": ports, "nft_rules": rules}


def render(v: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    ns = v["namespace"]
    title = f"[bold]{ns['label']}[/]  [dim]{ns['id']}[/]"
    if v["container"]:
        title += f"  image {v['container']['image']}, pid {v['container']['pid']}"
    con.print(title)
    t = Table("interface", "state", "mtu", "mac", "addresses", "other end", box=None, header_style="bold")
    for i in v["interfaces"]:
        state = "[green]UP[/]" if i["up"] else "[red]DOWN[/]"
        other = f"{i['peer']['interface']} in {i['peer']['namespace']}" if i.get("peer") else (f"port of {i['master']}" if i.get("master") else "")
        t.add_row(i["name"], state, str(i["mtu"]), i["mac"] or "", ", ".join(i["addresses"]), other)
    con.print(t)
    if v["routes"]:
        con.print("[bold]routes[/]")
        for r in v["routes"]:
            via = f" via {r['gateway']}" if r["gateway"] else ""
            table = "" if r["table"] == 254 else f" table {r['table']}"
            con.print(f"  {r['dst']}{via} dev {r['dev']}{table}")
    if v["sockets"]:
        con.print("[bold]listening[/]")
        for s in v["sockets"]:
            flag = "  [yellow]loopback only[/]" if s["loopback_only"] else ""
            who = f"  {s['process']} (pid {s['pid']})" if s.get("process") else ""
            local = f"[{s['local']}]" if ":" in (s["local"] or "") else s["local"]
            con.print(f"  {s['proto']} {local}:{s['port']}{who}{flag}")
    if v["resolv_conf"]:
        servers = [line.split()[1] for line in v["resolv_conf"].splitlines() if line.startswith("nameserver")]
        con.print(f"[bold]resolver[/] {', '.join(servers) or '(no nameserver)'}")
    for h in v["host_side"]:
        con.print(f"[bold]host side of {h['interface']}[/]: {h['veth']} in {h['namespace']} "
                  f"({'[green]up[/]' if h['veth_up'] else '[red]DOWN[/]'})"
                  + (f", on bridge {h['bridge']} {', '.join(h['bridge_addresses'])} ({'[green]up[/]' if h['bridge_up'] else '[red]DOWN[/]'})" if h["bridge"] else ", on no bridge"))
        for p in h["published_ports"]:
            host_ip = p["host_ip"] or "0.0.0.0"
            con.print(f"  published {host_ip}:{p['host_port']} -> {p['ctr_port']}/{p['proto']}")
        for r in h["nft_rules"]:
            con.print(f"  [dim]{r['table']} {r['chain']}:[/] {r['rule']}")
    for o in v.get("overlay", []):
        con.print(f"[bold]overlay {o['network']}[/] (VNI {o['vni']}) on {o['device']}, against the cluster store")
        colour = {"ok": "green", "stale": "red", "unknown": "red"}
        for e in o["fdb"]:
            where = f" ({e['endpoint']} on {e['host']})" if e["endpoint"] else ""
            con.print(f"  fdb {e['mac']} dst {e['dst']}{where} [{colour[e['status']]}]{e['status']}[/]"
                      + (f", the store says {e['expected']}" if e["status"] == "stale" else ""))
        for n in o["neighbours"]:
            con.print(f"  arp {n['ip']} -> {n['mac']} [{colour[n['status']]}]{n['status']}[/]")
        for m in o["missing"]:
            con.print(f"  [red]missing[/] {m['name']} {m['ip']} {m['mac']} on {m['host']} ({m['vtep']})")
    if v["sysctls"]:
        con.print("[bold]sysctls[/] " + "  ".join(f"{k}={val}" for k, val in sorted(v["sysctls"].items())))
    for note in v["findings"]:
        con.print(f"[yellow]![/] {note}")
