"""The kernel's packet drops counted where they happen: a raw-tracepoint eBPF program on `kfree_skb`
counts each drop in a hash map keyed by (network namespace inode, ifindex, reason, protocol,
location). The namespace and device come from the packet: skb->dev->nd_net.net->ns.inum and
dev->ifindex; a packet with no device (dropped on its way out of a socket, or after its device was
let go) takes its socket's namespace (skb->sk->__sk_common.skc_net.net) and ifindex 0; with neither,
namespace 0. Offsets come from the running kernel's BTF (kernel.btf), the reasons' numbers too.

The reader (Counter.read) walks the map and returns what grew since its last read (the map is never
cleared: a count is never lost between a read and a delete). The program, its attachment and the
map are fds of the process that made them: they are released when it closes them or dies, SIGKILL
included; nothing is pinned, nothing is left to prune."""
from __future__ import annotations

import bisect
import os
import struct

from . import bpf
from .bpf import (R0, R1, R2, R3, R4, R6, R7, R8, R9, R10, Label, add64_imm, atomic_add_dw, call, exit_, ja, jeq_imm,
                  jne_imm, ld_map_fd, ldx_dw, mov64_imm, mov64_reg, st_dw, stx_dw, stx_w)
from .btf import BTF, BTFError

LICENSE = "GPL"  # bpf_probe_read_kernel is a GPL-only helper
HELPER_MAP_LOOKUP, HELPER_MAP_UPDATE, HELPER_PROBE_READ_KERNEL = 1, 2, 113
BPF_NOEXIST = 1
MAX_KEYS = 4096  # distinct (namespace, device, reason, protocol, location) counted; beyond, new ones are not
REASON_PREFIX = "SKB_DROP_REASON_"
# the key on the stack and in the map: u32 netns inode, u32 ifindex, u32 reason, u16 protocol (network
# byte order, as skb->protocol holds it), u16 pad, u64 location (the address kfree_skb was called from)
KEY = struct.Struct("=III2sHQ")
VALUE = struct.Struct("=Q")
_KEY_AT = -KEY.size  # fp-24: the key; below it, scratch slots for pointers read
_NETNS, _IFINDEX, _REASON, _PROTO, _LOCATION = _KEY_AT, _KEY_AT + 4, _KEY_AT + 8, _KEY_AT + 12, _KEY_AT + 16
_PTR, _NET, _ONE = _KEY_AT - 8, _KEY_AT - 16, _KEY_AT - 24
# the fields followed, each (struct, member path) in the kernel's BTF
FIELDS = {"dev": ("sk_buff", "dev"), "sk": ("sk_buff", "sk"), "protocol": ("sk_buff", "protocol"),
          "ifindex": ("net_device", "ifindex"), "dev_net": ("net_device", "nd_net.net"),
          "sk_net": ("sock", "__sk_common.skc_net.net"), "inum": ("net", "ns.inum")}


def offsets(btf: BTF) -> dict[str, int]:
    """The byte offsets the program needs; BTFError names what this kernel lacks."""
    return {name: btf.offset(struct_name, path) for name, (struct_name, path) in FIELDS.items()}


def reasons(btf: BTF) -> dict[str, int]:
    """Drop reason names (NETFILTER_DROP) -> this kernel's numbers."""
    return {name[len(REASON_PREFIX):]: value for name, value in btf.enum("skb_drop_reason").items()
            if name.startswith(REASON_PREFIX)}


def reason_numbers(known: dict[str, int], asked: list[str]) -> tuple[list[int], bool]:
    """(numbers, exclude): the reasons asked, to count; none asked: NOT_SPECIFIED, to leave out (the
    kernel's unannotated drops, as watch's tracefs filter does). ValueError for a reason unknown here."""
    if not asked:
        return [known["NOT_SPECIFIED"]], True
    unknown = [r for r in asked if r.upper() not in known]
    if unknown:
        raise ValueError(f"this kernel has no drop reason {', '.join(unknown)}")
    return sorted({known[r.upper()] for r in asked}), False


def _probe_read(dst_off: int, size: int, src_reg: int, src_off: int) -> list:
    """*(fp + dst_off) = *(src_reg + src_off), `size` bytes, by bpf_probe_read_kernel (zeroed when
    the address cannot be read). Clobbers R1-R5 and R0."""
    return [mov64_reg(R1, R10), add64_imm(R1, dst_off), mov64_imm(R2, size),
            mov64_reg(R3, src_reg), add64_imm(R3, src_off), call(HELPER_PROBE_READ_KERNEL)]


