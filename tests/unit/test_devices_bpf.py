"""The cgroup v2 device filter without a kernel: rules -> runc's program, byte for byte (against the
dumps of runc's devicefilter_test.go and hand-encoded struct bpf_insn), and what the program decides
(run by a small interpreter here) against the v1 devices controller's rules."""
import itertools
import re
import struct
import sys

import pytest

from runtime.containers import devices_bpf as d
from runtime.containers import security
from runtime.errors import InvalidArgument

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the expected bytes are little-endian")

# cilium/ebpf's mnemonics (runc prints its programs with them) -> opcode, from uapi/linux/bpf_common.h
# and bpf.h: class BPF_LDX 0x01, BPF_ALU 0x04, BPF_JMP 0x05; BPF_MEM 0x60 | BPF_W 0x00; source BPF_K 0x00
# or BPF_X 0x08; BPF_AND 0x50, BPF_RSH 0x70, BPF_MOV 0xb0; BPF_JNE 0x50, BPF_EXIT 0x90.
OPCODES = {"LdXMemW": 0x61, "AndImm32": 0x54, "RShImm32": 0x74, "MovImm32": 0xB4, "MovReg32": 0xBC,
           "JNEImm": 0x55, "JNEReg": 0x5D, "Exit": 0x95}

# The expected programs of opencontainers/cgroups devices/devicefilter_test.go (runc's device filter,
# moved there from libcontainer/cgroups/devices), verbatim, with the rules of each test.
RUNC_LOAD = """
// load parameters into registers
        0: LdXMemW dst: r2 src: r1 off: 0 imm: 0
        1: AndImm32 dst: r2 imm: 65535
        2: LdXMemW dst: r3 src: r1 off: 0 imm: 0
        3: RShImm32 dst: r3 imm: 16
        4: LdXMemW dst: r4 src: r1 off: 4 imm: 0
        5: LdXMemW dst: r5 src: r1 off: 8 imm: 0
"""
RUNC_NIL = RUNC_LOAD + """
block-0:
// return 0 (reject)
        6: MovImm32 dst: r0 imm: 0
        7: Exit
"""
RUNC_BUILTIN = RUNC_LOAD + """
block-0:
// (b, wildcard, wildcard, m, true)
        6: JNEImm dst: r2 off: -1 imm: 1 <block-1>
        7: MovReg32 dst: r1 src: r3
        8: AndImm32 dst: r1 imm: 1
        9: JNEReg dst: r1 off: -1 src: r3 <block-1>
        10: MovImm32 dst: r0 imm: 1
        11: Exit
block-1:
// (c, wildcard, wildcard, m, true)
        12: JNEImm dst: r2 off: -1 imm: 2 <block-2>
        13: MovReg32 dst: r1 src: r3
        14: AndImm32 dst: r1 imm: 1
        15: JNEReg dst: r1 off: -1 src: r3 <block-2>
        16: MovImm32 dst: r0 imm: 1
        17: Exit
block-2:
        18: JNEImm dst: r2 off: -1 imm: 2 <block-3>
        19: JNEImm dst: r4 off: -1 imm: 1 <block-3>
        20: JNEImm dst: r5 off: -1 imm: 3 <block-3>
        21: MovImm32 dst: r0 imm: 1
        22: Exit
block-3:
        23: JNEImm dst: r2 off: -1 imm: 2 <block-4>
        24: JNEImm dst: r4 off: -1 imm: 1 <block-4>
        25: JNEImm dst: r5 off: -1 imm: 5 <block-4>
        26: MovImm32 dst: r0 imm: 1
        27: Exit
block-4:
        28: JNEImm dst: r2 off: -1 imm: 2 <block-5>
        29: JNEImm dst: r4 off: -1 imm: 1 <block-5>
        30: JNEImm dst: r5 off: -1 imm: 7 <block-5>
        31: MovImm32 dst: r0 imm: 1
        32: Exit
block-5:
        33: JNEImm dst: r2 off: -1 imm: 2 <block-6>
        34: JNEImm dst: r4 off: -1 imm: 1 <block-6>
        35: JNEImm dst: r5 off: -1 imm: 8 <block-6>
        36: MovImm32 dst: r0 imm: 1
        37: Exit
block-6:
        38: JNEImm dst: r2 off: -1 imm: 2 <block-7>
        39: JNEImm dst: r4 off: -1 imm: 1 <block-7>
        40: JNEImm dst: r5 off: -1 imm: 9 <block-7>
        41: MovImm32 dst: r0 imm: 1
        42: Exit
block-7:
        43: JNEImm dst: r2 off: -1 imm: 2 <block-8>
        44: JNEImm dst: r4 off: -1 imm: 5 <block-8>
        45: JNEImm dst: r5 off: -1 imm: 0 <block-8>
        46: MovImm32 dst: r0 imm: 1
        47: Exit
block-8:
        48: JNEImm dst: r2 off: -1 imm: 2 <block-9>
        49: JNEImm dst: r4 off: -1 imm: 5 <block-9>
        50: JNEImm dst: r5 off: -1 imm: 2 <block-9>
        51: MovImm32 dst: r0 imm: 1
        52: Exit
block-9:
// tuntap (c, 10, 200, rwm, true)
        53: JNEImm dst: r2 off: -1 imm: 2 <block-10>
        54: JNEImm dst: r4 off: -1 imm: 10 <block-10>
        55: JNEImm dst: r5 off: -1 imm: 200 <block-10>
        56: MovImm32 dst: r0 imm: 1
        57: Exit
block-10:
// /dev/pts (c, 136, wildcard, rwm, true)
	58: JNEImm dst: r2 off: -1 imm: 2 <block-11>
        59: JNEImm dst: r4 off: -1 imm: 136 <block-11>
        60: MovImm32 dst: r0 imm: 1
        61: Exit
block-11:
        62: MovImm32 dst: r0 imm: 0
        63: Exit
"""
RUNC_PRIVILEGED = RUNC_LOAD + """
block-0:
// return 1 (accept)
        6: MovImm32 dst: r0 imm: 1
        7: Exit
"""
RUNC_EXCEPT_ONE = RUNC_LOAD + """
block-0:
// return 0 (reject) if type==b && major == 8 && minor == 0
         6: JNEImm dst: r2 off: -1 imm: 1 <block-1>
         7: JNEImm dst: r4 off: -1 imm: 8 <block-1>
         8: JNEImm dst: r5 off: -1 imm: 0 <block-1>
         9: MovImm32 dst: r0 imm: 0
        10: Exit
block-1:
// return 1 (accept)
        11: MovImm32 dst: r0 imm: 1
        12: Exit
"""
RUNC_WEIRD = RUNC_EXCEPT_ONE.replace("minor == 0", "minor == 2").replace("off: -1 imm: 0 <block-1>",
                                                                          "off: -1 imm: 2 <block-1>")
