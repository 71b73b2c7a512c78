"""Containers: records and their truth (container_records), create/start/stop/rm (lifecycle), the
per-container monitor and init (monitor, rootfs), exec and health checks (execute, health),
confinement (security, seccomp, devices_bpf), cgroups, networks of a container (endpoints) and
teardown (cleanup).
May import runtime.kernel, state, paths, errors, fsroot, ipam, images, networks and cluster;
never build (the builder runs containers)."""
