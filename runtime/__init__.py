"""netdiag's container runtime: images, containers, networks, on one kernel boundary.

  api         one function per user action, what the CLI calls (the policy of prune, repair, run)
  kernel      every netlink request and dump, namespace entry, nftables, sysctl, libc syscall
  state       atomic JSON state files and locks under NETDIAG_ROOT (paths)
  images      the OCI image store, layers, archives, the built-in busybox image
  build       the Dockerfile builder (above images and containers: RUN runs a container)
  containers  records, lifecycle, the per-container monitor, confinement, endpoints, cgroups
  networks    network records, ports, the bridge and overlay drivers, the firewall, the embedded DNS
  ipam        address pools and allocation (pure), for networks and the cluster's allocator
  cluster     hosts sharing overlay networks: the etcd store, its keys, allocation, this host's file
  clusterhost this host as a member: join/ls/leave and the per-host agent (above networks)
  daemon      starting the runtime's own helper processes (resolver, agent) with a ready pipe
  records     the one reader of the runtime's records for code outside the runtime
Never imports netdiag.
"""
