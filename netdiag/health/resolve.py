"""Resolve a name the way the source namespace does: its own /etc/hosts, then the nameservers of
its own resolv.conf (search list, ndots, timeout, attempts), asked over UDP from inside its network
namespace, so Docker's 127.0.0.11 and a network's embedded DNS answer exactly as they answer it.
netdiag's own knowledge of container names is never used to answer: a name the source cannot
resolve is a DNS failure, whatever netdiag knows.

The files are read through /proc/PID/root (the source's mount namespace) for containers and
processes, /etc/netns/NAME/ for `ip netns` names (what `ip netns exec` binds), /etc/ otherwise.
"""
from __future__ import annotations

import errno
import os
import re
import select
import socket
import time
from dataclasses import dataclass, field

from runtime.networks import dns

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    ndots: int = 1
    timeout: float = 5.0
    attempts: int = 2
    skipped: list[str] = field(default_factory=list)  # nameservers we cannot ask (IPv6)


def parse_resolv_conf(text: str) -> ResolvConf:
    """resolv.conf(5), the parts that decide what is asked: nameserver (at most 3, like glibc),
    search/domain (the last one wins), options ndots/timeout/attempts."""
    conf = ResolvConf()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, args = words[0], words[1:]
        if key == "nameserver" and args:
            if len(conf.nameservers) + len(conf.skipped) >= 3:
                continue
            try:
                import ipaddress

                ip = ipaddress.ip_address(args[0].split("%")[0])
            except ValueError:
                continue
            (conf.nameservers if ip.version == 4 else conf.skipped).append(str(ip))
        elif key in ("search", "domain"):
            conf.search = [d.rstrip(".") for d in args if d.strip(".")][:6]
        elif key == "options":
            for opt in args:
                name, _, val = opt.partition(":")
                if val.isdigit():
                    if name == "ndots":
                        conf.ndots = min(int(val), 15)
                    elif name == "timeout":
                        conf.timeout = float(min(max(int(val), 1), 30))
                    elif name == "attempts":
                        conf.attempts = min(max(int(val), 1), 5)
    return conf


def parse_hosts(text: str) -> dict[str, list[str]]:
    """hosts(5): lower-cased name -> IPv4 addresses, in file order."""
    import ipaddress

    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        try:
            if ipaddress.ip_address(words[0]).version != 4:
                continue
        except ValueError:
            continue
        for name in words[1:]:
            out.setdefault(name.lower().rstrip("."), []).append(words[0])
    return out


def candidates(name: str, conf: ResolvConf) -> list[str]:
    """The names a stub resolver asks, in order (glibc/musl: as is first when it has >= ndots dots)."""
    if name.endswith("."):
        return [name.rstrip(".")]
    searched = [f"{name}.{d}" for d in conf.search]
    return [name, *searched] if name.count(".") >= conf.ndots else [*searched, name]


@dataclass
class Files:
    resolv_conf: str  # paths as this process can open them
    hosts: str
    where: str        # for people: whose files these are


def files_for(ns: dict, container: dict | None) -> Files:
    """Where the source namespace's processes read their resolver configuration (`container`: the
    container whose namespace it is, if any)."""
    pid = None
    if ns.get("kind") == "container":
        c = container or {}
        pid = c.get("pid") or (ns.get("pids") or [None])[0]
        who = f"{c.get('name') or ns.get('label')}'s"
    elif ns.get("kind") == "pid" and ns.get("pids"):
        pid, who = ns["pids"][0], f"pid {ns['pids'][0]}'s"
    elif ns.get("kind") == "netns" and ns.get("netns_names"):
        name = ns["netns_names"][0]
        base = f"/etc/netns/{name}"
        pick = {f: (f"{base}/{f}" if os.path.exists(f"{base}/{f}") else f"/etc/{f}") for f in ("resolv.conf", "hosts")}
        return Files(pick["resolv.conf"], pick["hosts"], f"ns:{name}'s ({pick['resolv.conf']})")
    else:
        who = "the host's"
    if pid:
        return Files(f"/proc/{pid}/root/etc/resolv.conf", f"/proc/{pid}/root/etc/hosts", f"{who} /etc/resolv.conf")
    return Files("/etc/resolv.conf", "/etc/hosts", f"{who} /etc/resolv.conf")


def _read(path: str) -> str | None:
    """A resolver file, None when unreadable (glibc's view too). A container's are read inside its
    root (an absolute link must not reach the host's files) and bounded (a FIFO must not hang us)."""
    from runtime import bounded, fsroot

    inside = re.match(r"(/proc/\d+/root)(/.*)", path)
    try:
        data = fsroot.read_in_root(*inside.groups(), 1 << 20) if inside else bounded.read_bytes(path, 1 << 20)
    except bounded.Refused:
        return None
    return data.decode("utf-8", errors="replace")


