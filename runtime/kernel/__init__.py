"""The one kernel boundary: every netlink request and dump, every namespace entry, nftables, sysctls,
the kernel tools still run as programs and the few libc syscalls Python lacks. One module per
kernel object, each on one netlink path. The CNI plugins' pkg/ip + pkg/ns are the model.

  wire         netlink message layouts and attribute numbers (declared once), request, many, dump
  ns           Namespace(path): .inside() (this thread, for a block), .preexec() (a child, before
               exec), .join(); join_process (exec in a container), create/remove, NsidQuery
  link         dump, create, configure (MAC, MTU, master, state), set_port, veth pairs, delete
  bridge       create, ensure (a network's bridge)      vxlan   create, ensure (an overlay's device)
  addr         dump, add, delete                        route   dump, add, replace, delete; rules
  neigh        dump (ARP, FDB), add, replace, delete, permanent ARP entries in bulk
  fdb          a VXLAN device's forwarding entries: append one, replace/remove in bulk
  conntrack    dump                                     sockdiag  listening sockets
  sysctl       read, write                              nft     libnftables (one transaction per script)
  traceevents  a socket subscribed to nftables trace events (decoded by netdiag/probe/nftrace.py)
  tools        tool("nft") -> path or KernelError; run(argv, ns=...) for iptables-nft-save/-restore, nft -f
  syscalls     unshare, setns, mount, pivot_root, sethostname, pid checks (libc via ctypes)

Raw netlink (wire.py) for every object, pyroute2 for none: measured by bench/bench_kernel.py
(2026-12-07, the 2-core VM under load from other jobs, medians of 3 rounds, in a throwaway namespace)
against pyroute2 as the replay used it (an IPRoute per request) and at its best (one IPRoute kept):

  1,000 route adds + 1,000 deletes    raw 190 ms   pyroute2 4,672 ms (24.6x), one socket 2,342 ms (12.3x)
  1,000 neighbour replaces            raw  77 ms   pyroute2 2,407 ms (31.4x), one socket   953 ms (12.4x)
  20 bridges made and deleted         raw 716 ms   pyroute2   853 ms (1.2x),  one socket   756 ms (1.1x)
  20 named namespaces made, removed   raw  32 ms   pyroute2   179 ms (5.6x: it forks a child per namespace)
  20 conntrack dumps of 200 entries   raw 518 ms   pyroute2 1,552 ms (3.0x)
  import, fresh interpreter           runtime.kernel's modules 23 ms, pyroute2's IPRoute 327 ms

pyroute2 loses on every object, most where the runtime and the replay do many small requests
(routes, neighbours); bridges cost the kernel, not the library, so there the import decides. It is
no longer imported by netdiag or the runtime (bench/bench_kernel.py still does, to compare).

Everything acts in the network namespace of the calling thread. May import only runtime.errors
and the standard library.
"""
