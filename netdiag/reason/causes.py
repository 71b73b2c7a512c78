"""The cause catalogue, the one list of codes: each has a plain-language meaning. Summaries and fixes
are written by the engine with the concrete names (interface, rule, port), so they read as an
answer, not a code. Stop() refuses a code that is not here; the README's list is checked against it."""

CAUSES = {
    "NO_ROUTE": "no route to the destination",
    "LINK_DOWN": "an interface on the path is down",
    "NO_NEIGHBOR": "the next hop does not answer ARP (nobody has that address on the link)",
    "ADDRESS_CONFLICT": "two devices on one network have the same address",
    "FORWARDING_DISABLED": "the host does not forward packets (net.ipv4.ip_forward=0)",
    "RP_FILTER": "reverse-path filtering drops packets arriving on an unexpected interface",
    "FIREWALL_DROP": "a firewall rule drops the packet",
    "NETWORK_ISOLATION": "source and destination are on different, isolated networks",
    "ICC_DISABLED": "container-to-container traffic is disabled on this network (enable_icc=false)",
    "NO_NAT": "the packet leaves without masquerade, so replies cannot find their way back",
    "PORT_NOT_PUBLISHED": "the port is not published to the host",
    "NO_LISTENER": "nothing listens on the destination port",
    "LISTENER_LOOPBACK_ONLY": "the server listens on 127.0.0.1 only",
    "MTU_BLACKHOLE": "the packet is larger than a link's MTU on the path",
    "OVERLAY_PEER_UNKNOWN": "the VXLAN device has no forwarding entry for the destination",
    "UNDERLAY_UNREACHABLE": "the VXLAN peer cannot be reached over the underlay",
    "DNS_FAILURE": "the name does not resolve",
    "NETWORK_NONE": "the container has no network (--network none)",
    "APP_ERROR": "the application answered with an error status",
    "SLOW_RESPONSE": "the application answers, but too slowly",
    "PACKET_LOSS": "a rule or link drops a share of the packets",
    "SUBNET_OVERLAP": "two networks use overlapping addresses",
    "FOREIGN_FIREWALL": "another manager's firewall (e.g. Docker's FORWARD policy drop) kills traffic of a network it does not manage",
    "INTERNAL_NETWORK": "the network is internal (--internal): nothing enters or leaves it",
    "HOSTPORT_CONFLICT": "two pods publish the same host port; the first DNAT wins and the other never gets the traffic",
}
