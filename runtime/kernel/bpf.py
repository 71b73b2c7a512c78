"""eBPF from Python, with no compiler and no libbpf: a tiny assembler (`struct bpf_insn`, labels for
jumps), the bpf(2) syscall, and the few commands netdiag uses: load a program (again with the
verifier's log when refused), create a map, walk and read it, attach to a raw tracepoint.
Everything is an fd: closing it (or the process dying, SIGKILL too) releases what it holds.
Encodings: the kernel's include/uapi/linux/bpf.h and bpf_common.h."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import sys
from collections import namedtuple  # not typing.NamedTuple: typing costs every `run` ~3 ms of imports

from .syscalls import libc

# -- the assembler: struct bpf_insn {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm} ----------

BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
BPF_W, BPF_H, BPF_DW = 0x00, 0x08, 0x18  # sizes: 32, 16, 64 bits
BPF_IMM, BPF_MEM, BPF_ATOMIC = 0x00, 0x60, 0xC0  # modes
BPF_K, BPF_X = 0x00, 0x08  # operand: the immediate, or the source register
BPF_ADD, BPF_AND, BPF_RSH, BPF_MOV = 0x00, 0x50, 0x70, 0xB0  # ALU operations
BPF_JA, BPF_JEQ, BPF_JNE, BPF_CALL, BPF_EXIT = 0x00, 0x10, 0x50, 0x80, 0x90  # jump operations
BPF_PSEUDO_MAP_FD = 1  # a 64-bit immediate load's src_reg: the immediate is a map's fd
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)  # R10: the frame pointer (read-only)


class Insn(namedtuple("Insn", "code dst src off imm", defaults=(0, 0, 0, 0))):
    """One instruction; a jump's `off` may be the name of a Label, resolved by assemble()."""

    __slots__ = ()


class Label(namedtuple("Label", "name")):
    """Marks the next instruction; takes no space."""

    __slots__ = ()


def ldx_w(dst: int, src: int, off: int) -> Insn:  # dst = *(u32 *)(src + off)
    return Insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off)


def ldx_dw(dst: int, src: int, off: int) -> Insn:  # dst = *(u64 *)(src + off)
    return Insn(BPF_LDX | BPF_MEM | BPF_DW, dst, src, off)


def stx_w(dst: int, off: int, src: int) -> Insn:  # *(u32 *)(dst + off) = src
    return Insn(BPF_STX | BPF_MEM | BPF_W, dst, src, off)


def stx_dw(dst: int, off: int, src: int) -> Insn:  # *(u64 *)(dst + off) = src
    return Insn(BPF_STX | BPF_MEM | BPF_DW, dst, src, off)


def st_dw(dst: int, off: int, imm: int) -> Insn:  # *(u64 *)(dst + off) = imm
    return Insn(BPF_ST | BPF_MEM | BPF_DW, dst, off=off, imm=imm)


def atomic_add_dw(dst: int, off: int, src: int) -> Insn:  # *(u64 *)(dst + off) += src, atomically
    return Insn(BPF_STX | BPF_ATOMIC | BPF_DW, dst, src, off, BPF_ADD)


def and32_imm(dst: int, imm: int) -> Insn:  # dst &= imm
    return Insn(BPF_ALU | BPF_AND | BPF_K, dst, imm=imm)


def rsh32_imm(dst: int, imm: int) -> Insn:  # dst >>= imm
    return Insn(BPF_ALU | BPF_RSH | BPF_K, dst, imm=imm)


def mov32_imm(dst: int, imm: int) -> Insn:  # dst = imm
    return Insn(BPF_ALU | BPF_MOV | BPF_K, dst, imm=imm)


def mov32_reg(dst: int, src: int) -> Insn:  # dst = src
    return Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src)


def mov64_imm(dst: int, imm: int) -> Insn:  # dst = imm (sign-extended)
    return Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, imm=imm)


def mov64_reg(dst: int, src: int) -> Insn:  # dst = src
    return Insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src)


def add64_imm(dst: int, imm: int) -> Insn:  # dst += imm
    return Insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, imm=imm)


def ld_map_fd(dst: int, fd: int) -> list[Insn]:  # dst = the map (two instruction slots)
    return [Insn(BPF_LD | BPF_IMM | BPF_DW, dst, BPF_PSEUDO_MAP_FD, imm=fd), Insn(0)]


def jeq_imm(dst: int, imm: int, target: str) -> Insn:  # if dst == imm goto target
    return Insn(BPF_JMP | BPF_JEQ | BPF_K, dst, off=target, imm=imm)


def jne_imm(dst: int, imm: int, target: str) -> Insn:  # if dst != imm goto target
    return Insn(BPF_JMP | BPF_JNE | BPF_K, dst, off=target, imm=imm)


def jne_reg(dst: int, src: int, target: str) -> Insn:  # if dst != src goto target
    return Insn(BPF_JMP | BPF_JNE | BPF_X, dst, src, off=target)


def ja(target: str) -> Insn:  # goto target
    return Insn(BPF_JMP | BPF_JA, off=target)


def call(helper: int) -> Insn:  # R0 = helper(R1, ..., R5); R1-R5 are clobbered
    return Insn(BPF_JMP | BPF_CALL, imm=helper)


def exit_() -> Insn:  # return R0
    return Insn(BPF_JMP | BPF_EXIT)


