"""Docker's seccomp profiles: interpreted here, compiled by libseccomp, loaded before exec.

`resolve` turns a profile in Docker's JSON format (the built-in one is moby's default.json, shipped
beside this module) into the rules that apply to one container, exactly as moby's
profiles/seccomp does: archMap for the native architecture, includes/excludes by arch, by the
container's bounding capabilities and by kernel version. `compile_bpf` hands those rules to
libseccomp (pyseccomp's ctypes binding) the way runc does; its exported BPF program is cached
under NETDIAG_ROOT keyed by the rules and the libseccomp version, because importing pyseccomp and
adding ~400 rules costs tens of milliseconds on every start. `load` installs a program with
prctl(PR_SET_SECCOMP): what libseccomp's seccomp_load does with NNP off and no extra flags.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
from pathlib import Path
from collections import namedtuple  # not typing.NamedTuple: typing costs every `run` ~3 ms of imports

from .. import state

DEFAULT_PROFILE = Path(__file__).with_name("seccomp_default.json")

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
       "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
          "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
          "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
          "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
          "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64")
EPERM = 1

# uname machine -> (Docker's name for it in includes/excludes "arches", its libseccomp arch)
_NATIVE = {"x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
           "i686": ("x86", "SCMP_ARCH_X86"), "i386": ("x86", "SCMP_ARCH_X86"), "armv7l": ("arm", "SCMP_ARCH_ARM"),
           "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "s390x": ("s390x", "SCMP_ARCH_S390X"),
           "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"), "loongarch64": ("loong64", "SCMP_ARCH_LOONGARCH64")}


class ProfileError(ValueError):
    """The profile is not a valid Docker seccomp profile; the message says where."""


class Rule(namedtuple("Rule", "names action errno args", defaults=((),))):
    """names: tuple of syscall names; action: SCMP_ACT_*; errno: int or None; args: tuple of
    (index, value, valueTwo, op)."""

    __slots__ = ()


class Filter(namedtuple("Filter", "default_action default_errno arches rules")):
    """default_action: SCMP_ACT_*; default_errno: int or None; arches: tuple of SCMP_ARCH_*;
    rules: tuple of Rule."""

    __slots__ = ()

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self).encode()).hexdigest()


def native() -> tuple[str, str]:
    machine = os.uname().machine
    return _NATIVE.get(machine, (machine, ""))


def kernel_version(release: str | None = None) -> tuple[int, int]:
    parts = (release or os.uname().release).split(".")
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def default_profile() -> dict:
    with open(DEFAULT_PROFILE) as f:
        return json.load(f)


def validate(profile) -> None:
    """Raise ProfileError unless `profile` is a profile Docker would accept (and netdiag can run)."""
    if not isinstance(profile, dict):
        raise ProfileError("a profile is a JSON object")
    if profile.get("architectures") and profile.get("archMap"):
        raise ProfileError("both 'architectures' and 'archMap' are given; use one of them")
    if profile.get("defaultAction", "") and profile["defaultAction"] not in ACTIONS:
        raise ProfileError(f"unknown defaultAction {profile['defaultAction']!r}" + _notify_hint(profile["defaultAction"]))
    _errno(profile.get("defaultErrnoRet"), "defaultErrnoRet")
    for arch in profile.get("architectures") or []:
        _arch(arch)
    for entry in profile.get("archMap") or []:
        if not isinstance(entry, dict):
            raise ProfileError("each archMap entry is an object")
        for arch in [entry.get("architecture")] + list(entry.get("subArchitectures") or []):
            _arch(arch)
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise ProfileError("'syscalls' is a list")
    for n, call in enumerate(syscalls):
        where = f"syscalls[{n}]"
        if not isinstance(call, dict):
            raise ProfileError(f"{where} is not an object")
        if call.get("name") and call.get("names"):
            raise ProfileError(f"{where} has both 'name' and 'names'; use 'names'")
        names = [call["name"]] if call.get("name") else call.get("names") or []
        if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
            raise ProfileError(f"{where}: 'names' is a list of syscall names")
        if call.get("action") not in ACTIONS:
            raise ProfileError(f"{where}: unknown action {call.get('action')!r}" + _notify_hint(call.get("action")))
        _errno(call.get("errnoRet"), f"{where}.errnoRet")
        for arg in call.get("args") or []:
            if not isinstance(arg, dict) or arg.get("op") not in OPS:
                raise ProfileError(f"{where}: each arg needs an op among {', '.join(OPS)}")
            if not isinstance(arg.get("index"), int) or not 0 <= arg["index"] < 6:
                raise ProfileError(f"{where}: an arg index is 0 to 5")
            for k in ("value", "valueTwo"):
                if not isinstance(arg.get(k, 0), int) or not 0 <= arg.get(k, 0) < 2**64:
                    raise ProfileError(f"{where}: arg {k} is an unsigned 64-bit number")
        for part in ("includes", "excludes"):
            cond = call.get(part) or {}
            if not isinstance(cond, dict):
                raise ProfileError(f"{where}.{part} is an object")
            if cond.get("minKernel"):
                try:
                    if kernel_version(str(cond["minKernel"])) == (0, 0):
                        raise ValueError
                except (ValueError, IndexError):
                    raise ProfileError(f"{where}.{part}: minKernel is \"<kernel>.<major>\", e.g. \"4.8\"") from None


def _notify_hint(action) -> str:
    return " (SCMP_ACT_NOTIFY needs a seccomp agent, which netdiag does not run)" if action == "SCMP_ACT_NOTIFY" else ""


def _errno(value, where: str) -> None:
    if value is not None and (not isinstance(value, int) or not 0 <= value < 4096):
        raise ProfileError(f"{where} is an errno number (0-4095)")


def _arch(name) -> None:
    if name not in ARCHES:
        raise ProfileError(f"unknown architecture {name!r}")


def resolve(profile: dict, caps: set[str], arch: str | None = None, scmp_arch: str | None = None,
            kernel: tuple[int, int] | None = None) -> Filter | None:
    """The rules of `profile` that apply to a container with bounding set `caps` (CAP_* names) on
    this machine (or the given Docker arch name / libseccomp arch / kernel). None: no seccomp."""
    if arch is None:
        arch, scmp_arch = native()
    kernel = kernel or kernel_version()
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return None  # moby: no default action and no syscalls means seccomp disabled
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == scmp_arch:
            arches = [scmp_arch] + list(entry.get("subArchitectures") or [])
            break
    rules = []
    for call in profile.get("syscalls") or []:
        if not _applies(call, caps, arch, kernel):
            continue
        names = [call["name"]] if call.get("name") else list(call.get("names") or [])
        args = tuple((a["index"], a.get("value", 0), a.get("valueTwo", 0), a["op"]) for a in call.get("args") or [])
        rules.append(Rule(tuple(names), call["action"], _errno_of(call["action"], call.get("errnoRet")), args))
    default = profile.get("defaultAction") or "SCMP_ACT_ALLOW"
    return Filter(default, _errno_of(default, profile.get("defaultErrnoRet")), tuple(arches), tuple(rules))


def _errno_of(action: str, errno_ret: int | None) -> int | None:
    if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        return EPERM if errno_ret is None else errno_ret
    return None


def _applies(call: dict, caps: set[str], arch: str, kernel: tuple[int, int]) -> bool:
    exc, inc = call.get("excludes") or {}, call.get("includes") or {}
    if arch in (exc.get("arches") or []):
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    if exc.get("minKernel") and kernel >= kernel_version(str(exc["minKernel"])):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if not all(c in caps for c in inc.get("caps") or []):
        return False
    if inc.get("minKernel") and kernel < kernel_version(str(inc["minKernel"])):
        return False
    return True


# -- libseccomp ---------------------------------------------------------------------------------

def _libseccomp_version() -> str:
    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def compile_bpf(flt: Filter) -> bytes:
    """libseccomp's BPF program for `flt`, built as runc builds it (NNP off, rules whose action is the
    default skipped, syscalls libseccomp does not know skipped, same-index conditions OR-ed)."""
    import tempfile

    import pyseccomp as sc

    def action(name: str, errno: int | None) -> int:
        return {"SCMP_ACT_KILL": sc.KILL_THREAD, "SCMP_ACT_KILL_THREAD": sc.KILL_THREAD,
                "SCMP_ACT_KILL_PROCESS": sc.KILL_PROCESS, "SCMP_ACT_TRAP": sc.TRAP, "SCMP_ACT_ALLOW": sc.ALLOW,
                "SCMP_ACT_LOG": sc.LOG}.get(name) if errno is None else (sc.ERRNO if name == "SCMP_ACT_ERRNO" else sc.TRACE)(errno)

    default = action(flt.default_action, flt.default_errno)
    f = sc.SyscallFilter(default)
    f.set_attr(sc.Attr.CTL_NNP, 0)  # no_new_privs is the container's own option, not a side effect
    for arch in flt.arches:
        value = getattr(sc.Arch, arch.removeprefix("SCMP_ARCH_"), None)
        if value is not None and not f.exist_arch(value):
            f.add_arch(value)
    for rule in flt.rules:
        act = action(rule.action, rule.errno)
        if act == default:
            continue
        conds = [sc.Arg(i, OPS[op], value, value2) for i, value, value2, op in rule.args]
        indexes = [a[0] for a in rule.args]
        groups = [[c] for c in conds] if len(set(indexes)) < len(indexes) else [conds]
        for name in rule.names:
            nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if nr == -1:  # __NR_SCMP_ERROR: unknown to this libseccomp (runc skips these too)
                continue
            for group in groups:
                f.add_rule(act, nr, *group)
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def bpf(flt: Filter, cache_dir: Path) -> bytes:
    """The compiled program for `flt`, from the cache when libseccomp already made it."""
    path = cache_dir / f"{hashlib.sha256((flt.key() + _libseccomp_version()).encode()).hexdigest()}.bpf"
    try:
        data = path.read_bytes()
        if data and len(data) % 8 == 0:
            return data
    except OSError:
        pass
    data = compile_bpf(flt)
    try:
        state.write_bytes(path, data)
    except state.DiskFull:
        pass  # only a cache: the program is compiled again next time
    return data


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


def load(program: bytes) -> None:
    """Install a BPF program (struct sock_filter[]) on the calling thread. Needs no_new_privs or
    CAP_SYS_ADMIN."""
    from ..kernel.syscalls import prctl

    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), what="seccomp")
