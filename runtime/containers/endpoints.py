"""A container's networks: attached by its monitor after the namespace exists and before the
command runs; detached when it exits. eth0 is the first network, eth1... the ones connected later."""
from __future__ import annotations

from .. import state
from ..errors import NetdiagError
from . import container_records

NO_NETNS = ("host",)


def primary(c: container_records.Container) -> str:
    return c.config["HostConfig"].get("NetworkMode", "none")


def bridge_networks(c: container_records.Container) -> list[str]:
    """Names of the bridge and overlay networks to attach, in interface order."""
    if primary(c) in ("none", "host"):
        return []
    return list((c.config.get("NetworkSettings") or {}).get("Networks") or {})


def attach_all(c: container_records.Container, pid: int) -> None:
    """Attach every network (all or nothing), then write the container's hosts and resolv.conf. The
    first bridge network gets the default route and the published ports: an overlay never does
    (as in Docker, outside traffic leaves through a bridge)."""
    if not bridge_networks(c):
        return
    from ..networks import drivers, network_records as nets, ports
    from ..networks.dns import records as dns_records

    netns = f"/proc/{pid}/ns/net"
    attached = []
    wanted = [nets.get(name) for name in bridge_networks(c)]
    # a CNI network's plugins decide its routes; netdiag publishes through its portmap plugin
    first_bridge = next((n["Id"] for n in wanted if n["Driver"] in ("bridge", "cni")), None)
    try:
        for i, net in enumerate(wanted):
            want = c.config["NetworkSettings"]["Networks"][net["Name"]]
            kw = dict(ip=(want.get("IPAMConfig") or {}).get("IPv4Address"), aliases=want.get("Aliases") or [])
            driver = drivers.of(net)
            if net["Driver"] == "bridge":
                dns_records.ensure_resolver(net)
            if net["Id"] == first_bridge:
                with state.locked("ports"):
                    taken = [dict(p, container=cid) for n in nets.attachable() for cid, e in n["Containers"].items()
                             if cid != c.id for p in e.get("Ports", [])]
                    publish = ports.assign(c.config["HostConfig"].get("Publish") or [], taken)
                    driver.attach(net, c.config, netns, f"eth{i}", default_route=True, publish=publish, **kw)
            else:
                driver.attach(net, c.config, netns, f"eth{i}", default_route=False, **kw)
            attached.append(net)
    except BaseException:
        for net in reversed(attached):
            drivers.of(net).detach(net, c.id)
        raise
    write_etc(c)


def connect(c: container_records.Container, name: str, ip: str | None, aliases: list[str]) -> dict:
    """`network connect`: a new interface in a running container (or recorded for its next start)."""
    from ..networks import drivers, network_records as nets

    net = nets.get(name)
    if net["Driver"] not in nets.ATTACHABLE:
        raise NetdiagError(f"Cannot connect to network {name}", f"it is a {net['Driver']} network", "connect to a bridge or overlay network")
    if primary(c) in ("none", "host") or container_records.netns_owner(c.config["HostConfig"]):
        raise NetdiagError(f"Container {c.name} uses --network {primary(c)}", "it cannot join other networks", "run it on a bridge network")
    settings = c.config.setdefault("NetworkSettings", {}).setdefault("Networks", {})
    if name in settings:
        raise NetdiagError(f"Container {c.name} is already connected to network {name}", "", "")
    endpoint = None
    if container_records.proc_ok(c):
        # a bridge connected to a container that has none yet (only overlays) carries its default route
        first_bridge = net["Driver"] == "bridge" and not any(
            (nets.find(n) or {}).get("Driver") == "bridge" for n in settings)
        endpoint = drivers.of(net).attach(net, c.config, f"/proc/{c.pid}/ns/net", f"eth{len(settings)}", ip=ip,
                                          aliases=aliases, default_route=first_bridge)
    settings[name] = {"IPAMConfig": {"IPv4Address": ip} if ip else None, "Aliases": aliases}
    state.write_json(c.dir / "config.json", c.config)
    if endpoint:
        write_etc(c)
    return endpoint or {}


