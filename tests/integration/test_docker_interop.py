"""netdiag next to a real Docker engine: a private dockerd (Debian's docker.io) runs INSIDE the lab
namespace with its default bridge (docker0) and its iptables(-nft) rules, the way a Docker host
looks; netdiag finds its containers through the API socket (DOCKER_HOST), matches their veths to
docker0 / br-<id>, and traces through Docker's own NAT and isolation rules.

The engine is started exactly like bench/run_bench.py starts one (nsenter into the lab netns, every
state directory private, its clean-up helpers), but with Docker's default networking. Nothing here
may change the machine's root network namespace: the module fixture compares `nft list ruleset`
and `ip -o link` there before and after, and everything (containers, dockerd, containerd and its
shims, mounts, cgroups, the host paths dockerd creates on its own, the lab) is removed at the end,
also on failure. No netdiag container is started in these tests (the lab's docker0 is Docker's).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from bench import run_bench as rb
from netdiag.lab import leaks
from tests.labkit import World

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("dockerd") is None or shutil.which("docker") is None,
                                 reason="no Docker engine installed")]

START_TIMEOUT = 30.0
IMAGE = "bbox"


def root_netns_state() -> tuple[str, str]:
    """The root namespace's links (name and flags) and nftables ruleset (counters left out)."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = "\n".join(sorted(" ".join(line.split()[:3]) for line in links.splitlines()))
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    return links, re.sub(r"counter packets \d+ bytes \d+", "counter", rules)


def other_engines() -> list[int]:
    """dockerd/containerd processes still running (ours are all gone when this is asked)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            comm = (d / "comm").read_text().strip() if d.name.isdigit() else ""
        except OSError:
            continue
        if comm in ("dockerd", "containerd") or comm.startswith("containerd-shim"):
            out.append(int(d.name))
    return out


class Engine:
    """A dockerd of our own inside the lab's network namespace, all its state in `work`."""

    def __init__(self, lab: World, work: Path):
        self.lab, self.work = lab, work
        self.dockerd = shutil.which("dockerd")
        self.cli = rb.find_docker_cli(self.dockerd)
        self.data, self.exec_root = work / "data", work / "exec"
        self.sock, self.pidfile, self.logfile = work / "docker.sock", work / "docker.pid", work / "dockerd.log"
        self.cgroup_parent = f"{lab.name}-docker"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=str(work / "client"))
        self.proc: subprocess.Popen | None = None
        self.host_paths_before = {p for p in rb.HOST_PATHS if os.path.lexists(p)}
        self.tracked = rb.Tracked()

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        if self.cli is None:
            raise RuntimeError("no docker CLI found")
        p = subprocess.run([self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-600:]}")
        return p

    def start(self) -> None:
        for d in (self.data, self.exec_root):
            d.mkdir(parents=True)
        cfg = self.work / "daemon.json"
        cfg.write_text("{}\n")  # never the machine's /etc/docker/daemon.json
        # Docker's defaults otherwise: docker0, iptables (-nft here), ip_forward, masquerade, userland proxy
        argv = ["nsenter", f"--net=/run/netns/{self.lab.name}", "--", self.dockerd,
                "--config-file", str(cfg), "--data-root", str(self.data), "--exec-root", str(self.exec_root),
                "-H", f"unix://{self.sock}", "--pidfile", str(self.pidfile),
                "--cgroup-parent", f"/{self.cgroup_parent}", "--log-level", "warn"]
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=self.env)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd at {self.sock} not answering after {START_TIMEOUT:.0f}s: {self.log_tail()}")
            time.sleep(0.1)

    def _ping(self) -> bool:
        if not self.sock.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(str(self.sock))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b" 200 " in s.recv(256)
        except OSError:
            return False

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-n:])[-800:] or "(empty log)"

    def import_busybox(self, tag: str) -> None:
        rootfs = self.work / "rootfs"
        rb.make_busybox_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run([self.cli, "import", "-", tag], stdin=tar.stdout, env=self.env, capture_output=True,
                             text=True, timeout=60)
        tar.stdout.close()
        tar.wait()
        if tar.returncode != 0 or imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr.strip()[-400:]}")

    def stop(self) -> list[str]:
        """Remove the containers, stop dockerd and everything it started; what could not be removed."""
        left = []
        self.tracked.add(rb.pids_mentioning(str(self.work)))
        if self.proc is not None and self.proc.poll() is None:
            try:  # SIGKILL the containers now rather than wait out dockerd's 15 s shutdown timeout
                ids = self.docker("ps", "-aq", check=False, timeout=20).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=30)
            except subprocess.TimeoutExpired:
                left.append("docker rm -f timed out")
            self.proc.send_signal(signal.SIGTERM)  # nsenter execs dockerd: this pid is dockerd
            try:
                self.proc.wait(rb.DOCKERD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        steps = [("processes", lambda: rb.end_processes(self.work, self.tracked)),  # containerd, shims, proxies
                 ("mounts", lambda: rb.unmount_under(self.work))]
        for name, step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - every later step still has to run
                left.append(f"{name} clean-up failed: {e}")
        left += [f"cgroup {d}" for d in rb.remove_cgroup_tree(self.cgroup_parent)]
        if not rb.mounts_under(self.work):
            shutil.rmtree(self.work, ignore_errors=True)
        if not other_engines():  # another engine (another test, a bench) may be using /run/containerd now
            left += [f"path {p}" for p in rb.remove_created(self.host_paths_before)]
        left += [f"mount {m}" for m in rb.mounts_under(self.work)]
        if self.work.exists():
            left.append(f"dir {self.work}")
        running = sorted(set(self.tracked.running()) | set(rb.pids_mentioning(str(self.work))))
        if running:
            left.append(f"processes {running}")
        return left


class DockerLab:
    def __init__(self, lab: World, engine: Engine):
        self.lab, self.engine = lab, engine

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.engine.docker(*args, **kw)

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]


