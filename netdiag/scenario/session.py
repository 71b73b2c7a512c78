"""One running scenario: its world built with netdiag's own runtime in a lab namespace (a host of its
own: eth0, nftables, netdiag state), the faults planted, the learner's diagnosis and the grader
run there, and everything removed at the end — also processes started in the world's namespaces
(HAProxy, servers in the outside namespace), found by the namespace they run in.

Steps (faults, solutions) are argument lists, never shell strings; `netdiag` as the first word is
this netdiag, acting on the scenario's state. A world of several hosts (`world.cluster`) is
cluster.py's ClusterSession, which `Session.start` and `Session.attach` pick by the scenario.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.errors import InvalidArgument, NetdiagError, NotFound

from ..worlds import HOST_IP, OUTSIDE_IP, Lab
from . import registry, verdict
from .common import STEP_TIMEOUT, _VAR, StepFailed, checks_of, container_argv, kill_in, netns_inodes, network_argv
from .library import Scenario


class Session:
    multi_host = False  # a world of several hosts is a cluster.ClusterSession

    def __init__(self, scenario: Scenario, lab: Lab):
        self.scenario, self.lab = scenario, lab

    # -- life ----------------------------------------------------------------------------------------
    @classmethod
    def start(cls, scenario: Scenario, progress=None) -> "Session":
        """Build the world, plant the faults; refused when that scenario already runs."""
        from .cluster import ClusterSession, is_cluster

        if is_cluster(scenario):
            return ClusterSession.start(scenario, progress)
        say = progress or (lambda text: None)
        lab = registry.claim(scenario.name, scenario.slug, lambda root: Lab(state_dir=root))
        s = cls(scenario, lab)
        try:
            say(f"lab {lab.name}: a host of its own (eth0 {HOST_IP}) behind an outside namespace ({OUTSIDE_IP})")
            lab.create()
            s.build(say)
            for step in scenario.spec.get("faults", []):
                say(step.get("say") or "planting a fault")
                s.step(step)
            for lb in scenario.spec["world"].get("haproxy", []):  # last: its first checks see the faults
                say(f"HAProxy {lb['name']} on {lb['network']}")
                s.start_haproxy(lb)
        except BaseException:
            s.destroy()
            raise
        registry.built(scenario.name)
        return s

    @classmethod
    def attach(cls, scenario: Scenario) -> "Session":
        from .cluster import ClusterSession, is_cluster

        if is_cluster(scenario):
            return ClusterSession.attach(scenario)
        rec = registry.of_running(scenario.name, scenario.slug)
        return cls(scenario, Lab(name=rec["lab"], state_dir=Path(rec["state_dir"])))

    def destroy(self) -> list[str]:
        """Remove the world: its Docker engine, every process in its namespaces, the containers, the
        lab. What was left behind (should be nothing)."""
        left = self.stop_docker()
        kill_world(self.lab)
        shutil.rmtree(haproxy_dir(self.lab), ignore_errors=True)
        with contextlib.suppress(OSError):  # the parent, once no scenario uses it
            haproxy_dir(self.lab).parent.rmdir()
        self.lab.destroy()
        shutil.rmtree(self.lab.state_dir.parent, ignore_errors=True)
        registry.forget(self.scenario.name)
        return left + self.lab.leaks() + [str(p) for p in [haproxy_dir(self.lab)] if p.exists()]

    def namespaces(self) -> list[str]:
        """Every named network namespace of the world: the lab host and its outside."""
        return [self.lab.name, self.lab.outside]

    def containers(self) -> list[str]:
        """The world's containers, as its own `netdiag ps -a` sees them."""
        p = self.run(["netdiag", "ps", "-a", "--json"], check=False, timeout=20)
        return sorted(json.loads(line)["Names"] for line in p.stdout.splitlines() if line.strip())

    def shell_target(self, name: str | None) -> tuple[dict, object, str | None, str | None]:
        """Where `netdiag scenario shell SCENARIO [NAME]` goes: (env, preexec_fn, the container to
        exec into or None, the host or None for the lab host). Always the lab host; NAME is a container."""
        return self.env(), self.lab.enter(), name, None

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
        if world.get("docker"):
            say("Docker installed and started on the host (a real engine, Docker's default networking)")
            self.start_docker()

    def docker_engine(self):
        """The scenario host's Docker engine (netdiag/worlds/dockerd.py), the same one in every process:
        its work directory is in the scenario's record (else where start puts it), its containers'
        cgroup is the lab's name + '-docker'."""
        from ..worlds import dockerd as labdocker

        if getattr(self, "_docker", None) is None:  # this process did not start it
            work = (registry.get(self.scenario.name) or {}).get("docker") or \
                labdocker.work_dir(self.lab.state_dir.parent / "docker", self.lab.name)
            self._docker = labdocker.Dockerd.installed(self.lab.name, Path(work), f"{self.lab.name}-docker")
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

    def start_haproxy(self, lb: dict) -> None:
        """A real HAProxy (master-worker: SIGUSR2 to ${haproxy_pid:NAME} reloads
        ${haproxy_cfg:NAME}) in the network namespace of a netdiag container made for it (the
        container cannot run the host's dynamically linked haproxy; its namespace can). Returns
        when every server's first checks have settled, so the world is as broken as it will be."""
        from ..health import haproxy

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
    def run(self, argv: list[str], where: str = "lab", check: bool = True, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
        argv = [self.expand(a) for a in argv]
        if argv[0] == "netdiag":
            argv = [sys.executable, "-m", "netdiag", *argv[1:]]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env(),
                           preexec_fn=self.enter(where))
        if check and p.returncode != 0:
            shown = " ".join(argv[2:] if argv[0] == sys.executable else argv)
            raise StepFailed(f"Step '{shown}' ({where}) of scenario {self.scenario.name} failed with exit {p.returncode}",
                             (p.stderr or p.stdout).strip()[-600:], "the scenario file is wrong, or the host lacks something")
        return p

    def step(self, step: dict, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(step["run"], step.get("in", "lab"), check=check)

    def env(self) -> dict:
        path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        return {**self.lab.env, "PATH": path, **self.docker_env()}

    def enter(self, where: str):
        from runtime.kernel.ns import enter

        if where == "lab":
            return self.lab.enter()
        if where == "outside":
            return self.lab.enter(self.lab.outside)
        return enter(f"/proc/{self.pid_of(where)}/ns/net")

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

    def expand(self, text: str, **extra) -> str:
        """${lab} ${outside} ${host_ip} ${outside_ip} ${ip:CTR} ${ip:CTR:NET}, and `extra`."""
        fixed = {"lab": self.lab.name, "outside": f"ns:{self.lab.outside}", "outside_ns": self.lab.outside,
                 "host_ip": HOST_IP, "outside_ip": OUTSIDE_IP, **extra}

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
            if key == "ip" and arg:
                nets = self.inspect(arg)["NetworkSettings"]["Networks"]
                chosen = nets.get(net) if net else next(iter(nets.values()), None)
                if not chosen or not chosen.get("IPAddress"):
                    raise StepFailed(f"${{ip:{arg}{':' + net if net else ''}}}: no such address", f"networks: {list(nets)}", "")
                return chosen["IPAddress"]
            if key in fixed and arg is None:
                return fixed[key]
            raise InvalidArgument(f"Unknown variable ${{{m.group(0)[2:-1]}}} in scenario {self.scenario.name}",
                                  "known: lab, outside, host_ip, outside_ip, ip:CONTAINER[:NETWORK], file:NAME, haproxy_cfg:NAME, haproxy_pid:NAME", "")

        return _VAR.sub(one, text)

    def file(self, name: str) -> Path:
        """A file of the scenario's `files`, written (variables expanded) on first use."""
        files = self.scenario.spec.get("files") or {}
        if name not in files:
            raise InvalidArgument(f"${{file:{name}}}: scenario {self.scenario.name} has no such file", f"files: {sorted(files)}", "")
        path = self.lab.state_dir.parent / "files" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.expand(files[name]))
        return path

    # -- diagnosis and grading -----------------------------------------------------------------------------
    def diagnose(self) -> dict:
        """What netdiag says, run the way a learner would (the scenario's diagnosis command, --json),
        and whether it names the planted cause at the right hop."""
        d = self.scenario.spec["diagnosis"]
        p = self.run(list(d["run"]) + ["--json"], check=False)
        if p.returncode not in (0, 1, 3):
            raise StepFailed(f"The diagnosis of {self.scenario.name} did not run (exit {p.returncode})", p.stderr.strip()[-600:], "")
        result = json.loads(p.stdout)
        ok, named = verdict.matches(result, d)
        return {"ok": ok, "expected": {"cause": d["cause"], "at": d.get("at") or {}}, "named": named, "result": result}

    def record(self) -> dict:
        """The broken world's snapshot with the live probe of the scenario's trace (`trace
        --record`), so `trace --snapshot FILE ARGS...` replays the diagnosis offline."""
        d = self.scenario.spec["diagnosis"]
        argv = list(d.get("replay") or d["run"])
        if argv[:2] != ["netdiag", "trace"]:
            raise InvalidArgument(f"{self.scenario.name} has no trace to record", "its diagnosis is not a `netdiag trace`",
                                  "give the scenario a diagnosis.replay trace")
        out = self.lab.state_dir / "recording.json"
        try:
            p = self.run(argv + ["--json", "--record", str(out)], check=False)
            if p.returncode not in (0, 1, 3) or not out.exists():
                raise StepFailed(f"Recording {self.scenario.name} failed (exit {p.returncode})", p.stderr.strip()[-600:], "")
            snap = json.loads(out.read_text())
        finally:
            out.unlink(missing_ok=True)
        result = json.loads(p.stdout)
        snap["recorded"] = {"scenario": self.scenario.name, "argv": [self.expand(a) for a in argv[2:]],
                            "live": {"verdict": result["verdict"], "cause": result["cause"]}}
        return snap

    def grade(self) -> list[dict]:
        """The grader: the scenario's checks run by `netdiag check` in the world. One entry per
        check: name, passed (True/False/None for skipped), and the diagnosis of a failure."""
        import yaml

        checks = self.scenario.spec["checks"]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.lab.state_dir, delete=False) as f:
            yaml.safe_dump({"checks": json.loads(self.expand(json.dumps(checks)))}, f, sort_keys=False)
        try:
            p = self.run(["netdiag", "check", f.name, "--format", "json", "--parallel", "4"], check=False)
        finally:
            os.unlink(f.name)
        if p.returncode not in (0, 1):
            raise StepFailed(f"The grader of {self.scenario.name} could not run (exit {p.returncode})", p.stderr.strip()[-600:], "")
        return checks_of(json.loads(p.stdout))


def haproxy_dir(lab: Lab) -> Path:
    return Path("/run/netdiag-scenarios") / lab.name


def kill_world(lab: Lab) -> None:
    """SIGKILL every process whose network namespace is the lab's, its outside's, or a container's
    of the lab: what netdiag's records do not know (HAProxy, servers started by a step)."""
    from runtime.records import recorded_pids

    kill_in(netns_inodes((lab.name, lab.outside), recorded_pids(lab.state_dir)))
