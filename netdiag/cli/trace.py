"""`netdiag trace SRC DST`: where a packet dies, why, the evidence and the fix."""
from __future__ import annotations

import json
from typing import List, Optional

import typer

from .app import app

EXIT = {"delivered": 0, "blocked": 1, "unknown": 3}


@app.command()
def trace(
    src: str = typer.Argument(..., help="Source: container name or id, ns:NAME, pid:N, host, or an IP address"),
    dst: str = typer.Argument(..., help="Destination: a container, ns:NAME, pid:N, host, or an IP (e.g. the host's address with a published port)"),
    port: int = typer.Option(0, "--port", "-p", help="Destination port (tcp/udp)"),
    proto: str = typer.Option("tcp", "--proto", help="tcp, udp or icmp"),
    size: int = typer.Option(0, "--size", help="Payload size in bytes (checks MTUs on the path)"),
    static: bool = typer.Option(False, "--static", help="Only the static path from the model: send no probe"),
    snapshot: List[str] = typer.Option([], "--snapshot", help="Reason over a snapshot file (implies --static); repeat it to merge several hosts' snapshots"),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Draw the path on the topology map: FILE.svg or FILE.html"),
    pcap: Optional[str] = typer.Option(None, "--pcap", help="Write every hop's capture of the probe to FILE (pcapng, for Wireshark)"),
    timeout: float = typer.Option(2.0, "--timeout", help="Seconds the live probe may take"),
    record: Optional[str] = typer.Option(None, "--record", help="Write a snapshot of the host with this probe's results to FILE: "
                                         "`trace --snapshot FILE` with the same SRC DST replays the diagnosis offline, without root"),
    verify_fix: bool = typer.Option(False, "--verify-fix", help="Prove the fix live on a throwaway replica (fresh namespaces "
                                    "rebuilt from the model; the real host is never changed): needs root"),
):
    """Follow a packet hop by hop and name the exact reason it dies.

    The static path is followed through the model (routes, nftables, sysctls, bridges, VXLAN); then,
    as root, a real probe is sent, captured at every hop and traced by the kernel's own nftables
    packet trace, which decides when it names the rule that dropped the probe. The fix is checked
    on a copy of the model before it is printed; with --verify-fix it is also applied to a
    throwaway replica of the namespaces (never to the host) and the flow probed there for real.

    Exit codes: 0 delivered, 1 not delivered (diagnosed), 2 bad input, 3 could not diagnose."""
    from runtime.errors import InvalidArgument

    from ..diagnose import diagnose

    if proto not in ("tcp", "udp", "icmp"):
        raise InvalidArgument(f"Unknown protocol {proto!r}", "trace speaks tcp, udp and icmp", "use --proto tcp|udp|icmp")
    if proto != "icmp" and not 1 <= port <= 65535:
        raise InvalidArgument(f"{proto} needs a destination port", f"--port {port} is not 1-65535", "give e.g. --port 80, or use --proto icmp")
    if not 0 <= size <= 65000:
        raise InvalidArgument(f"Invalid --size {size}", "it is a payload size from 0 to 65000 bytes", "")
    for flag, value in (("--pcap", pcap), ("--record", record)):
        if value and (static or snapshot):
            raise InvalidArgument(f"{flag} needs the live probe", "--static and --snapshot send no packet", "drop --static/--snapshot")
    from .observe import load_model

    model = load_model(snapshot or None)
    probes: list = []
    result = diagnose(model, src, dst, proto=proto, port=port, size=size, live=not (static or snapshot),
                      timeout=timeout, pcap=pcap, record=probes)
    if record:
        write_recording(model, probes, record)
    if verify_fix and result.verdict == "blocked":
        from .. import verify

        result.fix.verified = verify.verify(model, result, timeout=timeout)
    from ..verify import proof

    result.fix.proof = proof(result.fix)
    data = result.to_json()
    if output:
        from ..views import topo

        topo.write(model.full(), output, trace=data)
    if json_out:
        print(json.dumps(data, indent=2))
    else:
        render(data)
    raise typer.Exit(EXIT.get(result.verdict, 3))


