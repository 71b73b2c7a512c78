"""The device allow-list on cgroup v2, enforced as runc and crun do it: v2 has no devices controller,
so the rules become an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's
cgroup. The kernel runs it on every open and mknod of a device node by a process of that cgroup (or
below) and refuses with EPERM when it returns 0.

Three small parts:
- the rules: netdiag's (allow, "c 1:5 rwm") list, reduced to what the v1 controller would hold
  (runc's devices emulator: an "a" rule sets the default and drops all exceptions, exceptions for
  one device merge, a rule with the default's action removes access from an exception and may not
  punch a hole in a wildcard one), in runc's order;
- the program: runc's devicefilter.go instruction for instruction (its test dumps are the reference,
  tests/unit/test_devices_bpf.py), encoded as `struct bpf_insn` by runtime.kernel.bpf's assembler;
- the kernel: BPF_PROG_LOAD (again with the verifier's log when refused), BPF_PROG_ATTACH to the
  cgroup directory with BPF_F_ALLOW_MULTI, then programs attached there before are detached.
"""
from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from collections import namedtuple  # not typing.NamedTuple: typing costs every `run` ~3 ms of imports
from collections.abc import Iterable

from ..errors import InvalidArgument, KernelError
from ..kernel import bpf
from ..kernel.bpf import (R0, R1, R2, R3, R4, R5, Insn, Label, and32_imm, assemble, exit_, jne_imm,  # noqa: F401
                          jne_reg, ldx_w, mov32_imm, mov32_reg, rsh32_imm)

# -- the rules ------------------------------------------------------------------------------------

WILDCARD = -1
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4  # BPF_DEVCG_ACC_* (uapi/linux/bpf.h): the high 16 bits
ACC_ALL = ACC_MKNOD | ACC_READ | ACC_WRITE
DEV_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, _CHAR: the low 16 bits of access_type
_ACCESS = {"r": ACC_READ, "w": ACC_WRITE, "m": ACC_MKNOD}


class Rule(namedtuple("Rule", "allow type major minor access")):
    """allow: bool; type: "a" (every device), "b" or "c"; major, minor: numbers, WILDCARD for *;
    access: ACC_* bits."""

    __slots__ = ()


def parse(allow: bool, text: str) -> Rule:
    """A devices.allow/deny line as the v1 path writes it: "c 1:5 rwm", "b *:* m", "a *:* rwm"."""
    fields = text.split()
    if fields == ["a"]:
        return Rule(allow, "a", WILDCARD, WILDCARD, ACC_ALL)
    numbers = fields[1].split(":") if len(fields) == 3 else []
    if fields[:1] not in (["a"], ["b"], ["c"]) or len(numbers) != 2:
        raise InvalidArgument(f"Bad device cgroup rule {text!r}", "the form is 'TYPE MAJOR:MINOR ACCESS', "
                              "TYPE a, b or c, MAJOR and MINOR numbers or *, ACCESS some of r, w, m",
                              "write it like 'c 1:3 rwm' or 'b 8:* r'")
    major, minor = (_number(n, text) for n in numbers)
    access = 0
    for ch in fields[2]:
        if ch not in _ACCESS or access & _ACCESS[ch]:
            raise InvalidArgument(f"Bad access {fields[2]!r} in device cgroup rule {text!r}",
                                  "access is some of r (read), w (write), m (mknod), each once", "write e.g. 'rwm'")
        access |= _ACCESS[ch]
    return Rule(allow, fields[0], major, minor, access)


def _number(n: str, text: str) -> int:
    if n == "*":
        return WILDCARD
    # the program compares with a signed 32-bit immediate; Linux majors have 12 bits, minors 20
    if not (n.isascii() and n.isdigit()) or int(n) >= 2**31:
        raise InvalidArgument(f"Bad device number {n!r} in device cgroup rule {text!r}",
                              "a major or minor is a decimal number below 2^31, or *", "fix the rule")
    return int(n)


def reduce(rules: Iterable[Rule]) -> tuple[bool, list[Rule]]:
    """(allow by default?, exceptions): the state a v1 devices cgroup reaches from deny-all through
    `rules` (runc's emulator). Exceptions carry the action opposite to the default, sorted by
    (major, minor, type) with * first, as runc sorts them."""
    default_allow, held = False, {}  # (type, major, minor) -> ACC_* bits
    for r in rules:
        key = (r.type, r.major, r.minor)
        if r.type == "a":
            default_allow, held = r.allow, {}
        elif r.allow != default_allow:
            held[key] = held.get(key, 0) | r.access
        else:
            # v1 silently ignores removing part of a wildcard exception; runc refuses, and so do we
            for wide in ((r.type, WILDCARD, r.minor), (r.type, r.major, WILDCARD), (r.type, WILDCARD, WILDCARD)):
                if wide != key and held.get(wide, 0) & r.access:
                    raise InvalidArgument(
                        f"Device cgroup rule '{'allow' if r.allow else 'deny'} {_text(r)}' cannot be applied",
                        f"it would punch a hole in the wider rule '{_text(Rule(not r.allow, *wide, held[wide]))}'",
                        "list the devices one by one instead of the wildcard")
            left = held.pop(key, 0) & ~r.access
            if left:
                held[key] = left
    order = sorted(held, key=lambda k: (k[1], k[2], k[0]))
    return default_allow, [Rule(not default_allow, t, ma, mi, held[(t, ma, mi)]) for t, ma, mi in order]