@pytest.fixture(scope="module")
def dlab(tmp_path_factory):
    """A lab host running a private Docker engine with dweb (-p 8080:80, on docker0) and dapi (on
    the user network dnet), both busybox httpd on port 80; an httpd in the outside namespace."""
    root_before = root_netns_state()
    tmp = tmp_path_factory.mktemp("docker-lab")
    lab = World(state_dir=tmp / "ndroot")
    lab.create()
    engine = None
    left: list[str] = []
    try:
        engine = Engine(lab, Path(tempfile.mkdtemp(prefix="nddock-")))  # short: socket paths fit 108 bytes
        d, error = DockerLab(lab, engine), None
        try:
            engine.start()
            engine.import_busybox(IMAGE)
            d.docker("run", "-d", "--name", "dweb", "-p", "8080:80", IMAGE, "httpd", "-f", "-p", "80")
            d.docker("network", "create", "dnet")
            d.docker("run", "-d", "--network", "dnet", "--name", "dapi", IMAGE, "httpd", "-f", "-p", "80")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            error = str(e)
        if error:
            pytest.fail(f"private dockerd in the lab: {error}", pytrace=False)
        lab.env["DOCKER_HOST"] = f"unix://{engine.sock}"  # how netdiag finds the engine
        lab.outside_server(tmp)
        yield d
    finally:
        for what, step in (("engine", lambda: left.extend(engine.stop() if engine else [])), ("lab", lab.destroy)):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - the other steps and checks still run
                left.append(f"{what} clean-up failed: {e}")
        left += leaks(lab)
        root_after = root_netns_state()
        if root_after[0] != root_before[0]:
            left.append(f"root netns links CHANGED:\n{root_before[0]}\n---\n{root_after[0]}")
        if root_after[1] != root_before[1]:
            left.append(f"root netns nftables ruleset CHANGED:\n{root_before[1]}\n---\n{root_after[1]}")
    assert not left, "left behind: " + "; ".join(left)


def netdiag_json(lab, *args):
    return json.loads(lab.ok(*args, "--json"))


