"""Classic BPF socket filters (SO_ATTACH_FILTER): a program written with labels, assembled and
attached. The kernel runs it on every packet or message before it is queued, so what a reader does
not want costs it nothing (a probe's capture, watch's conntrack events)."""
from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_FILTER = 26
# the opcodes the programs here use
LDH, LDB, LDXB_MSH, LDH_IND, LDB_IND, JEQ, JSET, RET = 0x28, 0x30, 0xB1, 0x48, 0x50, 0x15, 0x45, 0x06


def assemble(prog: list[tuple[str, int, str, str, int]]) -> list[tuple[int, int, int, int]]:
    """(label, code, jump-if-true label, jump-if-false label, k) lines -> (code, jt, jf, k); an empty
    jump label is the next instruction."""
    labels = {ins[0]: i for i, ins in enumerate(prog) if ins[0]}
    out = []
    for i, (_, code, jt, jf, k) in enumerate(prog):
        rel = lambda target: labels[target] - i - 1 if target else 0  # noqa: E731
        out.append((code, rel(jt), rel(jf), k))
    return out


def attach(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program
