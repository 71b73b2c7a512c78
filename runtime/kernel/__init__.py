"""The one kernel boundary: every netlink request and dump, every namespace entry, nftables, sysctls
and the few libc syscalls Python lacks. The CNI plugins' pkg/ip + pkg/ns are the model.

  wire      netlink message layouts and attribute numbers (declared once), request, dump
  ns        netns(path) (this thread, for a block), enter(path) (a child, before exec), NsidQuery
  link      dump, create_veth, veth_to_bridge, set_up, set_hairpin, delete, ensure_bridge (pyroute2)
  addr      dump, ipv4, add          route  dump, rules, subnets, add_default
  neigh     dump (ARP), fdb, permanent ARP entries in bulk (raw)
  fdb       a VXLAN device's forwarding entries in bulk (raw)
  vxlan     an overlay's VXLAN device (pyroute2)        sockdiag  listening sockets
  sysctl    read, write              conntrack dump (pyroute2)
  nft       libnftables (one transaction per script)
  syscalls  unshare, setns, mount, pivot_root, sethostname, pid checks (libc via ctypes)
  objects   what a replay rebuilds: bridges, VXLAN devices, link settings, routes and rules in any
            table, permanent neighbours and FDB entries (pyroute2)

Everything acts in the network namespace of the calling thread. May import only runtime.errors
and the standard library (pyroute2 lazily, where it is the better tool and off the hot path).
"""
