"""netdiag's container runtime: images, containers, networks, on one kernel boundary.

  kernel      every netlink request and dump, namespace entry, nftables, sysctl, libc syscall
  state       atomic JSON state files and locks under NETDIAG_ROOT (paths)
  images      the OCI image store, layers, archives, the Dockerfile builder
  containers  records, lifecycle, the per-container monitor, confinement, endpoints, cgroups
  networks    network records, IPAM, the bridge driver, the firewall, the embedded DNS
  records     the one reader of the runtime's records for code outside the runtime
Never imports netdiag.
"""