def assemble(prog: list[Insn | Label]) -> bytes:
    """8 bytes per instruction, native byte order; a jump's offset counts from the next one."""
    at, n = {}, 0
    for item in prog:
        if isinstance(item, Label):
            at[item.name] = n
        else:
            n += 1
    out = bytearray()
    for item in (i for i in prog if not isinstance(i, Label)):
        off = at[item.off] - (len(out) // 8 + 1) if isinstance(item.off, str) else item.off
        # the register nibbles are C bitfields: dst_reg is the first, the low one on little-endian
        regs = item.dst | item.src << 4 if sys.byteorder == "little" else item.dst << 4 | item.src
        out += struct.pack("=BBhi", item.code, regs, off, item.imm)
    return bytes(out)


# -- the syscall ----------------------------------------------------------------------------------

_NR_BPF = {"x86_64": 321, "aarch64": 280}
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_GET_NEXT_KEY, BPF_PROG_LOAD = 0, 1, 4, 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_MAP_TYPE_HASH, BPF_PROG_TYPE_RAW_TRACEPOINT = 1, 17
_LOG_MIN, _LOG_MAX = 64 * 1024, 16 * 1024 * 1024 - 1  # runc's verifier log sizes (ENOSPC: grow)

_u32, _u64 = ctypes.c_uint32, ctypes.c_uint64


class Refused(OSError):
    """BPF_PROG_LOAD refused by the verifier: `log` holds its last words."""

    def __init__(self, err: int, log: str):
        super().__init__(err, os.strerror(err))
        self.log = log


class _ProgLoad(ctypes.Structure):  # the head of union bpf_attr for BPF_PROG_LOAD; the kernel zeroes the rest
    _fields_ = [("prog_type", _u32), ("insn_cnt", _u32), ("insns", _u64), ("license", _u64),
                ("log_level", _u32), ("log_size", _u32), ("log_buf", _u64)]


class _MapCreate(ctypes.Structure):
    _fields_ = [("map_type", _u32), ("key_size", _u32), ("value_size", _u32), ("max_entries", _u32), ("map_flags", _u32)]


class _MapElem(ctypes.Structure):  # BPF_MAP_LOOKUP_ELEM, BPF_MAP_GET_NEXT_KEY (value: the next key's buffer)
    _fields_ = [("map_fd", _u32), ("_pad", _u32), ("key", _u64), ("value", _u64), ("flags", _u64)]


class _RawTp(ctypes.Structure):
    _fields_ = [("name", _u64), ("prog_fd", _u32)]


def syscall(cmd: int, attr: ctypes.Structure) -> int:
    """bpf(cmd, attr); OSError with the kernel's errno. A signal's EINTR (and the verifier's EAGAIN)
    is retried, as runc does, 30 times at most."""
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"netdiag knows the bpf() syscall number of x86_64 and aarch64 only, not {os.uname().machine}")
    for _ in range(30):
        ret = libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.byref(attr),
                           ctypes.c_ulong(ctypes.sizeof(attr)))
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if not (err == errno.EINTR or err == errno.EAGAIN and cmd == BPF_PROG_LOAD):
            break
    raise OSError(err, os.strerror(err))


def syscall_fd(cmd: int, attr: ctypes.Structure) -> int:
    fd = syscall(cmd, attr)
    if fd == 0:  # bpf() reads fd 0 as "none" in later calls: move it (the kernel set O_CLOEXEC)
        fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 1)
        os.close(0)
    return fd


def load(code: bytes, prog_type: int, license: str) -> int:
    """The fd of the loaded program. Refused raises Refused with the verifier's log; other errors
    OSError. The fast path asks for no log (runc's way); a refusal is loaded again with one."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoad(prog_type, len(code) // 8, ctypes.addressof(insns), ctypes.addressof(lic))
    try:
        return syscall_fd(BPF_PROG_LOAD, attr)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.ENOSYS):  # not the verifier's: no log to ask for
            raise
    size = _LOG_MIN
    while True:
        log = ctypes.create_string_buffer(size)
        attr.log_level, attr.log_size, attr.log_buf = 1, size, ctypes.addressof(log)
        try:
            return syscall_fd(BPF_PROG_LOAD, attr)
        except OSError as e:
            if e.errno == errno.ENOSPC and size < _LOG_MAX:
                size = min(size * 8, _LOG_MAX)
                continue
            raise Refused(e.errno, log.value.decode(errors="replace").strip()) from None


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    return syscall_fd(BPF_MAP_CREATE, _MapCreate(map_type, key_size, value_size, max_entries))


def map_items(fd: int, key_size: int, value_size: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of every element, walked with GET_NEXT_KEY (an element deleted meanwhile is
    skipped; the walk restarts from the first key then, as the kernel does)."""
    key, nxt, value = ctypes.create_string_buffer(key_size), ctypes.create_string_buffer(key_size), ctypes.create_string_buffer(value_size)
    out, first = [], True
    while True:
        attr = _MapElem(fd, 0, 0 if first else ctypes.addressof(key), ctypes.addressof(nxt))
        try:
            syscall(BPF_MAP_GET_NEXT_KEY, attr)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return out
            raise
        first = False
        ctypes.memmove(key, nxt, key_size)
        try:
            syscall(BPF_MAP_LOOKUP_ELEM, _MapElem(fd, 0, ctypes.addressof(key), ctypes.addressof(value)))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            continue
        out.append((key.raw, value.raw))
        if len(out) > 1 << 20:  # a map changing under the walk forever: stop
            return out


def attach_raw_tracepoint(name: str, prog_fd: int) -> int:
    """The fd of the attachment: the program runs on `name` until it is closed."""
    buf = ctypes.create_string_buffer(name.encode())
    return syscall_fd(BPF_RAW_TRACEPOINT_OPEN, _RawTp(ctypes.addressof(buf), prog_fd))
