"""`netdiag watch`: failing connections and dropped packets as they happen, each failing flow diagnosed."""
from __future__ import annotations

from typing import List, Optional

import typer

from .app import app


@app.command()
def watch(
    ns: List[str] = typer.Option([], "--ns", help="Watch this ip netns namespace (repeatable)"),
    container: List[str] = typer.Option([], "--container", help="Watch this container, netdiag's or Docker's (repeatable)"),
    network: List[str] = typer.Option([], "--network", help="Watch the containers of this network (repeatable)"),
    reason: List[str] = typer.Option([], "--reason", help="Count only kernel drops with this reason, e.g. NETFILTER_DROP (repeatable)"),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line: events, flows, drops, diagnoses, the end"),
    diagnose: bool = typer.Option(True, "--diagnose/--no-diagnose", help="Diagnose each new failing flow once, in the background"),
    for_: Optional[str] = typer.Option(None, "--for", help="Stop after this long (e.g. 30s, 5m); default: until Ctrl-C"),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Serve Prometheus metrics on ADDR:PORT (failed connects, "
                                          "drops by reason, diagnoses by cause) while watching"),
):
    """Show failing connections and dropped packets as they happen, each failing flow diagnosed.

    From the kernel's own tracepoints (read in a private tracefs instance, nothing changed in
    anyone's rules): TCP connects whose SYN or SYN-ACK is not answered, connects refused or reset
    (RST received or sent), stalled connections (data retransmitted), ICMP unreachable and
    fragmentation needed, and the kernel's drop reasons (host-wide: a drop event names no address);
    from conntrack's events, UDP flows and pings without a reply. Repeats are grouped into one flow
    per kind, protocol, source, destination and port; each new flow is diagnosed once with the same
    pipeline as `trace` (its own probe), and its cause, hop and checked fix are shown next to it.
    With --network/--container, containers started later come into scope. Needs root."""
    import os
    import signal

    from runtime.errors import InvalidArgument, KernelError, PermissionDenied
    from runtime.validate import duration

    from ..observe.snapshot import live_model
    from ..watch.events import check_reasons
    from ..watch.metrics import Metrics, parse_address
    from ..watch.scope import Scope
    from ..watch.session import Session
    from ..watch.view import for_output

    seconds = duration(for_, "--for duration") if for_ else None
    where = parse_address(metrics) if metrics else None
    if os.geteuid() != 0:
        raise PermissionDenied("watch needs root", "it reads the kernel's tracepoints through tracefs (CAP_SYS_ADMIN)",
                               "run it as root")
    if reason:
        try:
            check_reasons(reason)
        except ValueError as e:
            raise InvalidArgument("Unknown drop reason", str(e), "e.g. --reason NETFILTER_DROP, NO_SOCKET, IP_INNOROUTES") from None
    scope = Scope(live_model(), namespaces=ns, containers=container, networks=network)
    # SIGTERM ends a watch as Ctrl-C does: the flows are shown once more and nothing is left behind
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.default_int_handler(signum, frame))
    served = Metrics().serve(*where) if where else None
    session = Session(scope, for_output(json_out), reasons=reason, diagnose=diagnose, metrics=served)
    try:
        session.run(seconds)
    except OSError as e:
        raise KernelError("Cannot watch the kernel's events", e.strerror or str(e),
                          "check that tracefs is available (/sys/kernel/tracing)") from None
    finally:
        if served:
            served.close()