def instructions(off: dict[str, int], map_fd: int, numbers: list[int], exclude: bool) -> list:
    """The program. The raw tracepoint's context is kfree_skb's arguments, u64 each: skb, location,
    reason (R1 -> ctx)."""
    prog = [ldx_dw(R6, R1, 0), ldx_dw(R8, R1, 8), ldx_dw(R7, R1, 16)]  # R6 skb, R8 location, R7 reason
    if exclude:
        prog += [jeq_imm(R7, n, "out") for n in numbers]
    else:
        prog += [jeq_imm(R7, n, "counted") for n in numbers] + [ja("out"), Label("counted")]
    prog += [st_dw(R10, _KEY_AT, 0), st_dw(R10, _KEY_AT + 8, 0), stx_w(R10, _REASON, R7), stx_dw(R10, _LOCATION, R8),
             st_dw(R10, _NET, 0)]
    prog += _probe_read(_PROTO, 2, R6, off["protocol"])
    prog += _probe_read(_PTR, 8, R6, off["dev"]) + [ldx_dw(R9, R10, _PTR), jeq_imm(R9, 0, "no_dev")]
    prog += _probe_read(_IFINDEX, 4, R9, off["ifindex"]) + _probe_read(_NET, 8, R9, off["dev_net"]) + [ja("net")]
    prog += [Label("no_dev")] + _probe_read(_PTR, 8, R6, off["sk"]) + [ldx_dw(R9, R10, _PTR), jeq_imm(R9, 0, "count")]
    prog += _probe_read(_NET, 8, R9, off["sk_net"])
    prog += [Label("net"), ldx_dw(R9, R10, _NET), jeq_imm(R9, 0, "count")] + _probe_read(_NETNS, 4, R9, off["inum"])
    # count: the element's counter += 1; a new key is inserted with 1 (NOEXIST: another CPU may
    # insert it first, then it is looked up again)
    lookup_add = [*ld_map_fd(R1, map_fd), mov64_reg(R2, R10), add64_imm(R2, _KEY_AT), call(HELPER_MAP_LOOKUP)]
    prog += [Label("count"), *lookup_add, jeq_imm(R0, 0, "insert"), mov64_imm(R1, 1), atomic_add_dw(R0, 0, R1), ja("out")]
    prog += [Label("insert"), st_dw(R10, _ONE, 1), *ld_map_fd(R1, map_fd), mov64_reg(R2, R10), add64_imm(R2, _KEY_AT),
             mov64_reg(R3, R10), add64_imm(R3, _ONE), mov64_imm(R4, BPF_NOEXIST), call(HELPER_MAP_UPDATE),
             jne_imm(R0, 0, "again"), ja("out")]
    prog += [Label("again"), *lookup_add, jeq_imm(R0, 0, "out"), mov64_imm(R1, 1), atomic_add_dw(R0, 0, R1)]
    return prog + [Label("out"), mov64_imm(R0, 0), exit_()]


class Symbols:
    """Kernel text addresses -> "function+0xoff", as tracefs prints a drop's location (%pS), from
    /proc/kallsyms, read on first use (only root sees the addresses)."""

    def __init__(self, path: str = "/proc/kallsyms"):
        self.path, self.starts, self.names = path, [], []
        self.cache: dict[int, str] = {}

    def _load(self) -> None:
        pairs = []
        with open(self.path) as f:
            for line in f:
                addr, kind, name = line.split()[:3]
                if kind in "tTwW" and addr.strip("0"):
                    pairs.append((int(addr, 16), name))
        pairs.sort()
        self.starts, self.names = [a for a, _ in pairs], [n for _, n in pairs]

    def name(self, addr: int) -> str:
        if addr not in self.cache:
            if not self.starts:
                self._load()
            i = bisect.bisect_right(self.starts, addr) - 1
            self.cache[addr] = f"{self.names[i]}+{addr - self.starts[i]:#x}" if i >= 0 and self.starts else f"{addr:#x}"
        return self.cache[addr]


def parse(items: list[tuple[bytes, bytes]]) -> dict[tuple, int]:
    """The map's elements as {(netns, ifindex, reason, protocol, location): count}."""
    out = {}
    for key, value in items:
        netns, ifindex, reason, protocol, _pad, location = KEY.unpack(key)
        out[(netns, ifindex, reason, int.from_bytes(protocol, "big"), location)] = VALUE.unpack(value)[0]
    return out


class Counter:
    """The program loaded and attached, its map read by read(). close() releases all three."""

    def __init__(self, asked: list[str] | None = None, btf: BTF | None = None):
        btf = btf or BTF.load()
        known = reasons(btf)
        self.names = {v: k for k, v in known.items()}
        numbers, exclude = reason_numbers(known, list(asked or []))
        off = offsets(btf)
        self.fds: list[int] = []
        try:
            self.map_fd = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, KEY.size, VALUE.size, MAX_KEYS)
            self.fds.append(self.map_fd)
            code = bpf.assemble(instructions(off, self.map_fd, numbers, exclude))
            self.fds.append(bpf.load(code, bpf.BPF_PROG_TYPE_RAW_TRACEPOINT, LICENSE))
            self.fds.append(bpf.attach_raw_tracepoint("kfree_skb", self.fds[-1]))
        except BaseException:
            self.close()
            raise
        self.seen: dict[tuple, int] = {}
        self.symbols = Symbols()

    def read(self) -> list[dict]:
        """The drops counted since the last read: {netns, ifindex, reason, protocol, location, count}."""
        now = parse(bpf.map_items(self.map_fd, KEY.size, VALUE.size))
        out = []
        for key, total in now.items():
            grown = total - self.seen.get(key, 0)
            if grown > 0:
                netns, ifindex, reason, protocol, location = key
                out.append({"netns": netns, "ifindex": ifindex, "reason": self.names.get(reason, str(reason)),
                            "protocol": protocol, "location": self.symbols.name(location), "count": grown})
        self.seen = now
        return out

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def start(asked: list[str] | None = None) -> tuple[Counter | None, str]:
    """(the counter, "") or (None, why not): no BTF, a kernel without a field or a helper, bpf(2)
    refused (no CAP_BPF, a lockdown, seccomp). ValueError, as the tracefs path raises it, for a
    drop reason this kernel does not know."""
    try:
        return Counter(asked), ""
    except ValueError:
        raise
    except FileNotFoundError:
        return None, "no kernel BTF (/sys/kernel/btf/vmlinux)"
    except (BTFError, KeyError) as e:
        return None, f"this kernel's BTF lacks what the drop counter follows ({e})"
    except bpf.Refused as e:
        return None, f"the kernel's verifier refused the drop counter ({' | '.join(e.log.splitlines()[-3:])})"
    except OSError as e:
        return None, f"bpf() refused the drop counter: {e.strerror}"
