"""runtime/kernel is the one kernel boundary: nothing outside it imports pyroute2, opens a netlink
socket, calls setns, finds or runs the kernel's tools (ip, nft, iptables*, sysctl, nsenter ...) as
programs. A scan of the source (ast), so a new way around the layer fails here, not in review."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("netdiag", "runtime")
KERNEL_LAYER = "runtime/kernel/"
# Files allowed to cross, each with its reason. tests/ and bench/ are not scanned: they measure and
# check the kernel from outside on purpose (nsenter, ip, nft as an admin would run them).
EXCEPTIONS: dict[str, str] = {}
TOOL = re.compile(r"^(ip|nft|sysctl|bridge|tc|ss|conntrack|nsenter|ebtables|ip6?tables(-nft|-legacy)?(-save|-restore)?)$")
RUNNERS = {("subprocess", n) for n in ("run", "Popen", "call", "check_call", "check_output")} | \
    {("os", n) for n in ("execv", "execvp", "execvpe", "execve", "execl", "execlp", "spawnv", "spawnvp", "system", "popen")}
FINDERS = {"which", "_which", "tool", "_tool", "find"}


def _name(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _program(node, assigned: dict | None = None) -> str | None:
    """The program an argv (or a shell string) starts with, when the source says it: literally, or
    in a value assigned to the variable passed (`argv = ["nsenter", ...]; Popen(argv)`)."""
    if isinstance(node, ast.Name) and assigned:
        return next((p for value in assigned.get(node.id, []) if TOOL.match(p := _program(value) or "")), None)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # ["nsenter", ...] + more
        return _program(node.left, assigned)
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        node = node.elts[0]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value.split() or [""])[0].rsplit("/", 1)[-1]
    if isinstance(node, ast.Call) and _name(node.func) in FINDERS and node.args and isinstance(node.args[0], ast.Constant):
        return str(node.args[0].value)
    return None


def crossings(source: str) -> list[str]:
    """What in `source` belongs to the kernel layer: 'line: what'."""
    out = []
    tree = ast.parse(source)
    assigned: dict[str, list] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned.setdefault(node.targets[0].id, []).append(node.value)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "pyroute2" for a in node.names) or \
                isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pyroute2" and not node.level:
            out.append(f"{line}: imports pyroute2")
        elif _name(node) == "AF_NETLINK" and isinstance(node, (ast.Name, ast.Attribute)):
            out.append(f"{line}: opens a netlink socket")
        elif isinstance(node, ast.Call):
            func = node.func
            owner = _name(func.value) if isinstance(func, ast.Attribute) else None
            if _name(func) == "setns":
                out.append(f"{line}: calls setns")
            elif (owner, _name(func)) in RUNNERS and node.args and TOOL.match(_program(node.args[0], assigned) or ""):
                out.append(f"{line}: runs {_program(node.args[0], assigned)}")
            elif (owner, _name(func)) == ("shutil", "which") and TOOL.match(_program(node) or ""):
                out.append(f"{line}: looks for {_program(node)}")
    return sorted(out, key=lambda hit: int(hit.split(":")[0]))


def test_nothing_outside_runtime_kernel_crosses_into_the_kernel():
    found = {}
    for pkg in SCANNED:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(KERNEL_LAYER) or rel in EXCEPTIONS:
                continue
            if hits := crossings(path.read_text()):
                found[rel] = hits
    assert not found, f"use runtime.kernel (ns.Namespace, tools, traceevents, the object modules): {found}"


def test_every_exception_is_still_needed():
    for rel in EXCEPTIONS:
        assert crossings((ROOT / rel).read_text()), f"{rel} no longer crosses: drop it from EXCEPTIONS"


def test_the_scan_sees_each_way_around_the_layer():
    planted = '''
import pyroute2
from pyroute2 import IPRoute
import socket, subprocess, shutil, os
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
sc.setns(fd, 0)
subprocess.run(["ip", "link", "set", "eth0", "up"])
subprocess.Popen(["/usr/sbin/nft", "-f", f])
subprocess.run([_tool("iptables-nft-restore"), f])
subprocess.check_output("sysctl -w net.ipv4.ip_forward=1", shell=True)
os.execvp("nsenter", ["nsenter", "--net=/run/netns/x"])
shutil.which("iptables")
argv = ["nsenter", "--net=/run/netns/x", "--", dockerd] + extra
subprocess.Popen(argv, start_new_session=True)
'''
    assert [h.split(": ", 1)[1] for h in crossings(planted)] == [
        "imports pyroute2", "imports pyroute2", "opens a netlink socket", "calls setns", "runs ip", "runs nft",
        "runs iptables-nft-restore", "runs sysctl", "runs nsenter", "looks for iptables", "runs nsenter"]
    assert crossings('subprocess.run(["haproxy", "-f", cfg])\nshutil.which("etcd")\nsubprocess.run(step.argv)\n') == []
