"""The lab's resolver answers A queries for its names, NXDOMAIN for others, empty for AAAA."""
import struct

from netdiag.worlds.lab_dns import answer


def _query(name: str, qtype: int = 1) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def test_answers():
    records = {"auth.docker.io": "203.0.113.3"}
    a = answer(_query("Auth.Docker.IO"), records)
    qid, flags, qd, an = struct.unpack("!HHHH", a[:8])
    assert (qid, flags & 0x8000, flags & 0xF, qd, an) == (0x1234, 0x8000, 0, 1, 1)
    assert a.endswith(bytes([203, 0, 113, 3]))
    aaaa = answer(_query("auth.docker.io", 28), records)
    assert struct.unpack("!HH", aaaa[2:4] + aaaa[6:8]) == (0x8500, 0)  # no error, no answer
    nx = answer(_query("nothing.example"), records)
    assert struct.unpack("!H", nx[2:4])[0] & 0xF == 3
    assert answer(b"\0" * 5, records) is None
