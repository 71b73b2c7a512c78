"""A live probe's frames as one pcapng file: one interface per hop (Wireshark's "Interface" column
and tcpdump's reader keep them apart), the kernel's capture timestamps, each frame's direction
(inbound/outbound EPB flag) and a comment saying probe or reply. Frames are those probe() kept:
SNAPLEN bytes each (the original length is recorded), a bounded number per hop.

scapy is imported here only (about a second of start-up), when a file is asked for.
"""
from __future__ import annotations

DLT_EN10MB = 1
PCAPNG_INBOUND, PCAPNG_OUTBOUND = 1, 2


def interface_names(seen: list[dict]) -> list[str]:
    """One unique name per hop: its label, with the interface appended unless the label has it."""
    names: list[str] = []
    for n, hop in enumerate(seen, 1):
        label, ifname = hop.get("label") or "", hop.get("ifname") or "?"
        name = label if label.split(" ")[-1:] == [ifname] else f"{label} {ifname}".strip()
        if name in names:
            name = f"{name} #{n}"
        names.append(name)
    return names


def write(path: str, live) -> dict:
    """Write `live` (a LiveResult or its to_dict()) to `path` as pcapng. Returns {"interfaces", "frames"}."""
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter

    seen = live["seen"] if isinstance(live, dict) else live.seen
    frames = live.get("frames", []) if isinstance(live, dict) else live.frames
    names = interface_names(seen)

    class _Writer(PcapNgWriter):
        """Declares every hop's interface up front, in hop order (ids 0..n-1), so a hop that saw
        nothing is still in the file and scapy adds no unnamed interface of its own."""

        def _write_header(self, pkt):
            if self.header_present:
                return
            self.header_present = True
            self._write_block_shb()
            for name in names:
                self._write_block_idb(linktype=DLT_EN10MB, ifname=name.encode())
            self.interfaces2id = {name.encode(): i for i, name in enumerate(names)}

    writer = _Writer(path)
    writer.linktype = DLT_EN10MB
    try:
        writer.write_header(None)
        for f in sorted(frames, key=lambda f: f["ts"]):
            pkt = Ether(bytes.fromhex(f["data"]))
            pkt.time = f["ts"]
            pkt.wirelen = f["len"]
            pkt.sniffed_on = names[f["hop"]]
            pkt.direction = PCAPNG_INBOUND if f["dir"] == "in" else PCAPNG_OUTBOUND
            pkt.comments = [f"netdiag: {f['kind']} at hop {f['hop'] + 1} ({names[f['hop']]})".encode()]
            writer.write(pkt)
    finally:
        writer.close()
    return {"interfaces": len(names), "frames": len(frames)}


__all__ = ["write", "interface_names"]
