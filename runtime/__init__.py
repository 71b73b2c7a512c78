"""netdiag's container runtime: images, containers, networks, on one kernel boundary.

  api         one function per user action, what the CLI calls (the policy of prune, repair, run)
  kernel      every netlink request and dump, namespace entry, nftables, sysctl, libc syscall
  state       atomic JSON state files and locks under NETDIAG_ROOT (paths)
  images      the OCI image store, layers, archives, the Dockerfile builder
  containers  records, lifecycle, the per-container monitor, confinement, endpoints, cgroups
  networks    network records, IPAM, the bridge and overlay drivers, the firewall, the embedded DNS
  cluster     hosts sharing overlay networks: etcd as the store, membership, the per-host agent
  daemon      starting the runtime's own helper processes (resolver, agent) with a ready pipe
  records     the one reader of the runtime's records for code outside the runtime
Never imports netdiag.
"""