def trace(lab, src, dst, *args):
    p = lab.run("trace", src, dst, "--json", *args, timeout=90)
    assert p.returncode in (0, 1, 3), p.stderr
    r = json.loads(p.stdout)
    assert p.returncode == {"delivered": 0, "blocked": 1, "unknown": 3}[r["verdict"]], (p.returncode, r["verdict"])
    return r


def host_veth_of(dlab, name: str) -> dict:
    """The host end of a container's eth0, found without netdiag: the container's eth0 names its
    peer's ifindex (iflink); the lab host's `ip -j link` has that index."""
    pid = dlab.inspect(name)["State"]["Pid"]
    eth0 = json.loads(subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "link", "show", "eth0"],
                                     capture_output=True, text=True, check=True).stdout)[0]
    host_links = json.loads(dlab.lab.in_lab("ip", "-j", "link").stdout)
    return next(link for link in host_links if link["ifindex"] == eth0["link_index"])


def test_docker_containers_are_found_and_their_veths_matched_to_docker_bridges(dlab, tmp_path):
    lab = dlab.lab
    dweb, dapi = dlab.inspect("dweb"), dlab.inspect("dapi")
    dnet = json.loads(dlab.docker("network", "inspect", "dnet").stdout)[0]
    expect = {"dweb": (dweb, "bridge", "docker0"), "dapi": (dapi, "dnet", "br-" + dnet["Id"][:12])}

    out = tmp_path / "snap.json"
    lab.ok("snapshot", "-o", str(out))
    snap = json.loads(out.read_text())
    host = snap["namespaces"][snap["host"]]
    assert lab.name in host["netns_names"]
    by_name = {ns["name"]: ns for ns in snap["namespaces"].values() if ns["kind"] == "container"}
    for name, (info, net, bridge) in expect.items():
        ns = by_name[name]
        assert (ns["runtime"], ns["container"], ns["label"]) == ("docker", info["Id"], f"{name} (docker container)")
        eth0 = next(link for link in ns["links"] if link["name"] == "eth0")
        ep = info["NetworkSettings"]["Networks"][net]
        assert eth0["mac"] == ep["MacAddress"]
        assert any(a["ifname"] == "eth0" and a["address"] == ep["IPAddress"] for a in ns["addresses"])
        veth = host_veth_of(dlab, name)
        assert veth["master"] == bridge
        assert eth0["peer"] == {"ns": snap["host"], "index": veth["ifindex"], "name": veth["ifname"]}
        host_end = next(link for link in host["links"] if link["name"] == veth["ifname"])
        assert host_end["master"] == bridge and host_end["peer"]["ns"] == ns["id"]
    docker_nets = {n["name"]: n for n in snap["networks"] if n["runtime"] == "docker"}
    assert docker_nets["bridge"]["bridge"] == "docker0" and docker_nets["dnet"]["bridge"] == expect["dapi"][2]

    v = netdiag_json(lab, "inspect", "--net", "dweb")
    assert v["namespace"]["kind"] == "container" and v["namespace"]["label"] == "dweb (docker container)"
    assert v["container"]["runtime"] == "docker" and v["container"]["id"] == dweb["Id"]
    side = v["host_side"][0]
    assert (side["veth"], side["bridge"], side["namespace"]) == (host_veth_of(dlab, "dweb")["ifname"], "docker0", "host")
    assert {(p["proto"], p["host_ip"], p["host_port"], p["ctr_port"]) for p in side["published_ports"]} >= {("tcp", "0.0.0.0", 8080, 80)}
    assert any(r["chain"] == "DOCKER" and r["table"] == "ip nat" for r in side["nft_rules"])  # Docker's own rules
    assert any(s["port"] == 80 and s["process"] == "httpd" for s in v["sockets"])
    v = netdiag_json(lab, "inspect", "--net", "dapi")
    assert v["container"]["id"] == dapi["Id"] and v["host_side"][0]["bridge"] == expect["dapi"][2]

    topo = netdiag_json(lab, "topo")
    nodes = {n["id"]: n for n in topo["nodes"]}
    for name, (info, _net, bridge) in expect.items():
        ns = by_name[name]
        node = nodes[ns["id"]]
        assert (node["runtime"], node["container"]["id"]) == ("docker", info["Id"])
        veth = host_veth_of(dlab, name)
        edge = {e["source"]: e["target"] for e in topo["edges"] if e["kind"] == "veth"}
        assert edge[f"{snap['host']}/{veth['ifname']}"] == f"{ns['id']}/eth0"
        assert any(e["kind"] == "bridge" and e["source"] == f"{snap['host']}/{veth['ifname']}"
                   and e["target"] == f"{snap['host']}/{bridge}" for e in topo["edges"])
    assert topo["networks"][expect["dapi"][2]] == "dnet" and topo["networks"]["docker0"] == "bridge"