def _text(r: Rule) -> str:
    num = lambda n: "*" if n == WILDCARD else str(n)  # noqa: E731
    return f"{r.type} {num(r.major)}:{num(r.minor)} " + "".join(c for c in "rwm" if r.access & _ACCESS[c])


def allows_all(rules: Iterable[tuple[bool, str]]) -> bool:
    default_allow, exceptions = reduce(parse(a, t) for a, t in rules)
    return default_allow and not exceptions


# -- the assembler: runtime.kernel.bpf's (its names kept here: the device filter's tests use them) --

def instructions(rules: Iterable[Rule]) -> list[Insn | Label]:
    """runc's device filter for `rules`: the first exception that matches decides, else the default."""
    default_allow, exceptions = reduce(rules)
    prog: list[Insn | Label] = [  # R1 points to struct bpf_cgroup_dev_ctx {u32 access_type, major, minor}
        ldx_w(R2, R1, 0), and32_imm(R2, 0xFFFF),  # R2 = device type
        ldx_w(R3, R1, 0), rsh32_imm(R3, 16),  # R3 = the access asked for
        ldx_w(R4, R1, 4),  # R4 = major
        ldx_w(R5, R1, 8),  # R5 = minor
    ]
    for i, r in enumerate(exceptions):
        skip = f"block-{i + 1}"
        prog += [Label(f"block-{i}"), jne_imm(R2, DEV_TYPE[r.type], skip)]
        if r.access != ACC_ALL:  # the access asked for must be within the rule's (R1 is free now)
            # runc's test, kept as is: a deny exception with partial access (only possible after an
            # allow-all "a" rule) matches only requests within it, where v1 denies on any overlap
            prog += [mov32_reg(R1, R3), and32_imm(R1, r.access), jne_reg(R1, R3, skip)]
        if r.major != WILDCARD:
            prog.append(jne_imm(R4, r.major, skip))
        if r.minor != WILDCARD:
            prog.append(jne_imm(R5, r.minor, skip))
        prog += [mov32_imm(R0, int(r.allow)), exit_()]
    return prog + [Label(f"block-{len(exceptions)}"), mov32_imm(R0, int(default_allow)), exit_()]


def program(rules: Iterable[tuple[bool, str]]) -> bytes:
    """The bytes to load, from rules in the v1 path's form: (allow, "c 1:5 rwm")."""
    return assemble(instructions(parse(a, t) for a, t in rules))


# -- the kernel -----------------------------------------------------------------------------------

LICENSE = "Apache"  # runc's: the kernel only checks it for GPL-only helpers, which the filter calls none of
BPF_PROG_ATTACH, BPF_PROG_DETACH, BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY = 8, 9, 13, 16
BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI = 15, 6, 2
_MAX_PROGS = 64  # BPF_CGROUP_MAX_PROGS per cgroup and attach type

_u32, _u64 = ctypes.c_uint32, ctypes.c_uint64


class _Attach(ctypes.Structure):  # BPF_PROG_ATTACH, BPF_PROG_DETACH
    _fields_ = [("target_fd", _u32), ("attach_bpf_fd", _u32), ("attach_type", _u32), ("attach_flags", _u32)]


class _Query(ctypes.Structure):  # BPF_PROG_QUERY, to `revision`: 6.17+ kernels write it whatever size is given
    _fields_ = [("target_fd", _u32), ("attach_type", _u32), ("query_flags", _u32), ("attach_flags", _u32),
                ("prog_ids", _u64), ("prog_cnt", _u32), ("_pad", _u32), ("prog_attach_flags", _u64),
                ("link_ids", _u64), ("link_attach_flags", _u64), ("revision", _u64)]


class _GetFd(ctypes.Structure):  # BPF_PROG_GET_FD_BY_ID
    _fields_ = [("prog_id", _u32), ("next_id", _u32), ("open_flags", _u32)]


def load(code: bytes, license: str = LICENSE) -> int:
    """The fd of the loaded program. A refusal raises KernelError with the verifier's own words."""
    try:
        return bpf.load(code, BPF_PROG_TYPE_CGROUP_DEVICE, license)
    except bpf.Refused as e:
        raise _error("load the device filter (BPF_PROG_LOAD)", e, e.log) from None
    except OSError as e:
        raise _error("load the device filter (BPF_PROG_LOAD)", e) from None


