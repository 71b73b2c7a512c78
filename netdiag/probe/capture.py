"""Where the probe goes: one AF_PACKET capture per hop, opened inside the hop's namespace, with a
classic BPF filter that keeps only IPv4 frames carrying the mark (and VXLAN, decoded here, and
ICMP errors, which quote the probe); frames are kept with kernel timestamps for a pcap."""
from __future__ import annotations

import time
import socket
import struct

from runtime.kernel.ns import netns
from runtime.kernel.sockfilter import JEQ, JSET, LDB, LDB_IND, LDH, LDH_IND, LDXB_MSH, RET, assemble, attach
from runtime.kernel.syscalls import open_owned

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
VXLAN_PORTS = (4789, 8472)
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
SOL_PACKET, PACKET_AUXDATA, SO_TIMESTAMPNS = 263, 8, 35
SNAPLEN = 256  # enough for outer Ethernet/IP/UDP/VXLAN + inner Ethernet/IP/L4, or an ICMP error's quote
CAPTURE_RCVBUF = 4 << 20
MAX_FRAMES = 300  # frames kept for a pcap, shared among the hops (each hop gets at least MIN_HOP_FRAMES)
MIN_HOP_FRAMES = 16
_ANCILLARY = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(20)  # a timespec, a tpacket_auxdata
PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}
ICMP_UNREACH = {0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
                4: "fragmentation needed", 5: "source route failed", 6: "destination net unknown",
                7: "destination host unknown", 9: "net administratively prohibited",
                10: "host administratively prohibited", 11: "net unreachable for TOS", 12: "host unreachable for TOS",
                13: "communication administratively prohibited"}
ICMP_TYPES = {0: "echo reply", 3: "destination unreachable", 8: "echo request", 11: "time exceeded", 12: "parameter problem"}


def _bpf_program(mark: int) -> list[tuple[int, int, int, int]]:
    """Keep IPv4 frames (first fragments) that are TCP/UDP with port `mark` either way, ICMP with id
    `mark`, ICMP errors (checked in userspace: do they quote our packet?), and VXLAN (decoded in
    userspace). Truncated to SNAPLEN bytes."""
    prog = [
        ("", LDH, "", "", 12),
        ("", JEQ, "", "drop", ETH_P_IP),
        ("", LDH, "", "", 20),
        ("", JSET, "drop", "", 0x1FFF),
        ("", LDXB_MSH, "", "", 14),
        ("", LDB, "", "", 23),
        ("", JEQ, "icmp", "", 1),
        ("", JEQ, "ports", "", 6),
        ("", JEQ, "", "drop", 17),
        ("", LDH_IND, "", "", 16),
        ("", JEQ, "accept", "", VXLAN_PORTS[0]),
        ("", JEQ, "accept", "", VXLAN_PORTS[1]),
        ("ports", LDH_IND, "", "", 14),
        ("", JEQ, "accept", "", mark),
        ("", LDH_IND, "", "", 16),
        ("", JEQ, "accept", "drop", mark),
        ("icmp", LDH_IND, "", "", 18),
        ("", JEQ, "accept", "", mark),
        ("", LDB_IND, "", "", 14),
        ("", JEQ, "accept", "", 3),
        ("", JEQ, "accept", "", 11),
        ("", JEQ, "accept", "drop", 12),
        ("accept", RET, "", "", SNAPLEN),
        ("drop", RET, "", "", 0),
    ]
    return assemble(prog)


