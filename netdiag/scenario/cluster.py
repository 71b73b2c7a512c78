"""A scenario on several hosts: `world.cluster: {hosts: [h1, h2]}` is built as a ClusterLab
(netdiag/worlds/host.py: an underlay bridge in a namespace of its own, one namespace per host with its own
netdiag state and cgroup parent, a real etcd in a namespace of its own), every host joined to the
cluster; then the world's `networks` (`driver: overlay` for one the hosts share; created on
`host:`, default the first) and its `containers`, each started on its `host:` (default the first).

Where things run:
  * a step's `in:` is a host (its network namespace and netdiag state) or a container (its network
    namespace, on whichever host runs it); `host: HOST` is the host whose netdiag state the step
    uses (and whose namespace, without `in`); both default to the first host. (Not `on:`: YAML
    1.1, which PyYAML reads, takes that key for the boolean true.)
  * the diagnosis runs on `diagnosis.host`, the grader (`netdiag check` of `checks`) on the
    top-level `grade_host`; both default to the first host.

Faults are planted once the hosts' agents have programmed every overlay (each host's VXLAN
devices hold what etcd lists), so an agent catching up cannot undo one. `destroy` works from any
process: the registry keeps the lab's name, its state directory and its hosts; every process in
the world's namespaces (etcd, the agents, the containers' monitors, whatever a learner started)
is killed, then the lab is removed and `leaks()` says what is left.

Variables: ${lab}, ${host_ip} (the first host's underlay address) and ${host_ip:HOST} (that host's,
its VTEP), ${store} (`ns:` + the store's namespace: a machine on the underlay that is no member),
${store_ip}, ${ip:CONTAINER[:NETWORK]}, ${mac:CONTAINER[:NETWORK]}, ${pid:CONTAINER}, ${vxlan:NETWORK} (the overlay
network's VXLAN device on the hosts), ${cni_conf:HOST} (the host's CNI conflist directory) and ${file:NAME}.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runtime.errors import InvalidArgument, NetdiagError, NotFound

from ..worlds import STORE_IP, ClusterHost, ClusterLab
from . import registry
from .common import STEP_TIMEOUT, _VAR, StepFailed, container_argv, kill_in, netns_inodes, network_argv
from .library import Scenario
from .placement import host_names
from .world import ScenarioWorld

SETTLE_TIMEOUT = 20.0
VARIABLES = ("lab", "host_ip", "store", "store_ip", "ip:CONTAINER[:NETWORK]", "mac:CONTAINER[:NETWORK]", "pid:CONTAINER", "vxlan:NETWORK",
             "cni_conf:HOST", "file:NAME")


def is_cluster(scenario: Scenario) -> bool:
    return "cluster" in scenario.spec["world"]


class ClusterSession(ScenarioWorld):
    """A running scenario of several hosts; the same interface as session.Session."""

    multi_host = True

    def __init__(self, scenario: Scenario, lab: ClusterLab, names: list[str]):
        super().__init__(scenario, lab)
        self.hosts: dict[str, ClusterHost] = dict(zip(names, lab.hosts))
        self.first = names[0]

    # -- life ----------------------------------------------------------------------------------------
    @classmethod
    def claim(cls, scenario: Scenario) -> "ClusterSession":
        names = host_names(scenario.spec)
        return cls(scenario, registry.claim(scenario.name, scenario.slug, lambda root: make_lab(None, root, names, scenario.spec),
                                            hosts=names), names)

    def describe(self) -> str:
        if flannel_of(self.scenario.spec) is not None:
            return (f"Kubernetes-like nodes {', '.join(f'{n} ({h.address})' for n, h in self.hosts.items())} with flannel's "
                    f"vxlan layout (cni0, flannel.1 MTU {self.lab.vxlan_mtu}, conflist cbr0 with pod MTU {self.lab.pod_mtu})")
        return (f"cluster lab {self.lab.name}: hosts " + ", ".join(f"{n} ({h.address})" for n, h in self.hosts.items())
                + f" on one underlay, etcd at {STORE_IP}")

    def create_lab(self) -> None:
        try:
            self.lab.create()
        except RuntimeError as e:  # etcd missing or not answering
            raise StepFailed(f"The cluster of scenario {self.scenario.name} did not start", str(e), "run scripts/setup") from None

    @classmethod
    def attach(cls, scenario: Scenario) -> "ClusterSession":
        rec = registry.of_running(scenario.name, scenario.slug)
        names = rec.get("hosts") or host_names(scenario.spec)
        return cls(scenario, make_lab(rec["lab"], Path(rec["state_dir"]), names, scenario.spec), names)

    def remove(self) -> None:
        """Every process in its namespaces (etcd, agents, monitors, a learner's shells), the hosts,
        the underlay, the state."""
        from runtime.records import recorded_pids

        pids = set().union(*(recorded_pids(h.state_dir) for h in self.hosts.values()))
        kill_in(netns_inodes(self.namespaces(), pids))
        self.lab.destroy()
        shutil.rmtree(self.root, ignore_errors=True)

    def _leftovers(self) -> list[str]:
        return self.lab._leftovers() + ([str(self.root)] if self.root.exists() else [])

    def namespaces(self) -> list[str]:
        """Every named network namespace of the world: the underlay, the store's, each host's."""
        return [self.lab.underlay, self.lab.kv] + [h.name for h in self.hosts.values()]

    def containers(self) -> list[str]:
        """The world's containers with their hosts ("api (h2)"), as each host's `netdiag ps -a` sees them."""
        out = []
        for name in self.hosts:
            p = self.run(["netdiag", "ps", "-a", "--json"], name, check=False, timeout=20)
            out += [f"{json.loads(line)['Names']} ({name})" for line in p.stdout.splitlines() if line.strip()]
        return sorted(out)

    def briefing(self) -> str:
        slug, hosts = self.scenario.slug, ", ".join(f"{n} ({h.address})" for n, h in self.hosts.items())
        return (f"The world runs in cluster lab {self.lab.name}: hosts {hosts} on one underlay, etcd at {STORE_IP}.\n"
                f"Get a shell on a host, where `netdiag` acts on it:\n"
                f"    netdiag scenario shell {slug}            ({self.first})\n"
                f"    netdiag scenario shell {slug} HOST       (another host: {', '.join(self.hosts)})\n"
                f"    netdiag scenario shell {slug} CONTAINER  (inside a container, on its host)\n"
                f"Then: netdiag scenario hint | check | solution | reset | stop")

    def shell_target(self, name: str | None) -> tuple[dict, object, str | None, str]:
        """(env, preexec_fn, container or None, host) of `scenario shell SCENARIO [NAME]`: the
        first host, the host NAME, or the container NAME on the host that runs it."""
        if name is None or name in self.hosts:
            host = name or self.first
            return self.env(host), self.hosts[host].enter(), None, host
        host = self.host_of(name)
        return self.env(host), self.hosts[host].enter(), name, host

    # -- building the world ----------------------------------------------------------------------------
    def build(self, say) -> None:
        world = self.scenario.spec["world"]
        for name, h in self.hosts.items() if flannel_of(self.scenario.spec) is None else ():  # flannel's nodes: no store
            say(f"{name} joins the cluster (VTEP {h.address})")
            self.run(["netdiag", "cluster", "join", "--store", self.lab.store_url, "--advertise", h.address, "--name", name], name)
        for net in world.get("networks", []):
            host = net.get("host") or self.first
            say(f"network {net['name']}" + (f" ({net['driver']})" if net.get("driver") else "") + f" on {host}")
            self.run(network_argv(net, self.expand), host)
        for c in world.get("containers", []):
            host = c.get("host") or self.first
            say(f"container {c['name']} on {host}")
            self.run(container_argv(c), host)
            for net in c.get("connect", []):
                self.run(["netdiag", "network", "connect", net, c["name"]], host)
        if any(n.get("driver") == "overlay" for n in world.get("networks", [])):
            say("waiting for the agents to program the overlay")
            self.settle()

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Until every host's VXLAN devices hold exactly what the store lists (`netdiag inspect
        --net host`): an agent applies a change about 0.1 s after it, and a fault planted before
        would be undone."""
        deadline = time.monotonic() + timeout
        while True:
            behind = [name for name in self.hosts if not self._programmed(name)]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"The overlay of scenario {self.scenario.name} was not programmed within {timeout:g} s",
                                 f"hosts behind the store: {', '.join(behind)}", "see the hosts' cluster/agent.log")
            time.sleep(0.2)

    def _programmed(self, host: str) -> bool:
        try:
            view = self.net_view(host)
        except (ValueError, NetdiagError):
            return False
        return all(not rep["missing"] and all(e["status"] == "ok" for e in rep["fdb"] + rep["neighbours"])
                   for rep in view.get("overlay") or [])

    def net_view(self, host: str) -> dict:
        p = self.run(["netdiag", "inspect", "--net", "host", "--json"], host, check=False, timeout=60)
        if p.returncode != 0:
            raise StepFailed(f"netdiag inspect --net host failed on {host}", p.stderr.strip()[-600:], "")
        return json.loads(p.stdout)

    # -- running things in the world -----------------------------------------------------------------
    def run(self, argv: list[str], where: str | None = None, check: bool = True, timeout: float = STEP_TIMEOUT,
            on: str | None = None) -> subprocess.CompletedProcess:
        """argv (`netdiag` first: this netdiag) in `where`'s network namespace (a host or a
        container; default `on`, else the first host) with the netdiag state of `on` (default:
        the host of `where`)."""
        argv = [self.expand(a) for a in argv]
        if argv[0] == "netdiag":
            argv = [sys.executable, "-m", "netdiag", *argv[1:]]
        host, preexec = self.place(where, on)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env(host), preexec_fn=preexec)
        if check and p.returncode != 0:
            shown = " ".join(argv[2:] if argv[0] == sys.executable else argv)
            label = f"{on}:{where}" if on and where and on != where else where or host
            raise StepFailed(f"Step '{shown}' ({label}) of scenario {self.scenario.name} failed with exit {p.returncode}",
                             (p.stderr or p.stdout).strip()[-600:], "the scenario file is wrong, or the host lacks something")
        return p

    def place(self, where: str | None, on: str | None) -> tuple[str, object]:
        """(the host whose netdiag state is used, a preexec_fn entering the namespace)."""
        from runtime.kernel.ns import enter

        if on is not None and on not in self.hosts:
            raise InvalidArgument(f"No host {on} in scenario {self.scenario.name}", f"hosts: {', '.join(self.hosts)}", "")
        if where is None or where in self.hosts:
            target = where or on or self.first
            return on or target, self.hosts[target].enter()
        host, info = self.locate(where)
        return on or host, enter(f"/proc/{self._pid(where, info)}/ns/net")

    def env(self, host: str | None = None) -> dict:
        path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        return {**self.hosts[host or self.first].env, "PATH": path}

    def namespace(self, where: str | None = None) -> str:
        """A host's namespace (None: the first host) or a container's, on whichever host runs it."""
        if where is None or where in self.hosts:
            return self.hosts[where or self.first].namespace()
        return f"/proc/{self.pid_of(where)}/ns/net"

    def env_of(self, where: str | None = None) -> dict:
        return self.env(where if where is None or where in self.hosts else self.host_of(where))

    def locate(self, container: str) -> tuple[str, dict]:
        """(the host that runs a container, its `netdiag inspect` there): where the world puts it,
        else the host that knows it (a step may start one anywhere)."""
        placed = next((c.get("host") or self.first for c in self.scenario.spec["world"].get("containers", [])
                       if c["name"] == container), None)
        for host in ([placed] if placed else []) + [h for h in self.hosts if h != placed]:
            p = self.run(["netdiag", "inspect", container], host, check=False)
            if p.returncode == 0:
                return host, json.loads(p.stdout)[0]
        raise NotFound(f"No container {container} in scenario {self.scenario.name}", f"on none of {', '.join(self.hosts)}", "")

    def host_of(self, container: str) -> str:
        return self.locate(container)[0]

    def inspect(self, name: str) -> dict:
        return self.locate(name)[1]

    def pid_of(self, name: str) -> int:
        return self._pid(name, self.inspect(name))

    def _pid(self, name: str, info: dict) -> int:
        if not info["State"]["Pid"]:
            raise StepFailed(f"Container {name} of scenario {self.scenario.name} is not running", "", "")
        return info["State"]["Pid"]

    def expand(self, text: str, **extra) -> str:
        """The variables of a cluster world (see the module's docstring), and `extra`."""
        first = self.hosts[self.first]
        fixed = {"lab": self.lab.name, "host_ip": first.address, "store": f"ns:{self.lab.kv}", "store_ip": STORE_IP, **extra}

        def one(m) -> str:
            key, arg, net = m.group(1), m.group(2), m.group(3)
            if key == "file" and arg:
                return str(self.file(arg))
            if key == "host_ip" and arg and net is None:
                if arg not in self.hosts:
                    raise InvalidArgument(f"${{host_ip:{arg}}}: no host {arg} in scenario {self.scenario.name}",
                                          f"hosts: {', '.join(self.hosts)}", "")
                return self.hosts[arg].address
            if key in ("ip", "mac") and arg:
                nets = self.inspect(arg)["NetworkSettings"]["Networks"]
                chosen = nets.get(net) if net else next(iter(nets.values()), None)
                value = (chosen or {}).get("IPAddress" if key == "ip" else "MacAddress")
                if not value:
                    raise StepFailed(f"${{{key}:{arg}{':' + net if net else ''}}}: no such address", f"networks: {list(nets)}", "")
                return value
            if key == "pid" and arg and net is None:  # a container's init: `nsenter -t PID -n` enters it
                return str(self.pid_of(arg))
            if key == "cni_conf" and arg in self.hosts and net is None:  # the host's CNI configuration directory
                return self.hosts[arg].env.get("NETDIAG_CNI_CONF_DIR") or "/etc/cni/net.d"
            if key == "vxlan" and arg and net is None:
                return self.vxlan_device(arg)
            if key in fixed and arg is None:
                return fixed[key]
            raise InvalidArgument(f"Unknown variable ${{{m.group(0)[2:-1]}}} in scenario {self.scenario.name}",
                                  f"known in a cluster world: {', '.join(VARIABLES)}", "")

        return _VAR.sub(one, text)

    def vxlan_device(self, network: str) -> str:
        """The VXLAN device of an overlay network, as the hosts' own view shows it."""
        for host in self.hosts:
            for rep in self.net_view(host).get("overlay") or []:
                if rep["network"] == network:
                    return rep["device"]
        raise StepFailed(f"${{vxlan:{network}}}: no host has a VXLAN device for {network}",
                         "a host has one once a container of it is on the network", "")


def flannel_of(spec: dict) -> dict | None:
    return spec["world"]["cluster"].get("flannel")


def make_lab(name: str | None, state_dir: Path, names: list[str], spec: dict | None = None) -> ClusterLab:
    """A ClusterLab whose hosts carry the scenario's names: namespace LAB-NAME, state STATE/NAME,
    underlay address 198.51.100.N in the world's order; with `cluster.flannel`, Kubernetes nodes
    with flannel's vxlan layout (netdiag/worlds/flannel.py: no store, pods on `cni:cbr0`)."""
    flannel = flannel_of(spec) if spec else None
    if flannel is not None:
        from ..worlds.flannel import FlannelLab

        return FlannelLab(name=name, state_dir=state_dir, names=names, pod_mtu=flannel.get("pod_mtu"))
    return ClusterLab(name=name, state_dir=state_dir, names=names)