RUNC_ALLOWED_DEVICES = ((True, "c *:* m"), (True, "b *:* m"), (True, "c 1:3 rwm"), (True, "c 1:8 rwm"),
                        (True, "c 1:7 rwm"), (True, "c 5:0 rwm"), (True, "c 1:5 rwm"), (True, "c 1:9 rwm"),
                        (True, "c 136:* rwm"), (True, "c 5:2 rwm"), (True, "c 10:200 rwm"))


def runc_bytes(dump: str) -> bytes:
    """Encode a runc dump by the uapi layout: u8 code, u8 dst (low nibble) | src << 4, s16 off, s32
    imm; a jump to <label> goes to the label's instruction, counted from the next instruction."""
    labels, insns = {}, []
    for line in (x.strip() for x in dump.splitlines()):
        if not line or line.startswith("//"):
            continue
        if line.endswith(":"):
            labels[line[:-1]] = len(insns)
            continue
        idx, op, rest = re.fullmatch(r"(\d+): (\w+)(.*)", line).groups()
        assert int(idx) == len(insns)
        insns.append((op, dict(re.findall(r"(dst|src|off|imm): r?(-?\d+)", rest)), re.search(r"<(.+)>", rest)))
    out = b""
    for i, (op, f, target) in enumerate(insns):
        off = labels[target.group(1)] - (i + 1) if target else int(f.get("off", 0))
        regs = int(f.get("dst", 0)) | int(f.get("src", 0)) << 4
        out += struct.pack("<BBhi", OPCODES[op], regs, off, int(f.get("imm", 0)))
    return out


