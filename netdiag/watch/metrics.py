"""`watch --metrics ADDR:PORT`: what watch counts, as Prometheus metrics (prometheus-client's own
registry and HTTP server, so a dashboard or an alert can scrape it): failed connects by kind and
endpoints, the other failing flows (UDP/ICMP, ICMP errors, SYN-ACKs, stalls), the kernel's drops by reason and endpoint, diagnoses by cause. The server runs in a
thread of watch and stops with it; it binds in the namespace watch runs in."""
from __future__ import annotations

import ipaddress

from runtime.errors import InvalidArgument


def parse_address(text: str) -> tuple[str, int]:
    """ADDR:PORT (IPv4, or [IPv6]) -> (addr, port); InvalidArgument (exit 2) otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not sep or not 1 <= number <= 65535:
        raise InvalidArgument(f"Invalid --metrics address {text!r}", "it is ADDR:PORT, an IP address and a port",
                              "e.g. --metrics 127.0.0.1:9464")
    return host, number


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self.connects = Counter("netdiag_watch_failed_connects", "TCP connects not answered (SYN retransmitted) or "
                                "answered by a RST, by kind, source, destination and port",
                                ["kind", "src", "dst", "port"], registry=self.registry)
        self.no_reply = Counter("netdiag_watch_failed_flows", "Other failing flows: UDP or ICMP without a reply "
                                "(conntrack), ICMP errors sent, SYN-ACKs not answered, refusals sent, stalled "
                                "connections; by kind, protocol, source, destination and port",
                                ["kind", "proto", "src", "dst", "port"], registry=self.registry)
        self.drops = Counter("netdiag_watch_drops", "Packets the kernel dropped (skb:kfree_skb), by reason and the "
                             "endpoint whose namespace dropped it (empty: not known, or host-wide counts)",
                             ["reason", "endpoint"], registry=self.registry)
        self.diagnoses = Counter("netdiag_watch_diagnoses", "Failing flows diagnosed, by cause (or verdict when none)",
                                 ["cause"], registry=self.registry)
        self.server = self.thread = None

    def serve(self, addr: str, port: int) -> "Metrics":
        from prometheus_client import start_http_server

        try:
            self.server, self.thread = start_http_server(port, addr, registry=self.registry)
        except OSError as e:
            raise InvalidArgument(f"Cannot serve metrics on {addr}:{port}", e.strerror or str(e),
                                  "choose a free port and an address of this host") from None
        return self

    def failed(self, kind: str, proto: str, src: str, dst: str, port: int, count: int) -> None:
        """A failing flow's events: a connect the client saw fail (SYN unanswered, RST received) in
        failed_connects, as before; every other kind in failed_flows."""
        if kind in ("unanswered", "reset"):
            self.connects.labels(kind, src, dst, str(port)).inc(count)
        else:
            self.no_reply.labels(kind, proto, src, dst, str(port)).inc(count)

    def drop(self, reason: str, endpoint: str, count: int) -> None:
        self.drops.labels(reason, endpoint).inc(count)

    def diagnosis(self, cause: str) -> None:
        self.diagnoses.labels(cause).inc()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = None