def write_recording(model, probes: list, path: str) -> None:
    """The whole host as a snapshot, with the probes' raw results (written atomically)."""
    import os

    from runtime.errors import InvalidArgument

    if not probes:
        raise InvalidArgument("Nothing to record", "no live probe ran (it needs root, and a destination address)", "run as root")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump({**model.full(), "probes": probes}, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InvalidArgument(f"Cannot write {path}", e.strerror or str(e), "check the path") from None


def render(r: dict) -> None:
    """The diagnosis's JSON form, for people."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    colour = {"delivered": "green", "blocked": "red"}.get(r["verdict"], "yellow")
    head = f"[bold {colour}]{r['verdict'].upper()}[/]" + (f" [bold]{r['cause']}[/]" if r["cause"] else "")
    con.print(f"{head}  {r['src']} -> {r['dst']}"
              + (f" ({r['dst_ip']})" if r["dst_ip"] != r["dst"] else "")
              + (f" {r['proto']}/{r['port']}" if r["proto"] != "icmp" else " icmp") + (f" size {r['size']}" if r["size"] else ""))
    t = Table("#", "namespace", "interface", "kind", "", "seen", "detail", box=None, header_style="bold")
    for h in r["hops"]:
        dead = r.get("blocked_at") == h["n"]
        seen = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[dim]-[/]"}[h["seen"]]
        style = "bold red" if dead else None
        way = ("reply " if h.get("leg") == "reply" else "") + h["direction"]  # a hop of the answer's way back
        t.add_row(str(h["n"]), h["label"], h["interface"], h["kind"], way, seen, h["detail"], style=style)
    con.print(t)
    back = r.get("reply")
    if back and back.get("hops"):
        con.print(f"[bold]reply[/] {back['verdict']}: " + " -> ".join(f"{h['label']} {h['interface']}" for h in back["hops"]))
    con.print(f"[bold]why[/]  {r['summary']}")
    if r["evidence"]:
        con.print("[bold]evidence[/]")
        for e in r["evidence"]:
            con.print(f"  [dim]{e['kind']}:[/] {e['detail']}")
    if r.get("live"):
        lv = r["live"]
        when = f" (recorded {lv['recorded_at']})" if lv.get("recorded_at") else ""
        con.print(f"[bold]live[/]  {lv['outcome']}: {lv['detail']}{when}"
                  + (f" (last seen at hop {lv.get('last_seen_hop')})" if lv.get("last_seen_hop") else ""))
    if r.get("reconciled"):
        con.print(f"[bold]check[/] {r['reconciled']}")
    if r["fix"]:
        con.print(f"[bold]fix[/]  {r['fix']}")
    check = r.get("fix_check")
    if check:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]"}.get(check.get("delivers"), "[dim]?[/]")
        con.print(f"[bold]checked[/] {mark} {check['detail']}")
    render_proof(con, r)
    if r.get("pcap"):
        con.print(f"[bold]pcap[/] {r['pcap']} (every hop's capture of the probe)")


def render_proof(con, r: dict) -> None:
    """The replica's verdict on the fix and the line saying which proof was made."""
    from rich.markup import escape

    v = r.get("fix_verified")
    if v is not None:
        mark = {True: "[green]✓[/]", False: "[red]✗[/]"}.get(v.get("replica"), "[dim]?[/]")
        con.print(f"[bold]verified on a replica[/] {mark} {escape(str(v.get('detail')))}")
        for a in v.get("applied") or []:
            con.print(f"  [dim]ran: {escape(a['command'])} (exit {a['returncode']})[/]")
    if r.get("fix_proof"):
        con.print(f"[bold]proof[/] {escape(r['fix_proof'])}")