@pytest.mark.parametrize("rules, dump", [
    ((), RUNC_NIL),
    (RUNC_ALLOWED_DEVICES, RUNC_BUILTIN),
    (((True, "a *:* rwm"),), RUNC_PRIVILEGED),
    (((True, "a *:* rwm"), (False, "b 8:0 rwm")), RUNC_EXCEPT_ONE),
    (((False, "b 8:1 rwm"), (True, "a *:* rwm"), (False, "b 8:2 rwm")), RUNC_WEIRD),  # 8:1 allowed, as in v1
], ids=["nil", "runc-allowed-devices", "privileged", "privileged-except-one", "weird"])
def test_the_program_is_runcs_byte_for_byte(rules, dump):
    assert d.program(rules) == runc_bytes(dump)


def test_the_encoding_of_each_instruction_kind():
    # hand-encoded from struct bpf_insn: code, dst | src << 4, off (le16), imm (le32)
    prog = [d.Label("top"), d.ldx_w(d.R3, d.R1, 4), d.and32_imm(d.R2, 0xFFFF), d.rsh32_imm(d.R3, 16),
            d.mov32_imm(d.R0, 1), d.mov32_reg(d.R1, d.R3), d.jne_imm(d.R5, 200, "end"),
            d.jne_reg(d.R1, d.R3, "top"), d.Label("end"), d.exit_()]
    assert d.assemble(prog).hex(" ", 8).split() == [
        "6113040000000000", "54020000ffff0000", "7403000010000000", "b400000001000000",
        "bc31000000000000", "55050100c8000000", "5d31f9ff00000000", "9500000000000000"]


def test_netdigs_default_rules_reduce_as_the_v1_controller_holds_them():
    """moby's defaults plus runc's AllowedDevices: the "deny c 10:229" (fuse) removes nothing (that
    device was not allowed), duplicates merge, and runc's order is (major, minor, type), * first."""
    default_allow, exceptions = d.reduce(d.parse(a, t) for a, t in security.DEFAULT_DEVICES)
    assert not default_allow
    assert [(r.allow, d._text(r)) for r in exceptions] == [(True, x) for x in (
        "b *:* m", "c *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
        "c 5:1 rwm", "c 5:2 rwm", "c 10:200 rwm", "c 136:* rwm")]
    # so the program is runc's for its AllowedDevices plus one block for /dev/console (c 5:1)
    assert len(d.program(security.DEFAULT_DEVICES)) == len(runc_bytes(RUNC_BUILTIN)) + 5 * 8
    # the type orders last (Go's sort.Slice in runc's emulator: major, then minor, then type)
    _, exceptions = d.reduce(d.parse(a, t) for a, t in (
        (False, "a *:* rwm"), (True, "b 8:0 r"), (True, "c 1:3 r"), (True, "c *:2 r"), (True, "b 1:3 r")))
    assert [d._text(r) for r in exceptions] == ["c *:2 r", "b 1:3 r", "c 1:3 r", "b 8:0 r"]


# -- what the program decides ---------------------------------------------------------------------

M32, M64 = 2**32 - 1, 2**64 - 1


