"""The start-up import budget (issue 24): the top-level modules a cold `netdiag version`, `ps`,
`run --rm --network none busybox true` and `--help` import. Not a timed test: a heavy module on a
path that does not use it (scapy ~1 s, pyroute2 ~0.2 s with asyncio, typer and click ~45 ms,
dataclasses with inspect ~7 ms...) fails here whatever the machine's speed. `--help` imports every
command module, so an `import scapy` added at the top of any CLI module fails too.

Each command runs in a fresh interpreter with an empty NETDIAG_ROOT and reads nothing outside it.
The run is stopped where the container would be made (no root, nothing made): RUN_PATH (BRIDGE_PATH),
the runtime modules a real `run --rm --network none` (on the default bridge) imports on its way
(measured in a lab with `python -X importtime`), are imported there instead, so their own
top-level imports are held to the same budget."""
import json
import os
import subprocess
import sys

import pytest

from netdiag.cli.run_cmd import fast_parse, parser

# third-party modules no start-up path needs, and the stdlib ones whose import was cut from them
HEAVY = {"scapy", "pyroute2", "rich", "httpx", "httpcore", "anyio", "fastjsonschema", "jsonschema", "typer", "click",
         "prometheus_client", "yaml", "junitparser", "etcd3gw", "pydantic", "asyncio", "ssl", "http", "email", "xml"}
STDLIB_CUT = {"dataclasses", "inspect", "secrets", "tarfile", "argparse", "subprocess", "traceback", "datetime", "threading",
              "typing"}
CLI_ONLY = {"typer", "click", "rich"}  # what `--help` needs (typer's help is drawn with rich), no other command

RUN_PATH = [
    "runtime.bounded", "runtime.containers.cgroups", "runtime.containers.cleanup", "runtime.containers.devices_bpf",
    "runtime.containers.endpoints", "runtime.containers.lifecycle", "runtime.containers.monitor",
    "runtime.containers.pid1", "runtime.containers.procenv", "runtime.containers.rootfs", "runtime.containers.seccomp",
    "runtime.containers.security", "runtime.containers.stdio", "runtime.containers.volumes", "runtime.fsroot",
    "runtime.images", "runtime.images.builtin", "runtime.images.oci", "runtime.images.refs", "runtime.images.store",
    "runtime.ipam", "runtime.kernel.bpf", "runtime.kernel.link", "runtime.kernel.ns", "runtime.kernel.procs", "runtime.kernel.syscalls",
    "runtime.kernel.sysctl", "runtime.kernel.wire", "runtime.networks.network_records", "runtime.networks.ports",
    "runtime.state", "runtime.validate",
]
# and what the default bridge adds (`run --rm busybox true`)
BRIDGE_PATH = RUN_PATH + [
    "runtime.cluster.local", "runtime.kernel.addr", "runtime.kernel.bridge", "runtime.kernel.nft", "runtime.kernel.route",
    "runtime.kernel.tools", "runtime.networks.bridge", "runtime.networks.dns", "runtime.networks.dns.control",
    "runtime.networks.dns.records", "runtime.networks.enforce", "runtime.networks.firewall", "runtime.networks.foreign",
]

# a fresh interpreter runs the CLI's main() as `netdiag` would and prints the top-level modules
# imported by then; for `run`, the runtime's run is replaced by the imports it would make
_HARNESS = """
import importlib, json, sys
argv, stop_run = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["netdiag", *argv]
if stop_run is not None:
    from runtime.api import containers

    def run(*args, **kw):
        for name in stop_run:
            importlib.import_module(name)
        raise SystemExit(0)

    containers.run = run
from netdiag.cli.main import main
try:
    main()
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "top": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _top_level_imports(tmp_path, argv: list[str], stop_run: list[str] | None = None) -> set[str]:
    env = {**os.environ, "NETDIAG_ROOT": str(tmp_path / "root")}
    p = subprocess.run([sys.executable, "-c", _HARNESS, json.dumps(argv), json.dumps(stop_run)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["code"] in (0, None), p.stdout[-1500:] + p.stderr[-1500:]
    return set(out["top"])


@pytest.mark.parametrize("argv", [["version"], ["--version"], ["ps"], ["ps", "-aq"], ["ps", "-a", "--format", "json"]],
                         ids=" ".join)
def test_version_and_ps_import_nothing_heavy(tmp_path, argv):
    loaded = _top_level_imports(tmp_path, argv)
    assert not loaded & (HEAVY | STDLIB_CUT), f"netdiag {' '.join(argv)} imports {sorted(loaded & (HEAVY | STDLIB_CUT))}"


# libnftables is called under a lock (runtime.kernel.nft): the bridge needs threading
@pytest.mark.parametrize("network, path, needed", [("none", RUN_PATH, set()), ("bridge", BRIDGE_PATH, {"threading"})],
                         ids=["none", "bridge"])
def test_run_imports_nothing_heavy_up_to_the_container(tmp_path, network, path, needed):
    loaded = _top_level_imports(tmp_path, ["run", "--rm", "--network", network, "busybox", "true"], path)
    assert "runtime" in loaded  # the stand-in ran: the path's modules were imported
    heavy = loaded & (HEAVY | STDLIB_CUT) - needed
    assert not heavy, f"netdiag run --network {network} imports {sorted(heavy)}"


def test_help_loads_every_command_module_and_nothing_heavy_beyond_typer(tmp_path):
    loaded = _top_level_imports(tmp_path, ["--help"])
    assert "typer" in loaded  # the command modules were all registered
    heavy = loaded & HEAVY - CLI_ONLY
    assert not heavy, f"netdiag --help (every command module's top level) imports {sorted(heavy)}"


@pytest.mark.parametrize("argv", [
    ["--rm", "--network", "none", "busybox", "true"],
    ["-dit", "--name=web", "-e", "A=1", "-eB=2", "-p", "8080:80", "-p8443:443", "busybox", "sh", "-c", "sleep 1 -d"],
    ["-m", "64m", "--cpus", "0.5", "--pids-limit", "5", "--health-retries", "2", "-h", "box", "busybox"],
    ["-dP", "--label", "k=v", "--ulimit", "nofile=1:2", "--stop-timeout", "3", "busybox", "echo", "--rm"],
    ["busybox"], ["-", "x"],
])
def test_the_fast_run_parser_reads_what_argparse_reads(argv):
    fast = fast_parse(argv)
    assert fast is not None, "a usual command line takes the fast path"
    assert vars(fast) == vars(parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["--help"], [], ["--netw", "none", "busybox"], ["-e", "-x", "busybox"], ["--rm=1", "busybox"],
    ["--pids-limit", "many", "busybox"], ["-de", "A=1", "busybox"], ["busybox", "--", "x"], ["--", "busybox"],
    ["--name"], ["-x", "busybox"],
])
def test_the_fast_run_parser_leaves_the_rest_to_argparse(argv):
    assert fast_parse(argv) is None