def attach(cgroup: Path, rules: Iterable[tuple[bool, str]]) -> bool:
    """Enforce `rules` on the cgroup v2 directory `cgroup`, replacing programs attached there
    before. Returns False, touching nothing, when the rules allow every device (--privileged)."""
    rules = list(rules)
    if allows_all(rules):
        return False
    code = program(rules)
    try:
        dfd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _error(f"open the cgroup {cgroup}", e) from None
    old: list[int] = []
    try:
        for prog_id in _programs(dfd, cgroup):  # a cgroup netdiag makes anew has none
            fd = _prog_fd(prog_id)
            if fd is not None:
                old.append(fd)
        prog = load(code)
        try:
            _attach_cmd(BPF_PROG_ATTACH, dfd, prog, BPF_F_ALLOW_MULTI)
        finally:
            os.close(prog)  # attached, the cgroup holds the program; else it is freed here
        for fd in old:  # only now: the cgroup is never without a filter
            _attach_cmd(BPF_PROG_DETACH, dfd, fd, 0)
    finally:
        for fd in old + [dfd]:
            os.close(fd)
    return True


def programs(cgroup: Path) -> list[int]:
    """Ids of the device programs attached to this cgroup itself (not those it inherits)."""
    dfd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _programs(dfd, cgroup)
    finally:
        os.close(dfd)


def _programs(dfd: int, cgroup: Path) -> list[int]:
    ids = (_u32 * _MAX_PROGS)()
    attr = _Query(target_fd=dfd, attach_type=BPF_CGROUP_DEVICE, prog_ids=ctypes.addressof(ids), prog_cnt=_MAX_PROGS)
    try:
        bpf.syscall(BPF_PROG_QUERY, attr)
    except OSError as e:
        raise _error(f"list the device programs of the cgroup {cgroup} (BPF_PROG_QUERY)", e) from None
    return list(ids[:attr.prog_cnt])


def _prog_fd(prog_id: int) -> int | None:
    try:
        return bpf.syscall_fd(BPF_PROG_GET_FD_BY_ID, _GetFd(prog_id))
    except OSError as e:
        # gone meanwhile, or hidden by an LSM policy: runc skips those, as they can only restrict more
        if e.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):
            return None
        raise _error(f"open device program {prog_id} (BPF_PROG_GET_FD_BY_ID)", e) from None


def _attach_cmd(cmd: int, dfd: int, prog: int, flags: int) -> None:
    try:
        bpf.syscall(cmd, _Attach(dfd, prog, BPF_CGROUP_DEVICE, flags))
    except OSError as e:
        raise _error("attach the device filter (BPF_PROG_ATTACH)" if cmd == BPF_PROG_ATTACH
                     else "detach the old device filter (BPF_PROG_DETACH)", e) from None


def _error(action: str, e: OSError, log: str = "") -> KernelError:
    what = f"Cannot {action} for the container's device allow-list"
    if log:  # its last lines say why (the whole log can run to megabytes)
        words = " | ".join(log.splitlines()[-12:])
        return KernelError(what, f"the kernel's verifier refused the program: {words}",
                           "this is a bug in netdiag's device filter; report it with these words")
    why, fix = {
        errno.ENOSYS: ("this kernel has no bpf() syscall (CONFIG_BPF_SYSCALL)",
                       "use a kernel with CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF (distribution kernels have both)"),
        errno.EINVAL: ("this kernel does not know cgroup device programs (CONFIG_CGROUP_BPF is off)",
                       "use a kernel built with CONFIG_CGROUP_BPF, or a host with cgroup v1"),
        errno.EBADF: ("the target is not a directory of the cgroup v2 hierarchy",
                      "check NETDIAG_CGROUP_PARENT and that /sys/fs/cgroup is cgroup2"),
        errno.EPERM: ("loading and attaching device programs needs CAP_SYS_ADMIN (or CAP_BPF and CAP_NET_ADMIN) "
                      "in the host's user namespace; an attach is also refused when another tool attached a "
                      "device program to this cgroup without BPF_F_ALLOW_MULTI; kernels before 5.11 also "
                      "count programs against RLIMIT_MEMLOCK",
                      "run netdiag as root on the host (not in a user namespace or an unprivileged container), "
                      "or raise 'ulimit -l' on an old kernel"),
        errno.E2BIG: ("the cgroup already has the most device programs the kernel allows (64)",
                      "detach what other tools attached to it ('bpftool cgroup show PATH' lists them)"),
    }.get(errno.EPERM if e.errno == errno.EACCES else e.errno,
          ("the kernel refused it", "check dmesg; a kernel with CONFIG_CGROUP_BPF is needed"))
    return KernelError(what, f"{os.strerror(e.errno)}: {why}", fix)
