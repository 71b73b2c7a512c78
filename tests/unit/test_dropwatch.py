"""runtime.kernel.dropwatch without the kernel: the program's construction (its key, reason filter,
the fields it follows, every jump landing inside it), the map's decoding, the reader's deltas; and
watch's side: where a drop's (namespace inode, ifindex) is, on the lab snapshot fixture."""
import json
import struct
import sys
from pathlib import Path

import pytest

from netdiag.snapshot_model import Model
from netdiag.watch.flows import DropCounts
from netdiag.watch.scope import Scope
from netdiag.watch.view import drop_place
from runtime.kernel import bpf, dropwatch

OFF = {"dev": 16, "sk": 24, "protocol": 176, "ifindex": 224, "dev_net": 264, "sk_net": 48, "inum": 184}
KNOWN = {"NOT_SPECIFIED": 2, "NO_SOCKET": 3, "NETFILTER_DROP": 12}
MAP_FD = 7


def _decode(code: bytes) -> list[tuple]:
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack("=BBhi", code[i:i + 8])
        lo, hi = regs & 0xF, regs >> 4
        dst, src = (lo, hi) if sys.byteorder == "little" else (hi, lo)
        out.append((op, dst, src, off, imm))
    return out


def _jump_targets(insns: list[tuple]) -> list[int]:
    jumps = [i for i, (op, *_rest) in enumerate(insns) if op & 0x07 == bpf.BPF_JMP and op & 0xF0 not in (bpf.BPF_CALL, bpf.BPF_EXIT)]
    return [i + 1 + insns[i][3] for i in jumps]


def test_the_program_counts_in_the_map_and_follows_the_btf_offsets():
    numbers, exclude = dropwatch.reason_numbers(KNOWN, [])
    insns = _decode(bpf.assemble(dropwatch.instructions(OFF, MAP_FD, numbers, exclude)))
    assert insns[:3] == [(0x79, 6, 1, 0, 0), (0x79, 8, 1, 8, 0), (0x79, 7, 1, 16, 0)]  # skb, location, reason
    assert insns[3] == (0x15, 7, 0, insns[3][3], 2)  # NOT_SPECIFIED: straight out
    assert insns[-2:] == [(0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)]
    assert all(3 < t < len(insns) for t in _jump_targets(insns))  # no jump outside the program
    assert _jump_targets(insns)[0] == len(insns) - 2
    map_loads = [i for i, x in enumerate(insns) if x[0] == 0x18]
    assert map_loads and all(insns[i][2] == bpf.BPF_PSEUDO_MAP_FD and insns[i][4] == MAP_FD and insns[i + 1] == (0, 0, 0, 0, 0)
                             for i in map_loads)
    # each pointer followed is read by bpf_probe_read_kernel from the offset BTF gave: R3 += offset, call 113
    read_from = {insns[i - 1][4] for i, x in enumerate(insns) if x == (0x85, 0, 0, 0, 113)}
    assert read_from == set(OFF.values())
    helpers = [x[4] for x in insns if x[0] == 0x85]
    assert helpers.count(1) == 2 and helpers.count(2) == 1  # lookup (again after a lost insert), insert
    assert any(x[0] == 0xDB and x[4] == bpf.BPF_ADD for x in insns)  # the counter's atomic add


def test_asked_reasons_are_the_only_ones_counted():
    numbers, exclude = dropwatch.reason_numbers(KNOWN, ["netfilter_drop", "NO_SOCKET"])
    assert (numbers, exclude) == ([3, 12], False)
    insns = _decode(bpf.assemble(dropwatch.instructions(OFF, MAP_FD, numbers, exclude)))
    counted = 3 + 3  # after the two compares and the jump out
    assert insns[3][:2] == (0x15, 7) and insns[3][4] == 3 and 4 + insns[3][3] == counted
    assert insns[4][4] == 12 and 5 + insns[4][3] == counted
    assert insns[5][0] == 0x05 and 6 + insns[5][3] == len(insns) - 2  # any other: out
    with pytest.raises(ValueError, match="NO_SUCH"):
        dropwatch.reason_numbers(KNOWN, ["NO_SUCH"])


def test_the_map_is_decoded_and_read_as_deltas(monkeypatch, tmp_path):
    key = dropwatch.KEY.pack(4026532400, 2, 12, (2048).to_bytes(2, "big"), 0, 0xFFFF0010)
    assert dropwatch.parse([(key, dropwatch.VALUE.pack(5))]) == {(4026532400, 2, 12, 2048, 0xFFFF0010): 5}
    syms = tmp_path / "kallsyms"
    syms.write_text("ffff0000 T _stext\nffff0008 t nft_do_chain\nffff0100 d some_data\n0000000 T hidden\n")
    counter = object.__new__(dropwatch.Counter)  # the reader alone, no kernel
    counter.map_fd, counter.names, counter.seen, counter.symbols = MAP_FD, {12: "NETFILTER_DROP"}, {}, dropwatch.Symbols(str(syms))
    totals = [5]
    monkeypatch.setattr(bpf, "map_items", lambda fd, k, v: [(key, dropwatch.VALUE.pack(totals[0]))])
    assert counter.read() == [{"netns": 4026532400, "ifindex": 2, "reason": "NETFILTER_DROP", "protocol": 2048,
                               "location": "nft_do_chain+0x8", "count": 5}]
    assert counter.read() == []  # nothing new
    totals[0] = 7
    assert [d["count"] for d in counter.read()] == [2]


def _scope(**filters) -> Scope:
    snap = json.loads((Path(__file__).parents[1] / "fixtures" / "lab_snapshot.json").read_text())
    return Scope(Model(snap), **filters)


