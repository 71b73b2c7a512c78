"""One running scenario: its world built with netdiag's own runtime in a lab namespace (a host of its
own: eth0, nftables, netdiag state), the faults planted, the learner's diagnosis and the grader
run there, and everything removed at the end — also processes started in the world's namespaces
(HAProxy, servers in the outside namespace), found by the namespace they run in.

Steps (faults, solutions) are argument lists, never shell strings; `netdiag` as the first word is
this netdiag, acting on the scenario's state. A world of several hosts (`world.cluster`) is
cluster.py's ClusterSession, which `Session.start` and `Session.attach` pick by the scenario; both
are worlds of netdiag.worlds' interface and share world.py's start skeleton, diagnosis and grader.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runtime.errors import InvalidArgument, NetdiagError, NotFound

from ..worlds import HOST_IP, OUTSIDE_IP, Lab
from ..worlds.leftovers import netns_left
from . import image_registry, pods, registry
from .common import STEP_TIMEOUT, _VAR, StepFailed, container_argv, kill_in, netns_inodes, network_argv
from .library import Scenario
from .world import ScenarioWorld


class Session(ScenarioWorld):
    multi_host = False  # a world of several hosts is a cluster.ClusterSession

    # -- life ----------------------------------------------------------------------------------------
    @classmethod
    def start(cls, scenario: Scenario, progress=None) -> "Session":
        """Build the world, plant the faults; refused when that scenario already runs."""
        from .cluster import ClusterSession, is_cluster

        if is_cluster(scenario):
            return ClusterSession.start(scenario, progress)
        return super().start(scenario, progress)

    @classmethod
    def claim(cls, scenario: Scenario) -> "Session":
        return cls(scenario, registry.claim(scenario.name, scenario.slug, lambda root: Lab(state_dir=root)))

    def describe(self) -> str:
        return f"lab {self.lab.name}: a host of its own (eth0 {HOST_IP}) behind an outside namespace ({OUTSIDE_IP})"

    def after_faults(self, say) -> None:
        for lb in self.scenario.spec["world"].get("haproxy", []):  # last: its first checks see the faults
            say(f"HAProxy {lb['name']} on {lb['network']}")
            self.start_haproxy(lb)

    @classmethod
    def attach(cls, scenario: Scenario) -> "Session":
        from .cluster import ClusterSession, is_cluster

        if is_cluster(scenario):
            return ClusterSession.attach(scenario)
        rec = registry.of_running(scenario.name, scenario.slug)
        return cls(scenario, Lab(name=rec["lab"], state_dir=Path(rec["state_dir"])))

    def remove(self) -> None:
        """Its Docker engine and Podman, every process in its namespaces, the containers, the lab."""
        self._docker_left = self.stop_docker() + self.stop_podman()
        kill_world(self.lab)
        image_registry.remove(self.lab)
        pods.remove(self.root)
        shutil.rmtree(haproxy_dir(self.lab), ignore_errors=True)
        with contextlib.suppress(OSError):  # the parent, once no scenario uses it
            haproxy_dir(self.lab).parent.rmdir()
        self.lab.destroy()
        shutil.rmtree(self.root, ignore_errors=True)

    def _leftovers(self) -> list[str]:
        return getattr(self, "_docker_left", []) + self.lab._leftovers() + netns_left(pods.netns_names(self.root)) + \
            [str(p) for p in [haproxy_dir(self.lab), Path("/run/netns") / image_registry.namespace(self.lab)] if p.exists()]

    def namespaces(self) -> list[str]:
        """Every named network namespace of the world: the lab host, its outside, a registry's behind it."""
        behind = [image_registry.namespace(self.lab)] if (image_registry.spec_of(self.scenario.spec) or {}).get("behind") else []
        return [self.lab.name, self.lab.outside, *behind, *pods.netns_names(self.root)]

    def containers(self) -> list[str]:
        """The world's containers, as its own `netdiag ps -a` sees them."""
        p = self.run(["netdiag", "ps", "-a", "--json"], check=False, timeout=20)
        return sorted(json.loads(line)["Names"] for line in p.stdout.splitlines() if line.strip())

    def shell_target(self, name: str | None) -> tuple[dict, object, str | None, str | None]:
        """Where `netdiag scenario shell SCENARIO [NAME]` goes: (env, preexec_fn, the container to
        exec into or None, the host or None for the lab host). Always the lab host; NAME is a container,
        or a pod (a shell in its network namespace, as `nsenter -n` gives one)."""
        if name is not None and pods.has(self.root, name):
            return self.env(), self.enter(name), None, None
        return self.env(), self.enter(), name, None

    # -- building the world ----------------------------------------------------------------------------
    def build(self, say) -> None:
        """The world without its load balancers (they start after the faults). A Docker engine
        (`docker: true`) starts last: it is the one installed on the host later."""
        world = self.scenario.spec["world"]
        for srv in (world.get("outside") or {}).get("http", []):
            www = self.lab.state_dir.parent / f"www-{srv['port']}"
            www.mkdir(parents=True, exist_ok=True)
            (www / "index.html").write_text(srv.get("body", "outside\n"))
            say(f"a web server on the outside ({OUTSIDE_IP}:{srv['port']})")
            self.run(["busybox", "httpd", "-p", str(srv["port"]), "-h", str(www)], "outside")
        for net in world.get("networks", []):
            say(f"network {net['name']}")
            self.run(network_argv(net, self.expand))
        for c in world.get("containers", []):
            say(f"container {c['name']}")
            self.run(container_argv(c))
            for net in c.get("connect", []):
                self.run(["netdiag", "network", "connect", net, c["name"]])
        pods.build(self, say)  # a Kubernetes node's pods, made by its kubelet's runtime
        if world.get("registry"):
            image_registry.start(self, world["registry"], say)
        stack = world.get("compose")
        if stack:
            say(f"compose stack {stack['project']}")
            self.run(["netdiag", "compose", "-f", str(self.file(stack["file"])), "-p", stack["project"], "up", "-d"])
        if world.get("docker"):
            say("Docker installed and started on the host (a real engine, Docker's default networking)")
            self.start_docker()
        if world.get("podman"):
            say("Podman on the host (rootful, netavark and aardvark-dns)")
            self.start_podman()
            for argv in world["podman"]:
                self.run(argv)

    def docker_engine(self):
        """The scenario host's Docker engine (netdiag/worlds/dockerd.py), the same one in every process:
        its work directory is in the scenario's record (else where start puts it), its containers'
        cgroup is the lab's name + '-docker'."""
        from ..worlds import dockerd

        if getattr(self, "_docker", None) is None:  # this process did not start it
            work = (registry.get(self.scenario.name) or {}).get("docker") or \
                dockerd.work_dir(self.lab.state_dir.parent / "docker", self.lab.name)
            self._docker = dockerd.Dockerd.installed(self.lab.name, Path(work), f"{self.lab.name}-docker")
        return self._docker

    def start_docker(self) -> None:
        try:
            engine = self.docker_engine()
        except RuntimeError as e:
            raise StepFailed(f"Scenario {self.scenario.name} needs Docker", str(e), "run scripts/setup") from None
        rec = registry.get(self.scenario.name) or {"name": self.scenario.name}
        registry.save({**rec, "docker": str(engine.work)})  # before it starts: a stop from any process finds it
        # It starts as on a host that booted without forwarding (the kernel's default; the lab
        # starts so, but netdiag's networks built before it turned forwarding on): Docker turns
        # forwarding on itself and therefore sets ip filter FORWARD's policy to DROP, as on nearly
        # every Docker host (where forwarding was already on, Docker leaves the policy alone).
        from runtime.kernel import ns, sysctl

        with ns.netns(f"/run/netns/{self.lab.name}"):
            sysctl.write("net/ipv4/ip_forward", "0")
        try:
            engine.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            raise StepFailed(f"The Docker engine of scenario {self.scenario.name} did not start", str(e),
                             f"its log: {engine.logfile}") from None

    def docker_env(self) -> dict:
        """DOCKER_HOST of the world's engine, for everything run in the world (netdiag finds Docker's
        networks and containers through it, `docker` works in the scenario's shell)."""
        from ..worlds.dockerd import client_env

        work = (registry.get(self.scenario.name) or {}).get("docker")
        return client_env(Path(work)) if work else {}

    def stop_docker(self) -> list[str]:
        """Stop the world's Docker engine and remove everything it made (from any process); what is left."""
        if not ((registry.get(self.scenario.name) or {}).get("docker") or self.scenario.spec["world"].get("docker")):
            return []
        try:
            return self.docker_engine().remove()
        except RuntimeError:  # Docker not installed: no engine ever started
            return []

    def podman_host(self):
        """The scenario host's Podman (netdiag/worlds/podman.py), the same in every process: its
        work directory is in the scenario's record. None when the world has no Podman."""
        from ..worlds.podman import PodmanHost

        work = (registry.get(self.scenario.name) or {}).get("podman")
        if getattr(self, "_podman", None) is None and work:
            self._podman = PodmanHost(self.lab.name, Path(work), tuple(self.namespaces()[1:]))
        return getattr(self, "_podman", None)

    def start_podman(self) -> None:
        rec = registry.get(self.scenario.name) or {"name": self.scenario.name}
        registry.save({**rec, "podman": str(self.root / "podman")})  # before it starts: a stop from any process finds it
        try:
            self.podman_host().start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            raise StepFailed(f"Podman of scenario {self.scenario.name} did not start", str(e), "run scripts/setup") from None

    def stop_podman(self) -> list[str]:
        host = self.podman_host()
        return [f"podman: {x}" for x in host.remove()] if host is not None else []

    def enter(self, where: str | None = None):
        """On a Podman host the lab host is also Podman's mount namespace: steps, netdiag and the
        scenario's shell run there, where Podman's state is."""
        host = self.podman_host() if where in (None, "lab") else None
        if host is not None and host.keeper_pid() is not None:
            return host.enter()
        return super().enter(where)

    def start_haproxy(self, lb: dict) -> None:
        """A real HAProxy (master-worker: SIGUSR2 to ${haproxy_pid:NAME} reloads
        ${haproxy_cfg:NAME}) in the network namespace of a netdiag container made for it (the
        container cannot run the host's dynamically linked haproxy; its namespace can). Returns
        when every server's first checks have settled, so the world is as broken as it will be."""
        from ..observe import haproxy

        from runtime.kernel import tools

        if tools.find("haproxy") is None:
            raise StepFailed(f"{self.scenario.name} needs HAProxy", "haproxy is not installed", "run scripts/setup")
        publish = [x for p in lb.get("publish", []) for x in ("-p", p)]
        self.run(["netdiag", "run", "-d", "--name", lb["name"], "--network", lb["network"], *publish, "busybox", "sleep", "2147483647"])
        sock, cfg, pid = (self.haproxy_path(lb["name"], ext) for ext in ("sock", "cfg", "pid"))
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(self.expand(lb["config"], stats=str(sock)))
        self.run(["haproxy", "-W", "-D", "-f", str(cfg), "-p", str(pid)], lb["name"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if all(s["status"] in ("UP", "DOWN", "MAINT", "no check") and s["check_status"] not in ("", "INI")
                       for s in haproxy.servers(str(sock))):
                    return
            except (OSError, NetdiagError):
                pass  # not answering yet
            time.sleep(0.1)
        if not sock.exists():
            raise StepFailed(f"HAProxy {lb['name']} did not start", f"no stats socket {sock}", "check its config")

    def haproxy_path(self, name: str, ext: str) -> Path:
        """Beside the lab's network namespace in /run: short, as a unix socket path must be (108 bytes)."""
        return haproxy_dir(self.lab) / f"{name}.{ext}"

    # -- running things in the world -----------------------------------------------------------------
    def run(self, argv: list[str], where: str | None = "lab", check: bool = True, timeout: float = STEP_TIMEOUT,
            on: str | None = None) -> subprocess.CompletedProcess:
        """argv (`netdiag` first: this netdiag) in `where` (the lab host, "outside", a container);
        `on` names a host, and a one-host world has only the lab's."""
        where = where or "lab"
        argv = [self.expand(a) for a in argv]
        if argv[0] == "netdiag":
            argv = [sys.executable, "-m", "netdiag", *argv[1:]]
        p = self.run_in(where, argv, timeout=timeout, env=self.env())
        if check and p.returncode != 0:
            shown = " ".join(argv[2:] if argv[0] == sys.executable else argv)
            raise StepFailed(f"Step '{shown}' ({where}) of scenario {self.scenario.name} failed with exit {p.returncode}",
                             (p.stderr or p.stdout).strip()[-600:], "the scenario file is wrong, or the host lacks something")
        return p

    def env(self) -> dict:
        path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        reg = image_registry.env(self.root) if world_has_registry(self.scenario) else {}
        return {**self.lab.env, "PATH": path, **reg, **self.docker_env(), **pods.env(self.root, self.scenario.spec)}

    def env_of(self, where: str | None = None) -> dict:
        return self.env()

    def namespace(self, where: str | None = None) -> str:
        """The lab host (None or "lab"), its outside ("outside"), or a container's namespace."""
        if where in (None, "lab", "outside"):
            return self.lab.namespace(where if where == "outside" else None)
        if pods.has(self.root, where):
            return pods.namespace(self.root, where)
        return f"/proc/{self.pid_of(where)}/ns/net"

    def inspect(self, name: str) -> dict:
        p = self.run(["netdiag", "inspect", name], check=False)
        if p.returncode != 0:
            raise NotFound(f"No container {name} in scenario {self.scenario.name}", p.stderr.strip(), "")
        return json.loads(p.stdout)[0]

    def pid_of(self, name: str) -> int:
        pid = self.inspect(name)["State"]["Pid"]
        if not pid:
            raise StepFailed(f"Container {name} of scenario {self.scenario.name} is not running", "", "")
        return pid

    def registry_vars(self) -> dict:
        """${registry} (HOST:PORT, what image names say), ${registry_ip}, ${certs_d} (the host's)."""
        spec = image_registry.spec_of(self.scenario.spec)
        if not spec:
            return {}
        return {"registry": image_registry.domain(spec), "registry_ip": image_registry.address(spec),
                "certs_d": str(image_registry.certs_d(self.root))}

    def expand(self, text: str, **extra) -> str:
        """${lab} ${outside} ${outside_ns} ${host_ip} ${outside_ip} ${ip:CTR} ${ip:CTR:NET} ${pid:CTR}, a pod's
        ${pod:POD} ${pod_id:POD} ${pod_ns:POD} ${ip:POD} (scenario/pods.py), and `extra`."""
        fixed = {"lab": self.lab.name, "outside": f"ns:{self.lab.outside}", "outside_ns": self.lab.outside,
                 "host_ip": HOST_IP, "outside_ip": OUTSIDE_IP, **self.registry_vars(), **extra}

        def one(m: re.Match) -> str:
            key, arg, net = m.group(1), m.group(2), m.group(3)
            if key == "file" and arg:
                return str(self.file(arg))
            if key == "haproxy_cfg" and arg:
                return str(self.haproxy_path(arg, "cfg"))
            if key == "haproxy_pid" and arg:  # the master's pid, read now (a reload keeps it)
                try:
                    return self.haproxy_path(arg, "pid").read_text().split()[0]
                except (OSError, IndexError):
                    raise StepFailed(f"${{haproxy_pid:{arg}}}: HAProxy {arg} is not running", "", "") from None
            if (key in pods.VARIABLES or key == "ip" and net is None) and arg and pods.has(self.root, arg):
                return pods.var(self.root, key, arg)
            if key == "pid" and arg and net is None:  # a container's init: `nsenter -t PID -n` enters it
                return str(self.pid_of(arg))
            if key == "ip" and arg:
                nets = self.inspect(arg)["NetworkSettings"]["Networks"]
                chosen = nets.get(net) if net else next(iter(nets.values()), None)
                if not chosen or not chosen.get("IPAddress"):
                    raise StepFailed(f"${{ip:{arg}{':' + net if net else ''}}}: no such address", f"networks: {list(nets)}", "")
                return chosen["IPAddress"]
            if key in fixed and arg is None:
                return fixed[key]
            raise InvalidArgument(f"Unknown variable ${{{m.group(0)[2:-1]}}} in scenario {self.scenario.name}",
                                  "known: lab, outside, outside_ns, host_ip, outside_ip, registry, registry_ip, certs_d, ip:CONTAINER[:NETWORK], pid:CONTAINER, file:NAME, haproxy_cfg:NAME, haproxy_pid:NAME, pod:POD, pod_id:POD, pod_ns:POD", "")

        return _VAR.sub(one, text)


def world_has_registry(scenario: Scenario) -> bool:
    return bool(image_registry.spec_of(scenario.spec))


def haproxy_dir(lab: Lab) -> Path:
    return Path("/run/netdiag-scenarios") / lab.name


def kill_world(lab: Lab) -> None:
    """SIGKILL every process whose network namespace is the lab's, its outside's, or a container's
    of the lab: what netdiag's records do not know (HAProxy, servers started by a step)."""
    from runtime.records import recorded_pids

    from .image_registry import namespace

    kill_in(netns_inodes((lab.name, lab.outside, namespace(lab)), recorded_pids(lab.state_dir)))