def resolve(ns_path: str, name: str, files: Files, deadline: float) -> dict:
    """Resolve `name` as the source would. Returns {"address" (None on failure), "source"
    ("hosts"|"dns"|None), "server", "answer", "attempts": [{server, name, answer, elapsed}],
    "error": None or "nxdomain"|"nodata"|"servfail"|"refused"|"timeout"|"unreachable"|"no_nameserver",
    "resolv_conf", "where", "elapsed"}."""
    start = time.monotonic()
    out = {"name": name, "address": None, "source": None, "server": None, "answer": "", "attempts": [], "error": None,
           "resolv_conf": files.resolv_conf, "where": files.where, "nameservers": [], "search": [], "elapsed": 0.0}
    hosts = parse_hosts(_read(files.hosts) or "")
    hit = hosts.get(name.lower().rstrip("."))
    if hit:
        out.update(address=hit[0], source="hosts", answer=f"{name} -> {hit[0]} in {files.hosts}",
                   elapsed=round(time.monotonic() - start, 4))
        return out
    text = _read(files.resolv_conf)
    conf = parse_resolv_conf(text or "")
    # glibc's fallback without any nameserver line is the local host; say it, and ask it, like glibc
    servers = conf.nameservers or ([] if conf.skipped else ["127.0.0.1"])
    out.update(nameservers=conf.nameservers, search=conf.search)
    if text is None:
        out["note"] = f"{files.resolv_conf} cannot be read: glibc would ask 127.0.0.1"
    if not servers:
        out.update(error="no_nameserver", answer=f"no IPv4 nameserver in {files.resolv_conf} (IPv6 only: {', '.join(conf.skipped)})")
        return out
    try:
        _ask_all(ns_path, name, conf, servers, deadline, out)
    finally:
        out["elapsed"] = round(time.monotonic() - start, 4)
    return out


def _ask_all(ns_path: str, name: str, conf: ResolvConf, servers: list[str], deadline: float, out: dict) -> None:
    """The stub resolver's loop: for each candidate name, each server (attempts rounds) until one
    answers with an address, or says the name does not exist."""
    from runtime.kernel.ns import netns

    worst = None  # the most telling failure seen: an answer beats silence
    rank = {"nxdomain": 5, "nodata": 4, "servfail": 3, "refused": 3, "unreachable": 2, "timeout": 1}
    for qname in candidates(name, conf):
        settled = False  # a server answered for this name (NXDOMAIN/NODATA): next candidate
        for _ in range(conf.attempts):
            for server in servers:
                left = deadline - time.monotonic()
                if left <= 0:
                    out.update(error=worst[0] if worst else "timeout", answer=worst[1] if worst else "the check's timeout ran out")
                    return
                with netns(ns_path):  # the socket belongs to the namespace it is created in
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                try:
                    kind, detail, addr = _ask(sock, server, qname, min(left, conf.timeout))
                finally:
                    sock.close()
                out["attempts"].append({"server": server, "name": qname, "answer": f"{server} {detail}"})
                if addr:
                    out.update(address=addr, source="dns", server=server, answer=f"{server} {detail}", error=None)
                    return
                if worst is None or rank[kind] > rank[worst[0]]:
                    worst = (kind, f"{server} {detail}")
                    out["server"] = server
                if kind in ("nxdomain", "nodata"):
                    settled = True
                    break
            if settled:
                break
    out.update(error=worst[0] if worst else "timeout", answer=worst[1] if worst else "")


def _ask(sock: socket.socket, server: str, qname: str, wait: float) -> tuple[str, str, str | None]:
    """One A query. Returns (kind, detail, address or None)."""
    try:
        query = dns.build_query(qname, dns.A)
    except ValueError:
        return "nxdomain", f"was not asked: {qname!r} is not a name DNS can carry", None
    qid = int.from_bytes(query[:2], "big")
    t0 = time.monotonic()
    try:
        sock.connect((server, 53))  # a connected UDP socket reports ICMP port unreachable as ECONNREFUSED
        sock.send(query)
        end = t0 + wait
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                return "timeout", f"did not answer within {wait:.1f}s", None
            data = sock.recv(4096)
            try:
                resp = dns.parse_response(data)
            except dns.MalformedPacket:
                continue
            if resp.id == qid:
                break
    except OSError as e:
        if e.errno == errno.ECONNREFUSED:
            return "refused", "refused the query: nothing listens on its port 53 (ICMP port unreachable)", None
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "unreachable", f"cannot be reached ({os.strerror(e.errno)})", None
        return "timeout", f"could not be asked ({os.strerror(e.errno or 0) or e})", None
    ms = (time.monotonic() - t0) * 1000
    rcode = RCODES.get(resp.rcode, str(resp.rcode))
    addrs = [a[3] for a in resp.answers if a[1] == dns.A]
    if resp.rcode == 0 and addrs:
        return "ok", f"answered {qname} A {addrs[0]} ({ms:.0f} ms)", addrs[0]
    if resp.rcode == 0:
        tc = " (truncated)" if resp.flags & 0x0200 else ""
        return "nodata", f"answered NOERROR without an address for {qname}{tc}", None
    kind = {3: "nxdomain", 2: "servfail", 5: "refused"}.get(resp.rcode, "servfail")
    return kind, f"answered {rcode} for {qname}", None
