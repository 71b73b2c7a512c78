"""The cluster's store: hosts that share overlay networks, with etcd as the one source of cluster-wide
truth (like Docker's classic overlay with an external KV store, and flannel): no consensus or
gossip of our own. This package is the store and its bookkeeping; joining, leaving and the
per-host agent that programs the kernel from it are runtime.clusterhost, above the overlay driver.

  keys        the key layout below, and key builders (pure)
  store       the etcd v3 client (etcd3gw, the JSON gateway): endpoints with fail-over, short
              timeouts and one clear error when the store is down; transactions, leases, watches
  alloc       planning VNIs, subnets and addresses (pure); the transactions that claim them
  local       this host's membership file under NETDIAG_ROOT (who we are, where the store is)

Key layout (all under /netdiag/v1/, values are JSON unless said otherwise):

  hosts/<host-id>                 {"id", "name", "vtep", "mtu", "joined"}         lease: that host's
  networks/<net-id>               {"Id", "Name", "Subnet", "Gateway", "VNI", "Options", "Labels", "Created"}
  claims/names/<name>             "<net-id>"   a network name is taken (cluster-wide, unique)
  claims/vnis/<vni>               "<net-id>"   a VNI is taken
  claims/subnets/<a.b.c.d>_<len>  "<net-id>"   a subnet is taken; creators compare the whole range,
                                               so two overlapping subnets can never both be claimed
  endpoints/<net-id>/<ep-id>      {"id", "container", "name", "ip", "mac", "host", "aliases"}  lease: its host's
  ips/<net-id>/<ip>               "<ep-id>"    an address is taken                 lease: its host's

Endpoints and their addresses live on their host's lease: a host that dies (or leaves) loses them
within the lease's TTL, and every other agent removes its FDB and ARP entries. A restarted agent
takes a new lease and registers again what its host still runs.

May import runtime.kernel, state, paths, errors, ipam; never runtime.networks or clusterhost
(the overlay driver in runtime.networks imports keys, store, alloc and local)."""