class Capture:
    def __init__(self, hop, mark: int):
        self.hop = hop
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self.frames: list[dict] = []
        self.frames_left_out = 0
        nsfile = None
        try:
            # opened here first: a path that cannot be opened is this capture's error, not an exception
            nsfile = open_owned(hop.ns_path)
            with netns(f"/proc/self/fd/{nsfile.fileno()}"):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
                try:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_RCVBUF)
                    except OSError:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_RCVBUF)
                    attach(s, _bpf_program(mark))
                    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # the kernel's receive time, for the pcap
                    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)  # the frame's length before SNAPLEN
                    s.bind((hop.ifname, ETH_P_ALL))  # resolved in the socket's (the hop's) namespace
                    s.setblocking(False)
                except BaseException:
                    s.close()
                    raise
            self.sock = s
        except OSError as e:
            self.error = f"cannot capture on {hop.ifname} in {hop.ns_path}: {e.strerror or e}"
        finally:
            if nsfile is not None:
                nsfile.close()

    def read(self, mark: int, proto: str, keep: int = 0) -> dict:
        """What passed this hop; the first `keep` matching frames go to self.frames."""
        hop = self.hop
        entry = {"label": hop.label or hop.ifname, "ifname": hop.ifname, "ns_path": hop.ns_path,
                 "count": 0, "first": None, "replies": 0, "first_reply": None}
        if self.sock is None:
            entry.update(count=None, replies=None, error=self.error)
            return entry
        while True:
            try:
                frame, anc, _, addr = self.sock.recvmsg(SNAPLEN, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ENETDOWN: the interface went down, nothing passed it
                entry["error"] = e.strerror
                break
            if hop.ifname == "lo" and addr[2] == PACKET_OUTGOING:
                continue  # loopback shows every frame twice: outgoing and incoming
            m = match_frame(frame, mark, proto)
            if m is None:
                continue
            kind, info = m
            info["dir"] = "out" if addr[2] == PACKET_OUTGOING else "in"
            if kind == "probe":
                entry["count"] += 1
                entry["first"] = entry["first"] or info
            else:
                entry["replies"] += 1
                entry["first_reply"] = entry["first_reply"] or info
            if len(self.frames) < keep:
                ts, wire = _ancillary(anc)
                self.frames.append({"ts": ts, "dir": info["dir"], "kind": kind, "len": wire or len(frame),
                                    "data": frame.hex()})
            else:
                self.frames_left_out += 1
        return entry

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _ancillary(anc: list) -> tuple[float, int | None]:
    """The kernel timestamp (SO_TIMESTAMPNS; now if missing) and the frame's original length (PACKET_AUXDATA)."""
    ts, wire = None, None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("qq", data)
            ts = sec + nsec / 1e9
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 8:
            wire = struct.unpack_from("I", data, 4)[0]  # tp_len
    return (ts if ts is not None else time.time()), wire


def match_frame(frame: bytes, mark: int, proto: str, _depth: int = 0) -> tuple[str, dict] | None:
    """("probe" | "reply", addresses) if this Ethernet frame carries our probe or an answer to it
    (directly, or inside VXLAN), else None. Answers: TCP/UDP to port `mark`, ICMP echo replies with
    id `mark`, ICMP errors quoting our probe."""
    if len(frame) < 14 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = ipv4(frame, 14)
    if ip is None or ip["frag"]:
        return None
    l4, number = ip["l4"], PROTOS[proto]
    info = {"src": ip["src"], "dst": ip["dst"], "sport": None, "dport": None, "len": ip["len"], "vxlan_vni": None}
    if ip["proto"] in (socket.IPPROTO_TCP, socket.IPPROTO_UDP) and len(frame) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        if ip["proto"] == socket.IPPROTO_UDP and dport in VXLAN_PORTS and _depth == 0 and len(frame) >= l4 + 16:
            flags, vni = frame[l4 + 8], int.from_bytes(frame[l4 + 12:l4 + 15], "big")
            inner = match_frame(frame[l4 + 16:], mark, proto, 1) if flags & 0x08 else None
            if inner is not None:
                kind, inner_info = inner
                inner_info.update(vxlan_vni=vni, outer_src=ip["src"], outer_dst=ip["dst"], outer_len=ip["len"])
                return kind, inner_info
        if ip["proto"] != number:
            return None
        info.update(sport=sport, dport=dport)
        if sport == mark:
            return "probe", info
        if dport == mark:
            return "reply", info
        return None
    if ip["proto"] == socket.IPPROTO_ICMP and len(frame) >= l4 + 8:
        itype, code, _, ident, _ = struct.unpack_from("!BBHHH", frame, l4)
        if itype in (0, 8) and proto == "icmp" and ident == mark:
            info.update(sport=ident, icmp=ICMP_TYPES[itype])
            return ("probe" if itype == 8 else "reply"), info
        if itype in (3, 11, 12):
            quoted = ipv4(frame, l4 + 8)
            if quoted is None or quoted["proto"] != number or len(frame) < quoted["l4"] + 8:
                return None
            q = quoted["l4"]
            ours = (struct.unpack_from("!H", frame, q + 4)[0] == mark if proto == "icmp"
                    else struct.unpack_from("!H", frame, q)[0] == mark)
            if ours:
                what = ICMP_UNREACH.get(code, f"code {code}") if itype == 3 else f"{ICMP_TYPES[itype]} code {code}"
                info["icmp"] = f"ICMP {what}"
                return "reply", info
    return None


def ipv4(data: bytes, off: int) -> dict | None:
    if len(data) < off + 20 or data[off] >> 4 != 4:
        return None
    ihl = (data[off] & 0xF) * 4
    total, frag, ttl, proto = struct.unpack_from("!H2xH B B", data, off + 2)
    return {"ihl": ihl, "len": total, "frag": frag & 0x1FFF, "ttl": ttl, "proto": proto,
            "src": socket.inet_ntoa(data[off + 12:off + 16]), "dst": socket.inet_ntoa(data[off + 16:off + 20]),
            "l4": off + ihl}