API, WEB, HOST = 4026532400, 4026532324, 4026532179


def test_a_drop_is_placed_in_its_namespace_and_a_host_side_device_names_its_container():
    s = _scope()
    assert s.drop_place(API, 2) == {"endpoint": "api", "device": "eth0", "device_of": None}
    assert s.drop_place(API, 0) == {"endpoint": "api", "device": None, "device_of": None}  # a socket's packet
    assert s.drop_place(HOST, 6) == {"endpoint": "host", "device": "veth44faa61", "device_of": "api"}
    assert s.drop_place(HOST, 5) == {"endpoint": "host", "device": "br-2c95fb7b093b", "device_of": "back"}
    assert s.drop_place(0, 0) == {"endpoint": None, "device": None, "device_of": None}  # nobody's known
    assert s.drop_place(12345, 3)["endpoint"] == "netns:12345"  # a namespace watch did not list


def test_a_filtered_watch_counts_only_the_drops_of_its_namespaces_and_their_host_side_devices():
    s = _scope(containers=["api"])
    assert s.drop_place(API, 2)["endpoint"] == "api"
    assert s.drop_place(HOST, 6)["device_of"] == "api"
    assert s.drop_place(HOST, 5)["device_of"] == "back"  # api's bridge
    for inode, ifindex in ((WEB, 2), (HOST, 4), (HOST, 3), (HOST, 2), (0, 0), (12345, 1)):
        assert s.drop_place(inode, ifindex) is None, (inode, ifindex)


def test_drop_lines_carry_their_place_or_say_host_wide():
    drops = DropCounts()
    ev = {"reason": "NETFILTER_DROP", "location": "nft_do_chain+0x8", "protocol": 2048, "ts": 1.0, "count": 2}
    drops.add(ev, {"endpoint": "host", "device": "veth44faa61", "device_of": "api"})
    drops.add(ev, {"endpoint": "api", "device": "eth0", "device_of": None})
    drops.add({**ev, "count": 1}, {"endpoint": "api", "device": "eth0", "device_of": None})
    drops.add(ev)  # from tracefs: no place
    lines = drops.drain()
    assert [(d.get("endpoint"), d.get("device"), d.get("device_of"), d.get("scope"), d["count"]) for d in lines] == [
        ("api", "eth0", None, None, 3), ("host", "veth44faa61", "api", None, 2), (None, None, None, "host", 2)]
    assert [drop_place(d) for d in lines] == ["in api (eth0)", "in host (veth44faa61, api's)", "(host-wide)"]
    assert drops.total == {"NETFILTER_DROP": 7}
    import jsonschema

    from tests.unit.test_schemas import schema

    for d in lines:
        jsonschema.validate(d, schema("watch"))
    with pytest.raises(jsonschema.ValidationError):  # a placed line is not also host-wide
        jsonschema.validate({**lines[0], "scope": "host"}, schema("watch"))


def test_without_btf_or_bpf_the_counter_says_why_and_watch_falls_back(monkeypatch):
    from runtime.kernel.btf import BTF, BTFError

    def no_file(path=None):
        raise FileNotFoundError(2, "No such file")

    monkeypatch.setattr(BTF, "load", staticmethod(no_file))
    assert dropwatch.start() == (None, "no kernel BTF (/sys/kernel/btf/vmlinux)")

    class _OldKernel:
        def enum(self, name):
            raise BTFError("this kernel's BTF has no enum skb_drop_reason")

    monkeypatch.setattr(BTF, "load", staticmethod(lambda path=None: _OldKernel()))
    counter, why = dropwatch.start()
    assert counter is None and "no enum skb_drop_reason" in why

    class _Kernel:
        enum = staticmethod(lambda name: {"SKB_DROP_REASON_NOT_SPECIFIED": 2})
        offset = staticmethod(lambda struct_name, path: 8)

    def refused(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(BTF, "load", staticmethod(lambda path=None: _Kernel()))
    monkeypatch.setattr(bpf, "map_create", refused)
    assert dropwatch.start() == (None, "bpf() refused the drop counter: Operation not permitted")
    with pytest.raises(ValueError):  # a reason this kernel lacks is bad input, whatever path runs
        dropwatch.start(["NETFILTER_DROP"])


def test_watch_counts_placed_drops_by_endpoint_and_leaves_out_those_its_scope_does_not_keep():
    import io

    from netdiag.watch.metrics import Metrics
    from netdiag.watch.session import Session
    from netdiag.watch.view import JsonView

    class _Scope:
        def drop_place(self, inode, ifindex):
            return {"endpoint": "api", "device": "eth0", "device_of": None} if inode == API else None

    s = Session(_Scope(), JsonView(io.StringIO()), diagnose=False, metrics=Metrics())
    ev = {"kind": "drop", "reason": "NETFILTER_DROP", "location": "nft_do_chain+0x8", "protocol": 2048, "ts": 1.0,
          "last_ts": 1.0, "ifindex": 2, "count": 3}
    s._event({**ev, "netns": API})
    s._event({**ev, "netns": WEB})  # not watched
    s._event({k: v for k, v in ev.items() if k != "ifindex"})  # from tracefs: host-wide
    assert [(d.get("endpoint"), d["count"]) for d in s.drops.drain()] == [("api", 3), (None, 3)]
    sample = s.metrics.registry.get_sample_value
    assert sample("netdiag_watch_drops_total", {"reason": "NETFILTER_DROP", "endpoint": "api"}) == 3
    assert sample("netdiag_watch_drops_total", {"reason": "NETFILTER_DROP", "endpoint": ""}) == 3