def run(code: bytes, dev_type: int, major: int, minor: int, access: int) -> int:
    """Interpret the program on struct bpf_cgroup_dev_ctx {u32 access_type, major, minor} (R1 = its
    offset, 0). Only the kinds of instruction runc's filter uses; 32-bit ALU zero-extends."""
    ctx = struct.pack("<III", dev_type | access << 16, major, minor)
    reg, pc = [0] * 11, 0
    while True:
        op, regs, off, imm = struct.unpack_from("<BBhi", code, pc * 8)
        dst, src, pc = regs & 15, regs >> 4, pc + 1
        if op == 0x61:
            reg[dst] = struct.unpack_from("<I", ctx, reg[src] + off)[0]
        elif op == 0x54:
            reg[dst] = reg[dst] & imm & M32
        elif op == 0x74:
            reg[dst] = (reg[dst] & M32) >> imm
        elif op == 0xB4:
            reg[dst] = imm & M32
        elif op == 0xBC:
            reg[dst] = reg[src] & M32
        elif op == 0x55:  # 64-bit compare with the sign-extended immediate
            pc += off if reg[dst] != imm & M64 else 0
        elif op == 0x5D:
            pc += off if reg[dst] != reg[src] else 0
        elif op == 0x95:
            return reg[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


def v1_allows(rules, kind: str, major: int, minor: int, access: str) -> bool:
    """The v1 devices controller (security/device_cgroup.c) for a list that starts with "deny a":
    allow rules add exceptions (merged per device), deny rules take access away from the same
    device; a request passes when one exception has its type and numbers and all of its access."""
    assert rules[0] == (False, "a *:* rwm")
    held: dict = {}
    for allow, text in rules[1:]:
        t, numbers, acc = text.split()
        key = (t, *numbers.split(":"))
        held[key] = (held.get(key, set()) | set(acc)) if allow else (held.get(key, set()) - set(acc))
    return any(t == kind and ma in ("*", str(major)) and mi in ("*", str(minor)) and set(access) <= acc
               for (t, ma, mi), acc in held.items())


MIXED = ((False, "a *:* rwm"), (True, "c 1:3 r"), (True, "c 1:3 w"), (True, "b 8:* rw"), (True, "c *:5 m"),
         (False, "c 1:3 w"), (True, "c 136:* rwm"), (False, "c 136:* m"), (True, "b 7:0 m"))


@pytest.mark.parametrize("rules", [security.DEFAULT_DEVICES, MIXED], ids=["netdiag-default", "mixed"])
def test_the_program_decides_as_the_v1_controller(rules):
    code = d.program(rules)
    bits = {"m": d.ACC_MKNOD, "r": d.ACC_READ, "w": d.ACC_WRITE}
    accesses = ["".join(c) for n in (1, 2, 3) for c in itertools.combinations("rwm", n)]
    for kind, major, minor, access in itertools.product(
            "bc", (0, 1, 5, 7, 8, 10, 136, 253), (0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 229, 4242), accesses):
        got = run(code, d.DEV_TYPE[kind], major, minor, sum(bits[c] for c in access))
        assert got == int(v1_allows(rules, kind, major, minor, access)), (kind, major, minor, access)


def test_an_allow_all_list_with_exceptions_denies_them():
    code = d.program(((True, "a *:* rwm"), (False, "b 8:0 rwm")))
    assert run(code, d.DEV_TYPE["b"], 8, 0, d.ACC_READ) == 0
    assert run(code, d.DEV_TYPE["b"], 8, 1, d.ACC_READ) == 1
    assert run(code, d.DEV_TYPE["c"], 8, 0, d.ACC_READ | d.ACC_WRITE) == 1


# -- rules refused, and --privileged --------------------------------------------------------------

@pytest.mark.parametrize("text", ["x 1:2 r", "c 1 r", "c 1:2", "c 1:2 q", "c 1:2 rr", "c 1:x r", "c -1:2 r",
                                  "c 2147483648:0 r", ""])
def test_bad_rules_are_bad_input(text):
    with pytest.raises(InvalidArgument) as e:
        d.program(((False, "a *:* rwm"), (True, text)))
    assert e.value.exit_code == 2


def test_a_hole_in_a_wildcard_rule_is_refused_as_runc_does():
    """v1 would silently keep c *:* m; runc (and netdiag) refuse rather than pretend."""
    with pytest.raises(InvalidArgument, match="punch a hole in the wider rule 'c \\*:\\* m'"):
        d.program(((False, "a *:* rwm"), (True, "c *:* m"), (False, "c 1:3 m")))
    # removing access the wildcard does not give is fine
    d.program(((False, "a *:* rwm"), (True, "c *:* m"), (True, "c 1:3 rw"), (False, "c 1:3 w")))


def test_privileged_rules_attach_nothing(tmp_path):
    """--privileged's rules allow every device: nothing to load, the kernel is not even asked (the
    cgroup here does not exist), as v1 gets "allow a"."""
    assert d.allows_all(security.ALL_DEVICES)
    assert d.attach(tmp_path / "no-such-cgroup", security.ALL_DEVICES) is False
    assert not d.allows_all(security.DEFAULT_DEVICES)
    assert not d.allows_all(((True, "a *:* rwm"), (False, "b 8:0 rwm")))
