"""The cluster: hosts that share overlay networks, with etcd as the one source of cluster-wide truth
(like Docker's classic overlay with an external KV store, and flannel): no consensus or gossip of
our own. Each member host runs a small agent (agent.py) that keeps its membership lease alive,
watches the store and programs the kernel (VXLAN FDB and ARP entries, the VTEP firewall guard).

  keys        the key layout below, and key builders (pure)
  store       the etcd v3 client (etcd3gw, the JSON gateway): endpoints with fail-over, short
              timeouts and one clear error when the store is down; transactions, leases, watches
  alloc       planning VNIs, subnets and addresses (pure); the transactions that claim them
  local       this host's membership file under NETDIAG_ROOT (who we are, where the store is)
  membership  join (checks --advertise), ls, leave
  agent       the per-host process (python -m runtime.cluster.agent)

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

May import runtime.kernel, state, paths, errors; of runtime.networks, alloc uses the pure ipam and
membership and agent drive the overlay driver (which imports keys, store, alloc and local)."""
