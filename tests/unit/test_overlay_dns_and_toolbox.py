"""Pure parts of overlay DNS (the records the resolver reads, the names taken from the cluster
store, answers per sandbox) and of the debug toolbox (the ELF interpreter a host tool names)."""
import json
import struct

import pytest

from runtime.containers import toolbox
from runtime.networks import dns
from runtime.networks.dns import records
from runtime.networks.dns.server import Resolver


def _records(tmp_path, sandboxes):
    path = tmp_path / "overlays.dns.json"
    path.write_text(json.dumps({"network": "overlays", "internal": False, "upstream": [], "records": {}, "sandboxes": sandboxes}))
    return str(path)


def test_each_sandbox_gets_only_its_own_names_and_nothing_is_bound_in_a_reused_namespace(tmp_path):
    # /proc/self/ns/net with another inode: a pid reused by another process; the resolver must not serve it
    path = _records(tmp_path, {"c1": {"netns": "/proc/self/ns/net", "inode": 1, "names": {"web": ["10.0.1.3"]}},
                               "c2": {"netns": "/proc/self/ns/net", "inode": 1, "names": {"db": ["10.0.2.4"]}}})
    r = Resolver(None, None, path, dns.load_config(path))
    assert all(socks == [] for _, socks in r.sandboxes.values())
    answers = []
    ask = lambda name, client: r.handle(dns.build_query(name, qid=1), answers.append, udp=True, client=client)  # noqa: E731
    ask("web", "c1")
    ask("web", "c2")
    first, second = (dns.parse_response(a) for a in answers)
    assert first.answers == [("web", dns.A, 600, "10.0.1.3")]
    assert second.rcode == dns.REFUSED and second.answers == []  # no upstream: never another client's name


@pytest.mark.parametrize("box", [{"netns": "/run/netns/x", "inode": 1}, {"netns": "/proc/1/ns/net"}, "x"])
def test_a_sandbox_outside_proc_or_without_its_inode_is_refused(tmp_path, box):
    with pytest.raises(ValueError):
        dns.load_config(_records(tmp_path, {"c1": box}))


def test_names_from_the_cluster_store_include_aliases_and_short_ids_and_skip_junk():
    cid = "ab" * 32
    eps = [{"name": "Web", "container": cid, "ip": "10.0.1.3/24", "aliases": ["www"]},
           {"name": "evil", "container": "x", "ip": "not-an-ip"}, {"name": "noip", "container": "y"}, "junk"]
    assert records._endpoint_names(eps) == {"web": ["10.0.1.3"], cid[:12]: ["10.0.1.3"], "www": ["10.0.1.3"]}


def _elf64(interp: bytes | None) -> bytes:
    """A little-endian ELF64 header, one program header (PT_INTERP or PT_LOAD), then the path."""
    ehdr = bytearray(64)
    ehdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", ehdr, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", ehdr, 0x36, 56, 1)  # e_phentsize, e_phnum
    data = (interp or b"") + b"\0"
    phdr = struct.pack("<IIQQQQQQ", 3 if interp else 1, 0, 64 + 56, 0, 0, len(data), len(data), 1)
    return bytes(ehdr) + phdr + data


def test_the_elf_interpreter_of_a_dynamic_binary_and_none_for_static_ones_or_scripts(tmp_path):
    cases = {"dyn": _elf64(b"/lib64/ld-linux-x86-64.so.2"), "static": _elf64(None), "script": b"#!/bin/sh\necho hi\n" + bytes(64)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert toolbox.interpreter(str(tmp_path / "dyn")) == "/lib64/ld-linux-x86-64.so.2"
    assert toolbox.interpreter(str(tmp_path / "static")) is None
    assert toolbox.interpreter(str(tmp_path / "script")) is None