def disconnect(c: container_records.Container, name: str) -> None:
    from ..networks import drivers, network_records as nets

    settings = (c.config.get("NetworkSettings") or {}).get("Networks") or {}
    net = nets.get(name)
    if name not in settings and c.id not in net["Containers"]:
        raise NetdiagError(f"Container {c.name} is not connected to network {name}", "", "")
    drivers.of(net).detach(net, c.id)
    settings.pop(name, None)
    state.write_json(c.dir / "config.json", c.config)
    if container_records.proc_ok(c):
        _regain_gateway(c)
        write_etc(c)


def _regain_gateway(c: container_records.Container) -> None:
    """Like Docker: when the network that held the default route goes, the next connected bridge
    network (not internal) takes it, so a container keeps its way out."""
    from ipaddress import IPv4Address

    from ..kernel import link, route
    from ..kernel.ns import netns
    from ..networks import network_records as nets

    eps = endpoints(c)
    with netns(f"/proc/{c.pid}/ns/net"):
        if any(r["dst_len"] == 0 and r["table"] == route.RT_TABLE_MAIN for r in route.dump()):
            return
        for name in bridge_networks(c):
            net = nets.find(name)
            if net and net["Driver"] == "bridge" and not net["Internal"] and name in eps:
                idx = link.index(eps[name]["Interface"])
                if idx:
                    route.add_default(IPv4Address(nets.ipam(net)["Gateway"]), idx)
                    return


def detach_all(c: container_records.Container) -> None:
    """After the container exited: release addresses, ports and rules. Never raises for missing pieces."""
    if not bridge_networks(c):
        return
    from ..networks import drivers, network_records as nets

    for net in nets.attachable():
        if c.id in net["Containers"]:
            drivers.of(net).detach(net, c.id)


def endpoints(c: container_records.Container, networks: list[dict] | None = None) -> dict[str, dict]:
    """c's endpoints by network name. A caller asking for many containers passes the records of
    `attachable()` read once: each network record holds every endpoint, so reading them again per
    container made `ps` of N containers on one network read N records of N endpoints."""
    if networks is None:
        from ..networks import network_records as nets

        networks = nets.attachable()
    return {n["Name"]: n["Containers"][c.id] for n in networks if c.id in n["Containers"]}


def write_etc(c: container_records.Container) -> None:
    """Rewrite hosts and resolv.conf in place: they are bind-mounted into the container."""
    from ..networks import network_records as nets

    eps = endpoints(c)
    hostname = c.config["Config"]["Hostname"]
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for e in eps.values():
        if not e.get("IPv4Address"):  # a CNI endpoint whose ADD is under way
            continue
        lines.append(f"{e['IPv4Address'].split('/')[0]}\t{hostname}")
    lines += container_records.extra_hosts(c.config)
    _write_in_place(c.dir / "hosts", "\n".join(lines) + "\n")
    dns = c.config["HostConfig"].get("Dns") or []
    # like Docker: the embedded DNS as soon as one network is user-defined, also one connected
    # later to a container started on the default bridge (until then it has the host's resolv.conf);
    # on an overlay, Docker's 127.0.0.11 in the container itself (it answers for all its networks)
    drivers = {n: (nets.find(n) or {}).get("Driver") for n in bridge_networks(c)}
    user = [n for n, d in drivers.items() if n != "bridge" and d == "bridge"][:1]
    if dns:
        text = "".join(f"nameserver {s}\n" for s in dns)
    elif "overlay" in drivers.values():
        text = "# netdiag embedded DNS of overlay networks\nnameserver 127.0.0.11\noptions ndots:0\n"
    elif user:
        gw = nets.ipam(nets.get(user[0]))["Gateway"]
        text = f"# netdiag embedded DNS of network {user[0]}\nnameserver {gw}\noptions ndots:0\n"
    else:
        return
    _write_in_place(c.dir / "resolv.conf", text)


def _write_in_place(path, text: str) -> None:
    with open(path, "r+" if path.exists() else "w") as f:
        f.seek(0)
        f.write(text)
        f.truncate()
