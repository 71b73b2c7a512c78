"""nftables trace events: the NFT_MSG_TRACE messages the kernel multicasts on NETLINK_NETFILTER
group NFNLGRP_NFTRACE for packets marked `meta nftrace set 1` (what `nft monitor trace` prints).
`subscribe()` gives a socket that receives them in the calling thread's network namespace; their
decoding is netdiag/probe/nftrace.py's."""
from __future__ import annotations

import socket

from .wire import NETLINK_NETFILTER, SOL_NETLINK

NFNLGRP_NFTRACE = 9
NETLINK_ADD_MEMBERSHIP = 1
SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20  # a probe's events arrive in a burst: room for thousands
NFT_MSG_TRACE = (10 << 8) | 17  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE


def subscribe() -> socket.socket:
    """A non-blocking netlink socket subscribed to this namespace's trace events (raises OSError)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except OSError:  # without CAP_NET_ADMIN: as much as rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)
    except OSError:
        sock.close()
        raise
    return sock
