"""CNI attachments: `netdiag run --network cni:NAME` wires a container with the real CNI plugins of a
conflist, the way a Kubernetes node's container runtime does (libcni's behaviour, re-done here).

conflist: finding and validating a network configuration list (NETDIAG_CNI_CONF_DIR, CNI_PATH);
invoke: running the plugins with ADD/CHECK/DEL as the CNI spec says, the result cache (libcni's
`cniCacheV1` files); driver: the `cni` network driver behind runtime.networks.drivers, whose
records (`cni:NAME`) hold netdiag's endpoints like a bridge network's; sandbox: ADD/DEL of a pod
sandbox as a kubelet's runtime does it, for attachments netdiag does not own. May import what
runtime.networks may; nothing of runtime.networks imports it but drivers.
"""