def test_trace_through_dockers_own_rules(dlab):
    lab = dlab.lab
    dweb_ip = dlab.inspect("dweb")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]

    # a user network to the default bridge: Docker's DOCKER-ISOLATION chains drop it (native
    # iifname/oifname matches in iptables-nft's JSON, so the evaluator decides it exactly)
    r = trace(lab, "dapi", "dweb", "--port", "80")
    assert (r["verdict"], r["cause"]) == ("blocked", "NETWORK_ISOLATION"), r["summary"]
    rule = next(e for e in r["evidence"] if e["kind"] == "nft_rule")
    assert (rule["table"], rule["chain"]) == ("ip filter", "DOCKER-ISOLATION-STAGE-2") and "drop" in rule["rule"]
    assert r["hops"][r["blocked_at"] - 1]["interface"] == "docker0"
    assert r["live"]["outcome"] == "timeout"
    # the xt match Docker uses for published ports cannot be read, but cannot change this verdict
    assert {(u["chain"], u["changes_outcome"]) for u in r["unevaluated_rules"]} <= {("PREROUTING", False)}

    # the internet to a published port: Docker's DNAT (an xt target behind an xt addrtype match)
    r = trace(lab, f"ns:{lab.outside}", "203.0.113.2", "--port", "8080")
    assert r["verdict"] == "delivered", r["summary"]
    end = r["hops"][-1]
    assert (end["label"], end["interface"], end["kind"]) == ("dweb (docker container)", "tcp/80", "socket")
    dnat = [e["detail"] for e in r["evidence"] if e["kind"] == "dnat"]
    assert any("not readable from nft" in d and f"docker publishes it to dweb {dweb_ip}:80" in d for d in dnat), dnat
    # what netdiag cannot read in Docker's rules, and says so: the addrtype match and the DNAT
    # target (both could change the outcome: the port table settles it), the conntrack match in
    # FORWARD (it cannot: Docker's DOCKER chain accepts the new connection anyway)
    unevaluated = {(u["chain"], u["reason"].split(" (xt)")[0], u["changes_outcome"]) for u in r["unevaluated_rules"]}
    assert unevaluated == {("PREROUTING", 'iptables match "addrtype"', True), ("DOCKER", "iptables target DNAT", True),
                           ("FORWARD", 'iptables match "conntrack"', False)}
    assert r["live"]["outcome"] == "connected" and r["reconciled"] == "static and live agree"

    # a container to the internet: masqueraded by Docker's POSTROUTING rule
    r = trace(lab, "dweb", "203.0.113.1", "--port", "80")
    assert r["verdict"] == "delivered", r["summary"]
    assert r["hops"][-1]["label"] == f"ns:{lab.outside}"
    assert any(e["kind"] == "snat" and "203.0.113.2" in e["detail"] and "MASQUERADE" in e.get("rule", "")
               for e in r["evidence"])
    assert r["live"]["outcome"] == "connected"

    # hairpin with Docker's userland proxy (its default): the DOCKER nat chain returns for traffic
    # from docker0, so the packet is not DNATed; docker-proxy on the host takes the connection
    r = trace(lab, "dweb", "203.0.113.2", "--port", "8080")
    assert r["verdict"] == "delivered", r["summary"]
    assert r["hops"][-1]["label"] == "host" and not any(e["kind"] == "dnat" for e in r["evidence"])
    assert any(e["kind"] == "socket" and "docker-proxy" in e["detail"] for e in r["evidence"])
    assert r["live"]["outcome"] == "connected"
