"""DNS messages (RFC 1035) as the resolver speaks them: queries, responses, names with compression.
Stdlib only."""
from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field

A, NS, CNAME, PTR, AAAA, ANY = 1, 2, 5, 12, 28, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
TTL = 600  # like Docker
UDP_MAX = 512  # we do not speak EDNS: bigger local answers are truncated (TC) over UDP
_HEADER = struct.Struct("!HHHHHH")


class MalformedPacket(ValueError):
    """Not a DNS message we can read; the server drops it silently."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    labels: tuple[bytes, ...]  # as sent (case preserved, so answers echo it)
    qtype: int
    qclass: int

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def name(self) -> str:
        """Lower-case, no trailing dot ("" for the root)."""
        return b".".join(self.labels).decode("ascii", "replace").lower()


def _read_name(data: bytes, off: int) -> tuple[tuple[bytes, ...], int]:
    """Labels at `off` (following compression pointers) and the offset just past the name."""
    labels: list[bytes] = []
    end = None
    jumps = total = 0
    while True:
        if off >= len(data):
            raise MalformedPacket("name runs past the end")
        n = data[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(data):
                raise MalformedPacket("truncated pointer")
            jumps += 1
            if jumps > 64:
                raise MalformedPacket("compression loop")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | data[off + 1]
            continue
        if n & 0xC0:
            raise MalformedPacket("reserved label type")
        if n == 0:
            return tuple(labels), (off + 1 if end is None else end)
        label = data[off + 1:off + 1 + n]
        if len(label) != n:
            raise MalformedPacket("label runs past the end")
        total += n + 1
        if total + 1 > 255:  # + the root label
            raise MalformedPacket("name longer than 255 octets")
        labels.append(label)
        off += 1 + n


def _encode_name(labels) -> bytes:
    out = b"".join(bytes([len(lb)]) + lb for lb in labels) + b"\0"
    if any(not 0 < len(lb) < 64 for lb in labels) or len(out) > 255:
        raise ValueError(f"not a valid DNS name: {labels!r}")
    return out


def _labels(name: str) -> tuple[bytes, ...]:
    return tuple(lb.encode("idna" if not lb.isascii() else "ascii") for lb in name.rstrip(".").split(".") if lb)


def parse_query(data: bytes) -> Query:
    """A standard query: header, exactly one question. Raises MalformedPacket otherwise."""
    if len(data) < 12:
        raise MalformedPacket("shorter than a header")
    qid, flags, qd, _an, _ns, _ar = _HEADER.unpack_from(data)
    if flags & 0x8000:
        raise MalformedPacket("a response, not a query")
    if qd != 1:
        raise MalformedPacket(f"{qd} questions")
    labels, off = _read_name(data, 12)
    if off + 4 > len(data):
        raise MalformedPacket("question runs past the end")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    return Query(qid, flags, labels, qtype, qclass)


def build_query(name: str, qtype: int = A, qid: int | None = None, rd: bool = True) -> bytes:
    qid = random.getrandbits(16) if qid is None else qid
    return (_HEADER.pack(qid, 0x0100 if rd else 0, 1, 0, 0, 0)
            + _encode_name(_labels(name)) + struct.pack("!HH", qtype, CLASS_IN))


def build_response(q: Query, rcode: int = NOERROR, answers=(), *, aa: bool = True,
                   ra: bool = True, ttl: int = TTL, max_size: int = 65535) -> bytes:
    """Answer `q`. `answers` are (type, rdata bytes) for the question's name. If the message would
    exceed `max_size`, it is sent without answers and with TC set (the client retries over TCP)."""
    flags = 0x8000 | (q.opcode << 11) | (q.flags & 0x0100) | (0x0400 if aa else 0) \
        | (0x0080 if ra else 0) | (rcode & 0xF)
    question = _encode_name(q.labels) + struct.pack("!HH", q.qtype, q.qclass)
    rrs = [struct.pack("!HHHIH", 0xC00C, t, CLASS_IN, ttl, len(rd)) + rd for t, rd in answers]
    msg = _HEADER.pack(q.id, flags, 1, len(rrs), 0, 0) + question + b"".join(rrs)
    if len(msg) > max_size:
        msg = _HEADER.pack(q.id, flags | 0x0200, 1, 0, 0, 0) + question
    return msg


@dataclass
class Response:
    id: int
    flags: int
    rcode: int
    question: tuple[str, int]
    answers: list[tuple[str, int, int, object]] = field(default_factory=list)  # name, type, ttl, data


def parse_response(data: bytes) -> Response:
    """Decode a response (for clients and tests): A/AAAA as address strings, names for
    PTR/CNAME/NS, raw bytes otherwise."""
    if len(data) < 12:
        raise MalformedPacket("shorter than a header")
    qid, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data)
    off, question = 12, ("", 0)
    for _ in range(qd):
        labels, off = _read_name(data, off)
        if off + 4 > len(data):
            raise MalformedPacket("question runs past the end")
        question = (b".".join(labels).decode("ascii", "replace"), struct.unpack_from("!H", data, off)[0])
        off += 4
    resp = Response(qid, flags, flags & 0xF, question)
    for _ in range(an):
        labels, off = _read_name(data, off)
        if off + 10 > len(data):
            raise MalformedPacket("record runs past the end")
        rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        rdata = data[off:off + rdlen]
        if len(rdata) != rdlen:
            raise MalformedPacket("rdata runs past the end")
        if rtype in (A, AAAA) and rdlen in (4, 16):
            value: object = str(ipaddress.ip_address(rdata))
        elif rtype in (PTR, CNAME, NS):
            value = b".".join(_read_name(data, off)[0]).decode("ascii", "replace")
        else:
            value = rdata
        resp.answers.append((b".".join(labels).decode("ascii", "replace"), rtype, ttl, value))
        off += rdlen
    return resp
