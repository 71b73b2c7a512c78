"""A pod sandbox's network the way a Kubernetes node's container runtime (containerd, CRI-O, under
the kubelet) makes it, for attachments netdiag does not own: the plugins of a conflist ADDed to a
namespace someone else made (/run/netns/cni-<uuid>), with the kubelet's `portMappings` (hostPort),
cached in libcni's format where netdiag's discovery reads it; DEL with the cached configuration.

Worlds build other runtimes' pods with it, in the namespace of the host they play:

    python -m runtime.networks.cni.sandbox add NET CONTAINER_ID NETNS [HOSTPORT:PORT[/PROTO] ...]
    python -m runtime.networks.cni.sandbox del NET CONTAINER_ID NETNS

`add` prints the plugins' result (JSON); both exit 1 with the plugin's error on stderr.
"""
from __future__ import annotations

import json
import re
import sys

from ...errors import InvalidArgument, NetdiagError
from . import conflist, invoke

IFNAME = "eth0"  # the kubelet's interface name for a pod's primary network


def port_mapping(spec: str) -> dict:
    """'8080:80' or '8080:80/udp' as a CNI portMappings entry (a pod's hostPort)."""
    m = re.fullmatch(r"(\d{1,5}):(\d{1,5})(?:/(tcp|udp|sctp))?", spec)
    if not m or not all(0 < int(p) < 65536 for p in m.group(1, 2)):
        raise InvalidArgument(f"Invalid port mapping {spec!r}", "", "use HOSTPORT:CONTAINERPORT[/tcp|udp|sctp]")
    return {"hostPort": int(m[1]), "containerPort": int(m[2]), "protocol": m[3] or "tcp"}


def add(net: str, container_id: str, netns: str, port_mappings: list[dict] = ()) -> dict:
    conf = conflist.load(net)
    caps = {"portMappings": list(port_mappings)} if port_mappings else {}
    return invoke.add(conf, invoke.RuntimeConf(container_id, netns, IFNAME, caps))


def delete(net: str, container_id: str, netns: str) -> None:
    invoke.delete_attachment(net, container_id, IFNAME, netns)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] not in ("add", "del") or (argv[0] == "del" and len(argv) != 4):
        print(__doc__, file=sys.stderr)
        return 2
    command, net, cid, netns = argv[:4]
    try:
        conflist.check_name(cid, "container id")
        if command == "add":
            print(json.dumps(add(net, cid, netns, [port_mapping(p) for p in argv[4:]])))
        else:
            delete(net, cid, netns)
    except NetdiagError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
