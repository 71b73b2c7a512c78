"""runtime.kernel.btf: member offsets from a hand-built BTF blob (exact, both byte orders), and from
the running kernel's /sys/kernel/btf/vmlinux where there is one."""
import os
import struct

import pytest

from runtime.kernel.btf import BTF, VMLINUX, BTFError

STRINGS = ["", "int", "inner", "x", "y", "p", "inner_t", "outer", "a", "in", "bits", "f", "g"]


def _blob(order: str = "<") -> bytes:
    """Types: 1 int; 2 struct inner {int x; int y}; 3 inner *; 4 union {inner *p}; 5 typedef inner
    inner_t; 6 struct outer {int a; union {inner *p}; inner_t in}; 7 struct bits {int f:3 at bit 4;
    int g:8 at bit 8} (kind_flag set: bitfield sizes in the offsets' top byte)."""
    table, offs = b"", {}
    for s in STRINGS:
        offs[s] = len(table)
        table += s.encode() + b"\0"

    def head(name, kind, vlen, size_or_type, flag=0):
        return struct.pack(order + "III", offs[name], (flag << 31) | (kind << 24) | vlen, size_or_type)

    def member(name, type_id, bits):
        return struct.pack(order + "III", offs[name], type_id, bits)

    types = b"".join([
        head("int", 1, 0, 4) + struct.pack(order + "I", 32),
        head("inner", 4, 2, 8) + member("x", 1, 0) + member("y", 1, 32),
        head("", 2, 0, 2),
        head("", 5, 1, 8) + member("p", 3, 0),
        head("inner_t", 8, 0, 2),
        head("outer", 4, 3, 24) + member("a", 1, 0) + member("", 4, 64) + member("in", 5, 128),
        head("bits", 4, 2, 4, flag=1) + member("f", 1, (3 << 24) | 4) + member("g", 1, (8 << 24) | 8),
    ])
    header = struct.pack(order + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(table))
    return header + types + table


@pytest.mark.parametrize("order", ["<", ">"])
def test_offsets_of_a_hand_built_blob(order):
    btf = BTF(_blob(order))
    assert btf.offset("outer", "a") == 0
    assert btf.offset("outer", "p") == 8  # inside the anonymous union, as C names it
    assert btf.offset("outer", "in") == 16
    assert btf.offset("outer", "in.y") == 20  # through the typedef into inner
    assert btf.offset("inner", "y") == 4
    assert btf.offset("bits", "g") == 1  # a bitfield's size bits are not part of its offset


def test_what_the_blob_lacks_is_named():
    btf = BTF(_blob())
    with pytest.raises(BTFError, match="no member in.z"):
        btf.offset("outer", "in.z")
    with pytest.raises(BTFError, match="no struct missing"):
        btf.offset("missing", "a")
    with pytest.raises(BTFError, match="bitfield"):
        btf.offset("bits", "f")
    with pytest.raises(BTFError, match="not a struct"):
        btf.offset("outer", "a.b")  # int has no members
    with pytest.raises(BTFError, match="bad magic"):
        BTF(b"\0" * 64)


@pytest.mark.skipif(not os.path.exists(VMLINUX), reason="this kernel publishes no BTF")
def test_the_running_kernels_btf():
    btf = BTF.load()
    assert btf.offset("list_head", "next") == 0 and btf.offset("list_head", "prev") == 8
    skb_len = btf.offset("sk_buff", "len")
    assert 0 < skb_len < 256  # struct sk_buff's header fields
    dev = btf.offset("sk_buff", "dev")  # in an anonymous union of an anonymous struct
    assert dev < skb_len
    # the path a drop's device and network namespace are followed by
    assert btf.offset("net_device", "nd_net.net") > btf.offset("net_device", "ifindex") >= 0
    assert btf.offset("net", "ns.inum") == btf.offset("net", "ns") + btf.offset("ns_common", "inum")
