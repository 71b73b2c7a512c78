"""`system` commands: prune, repair and info."""
import typer

from .app import app

system_app = typer.Typer(help="Manage netdiag itself.", no_args_is_help=True)
app.add_typer(system_app, name="system")


@system_app.command("prune")
def prune(force: bool = typer.Option(False, "-f", "--force", help="Do not ask (always on: prune only removes netdiag's own objects)")):
    """Remove stopped containers, unused networks, untagged images, image blobs nothing refers to,
    unusable records, and everything a killed command left behind.

    Only netdiag's own objects are touched: its records under NETDIAG_ROOT, the cgroups under its
    cgroup parent, its own bridges and nftables tables. Running containers stay."""
    from runtime.containers import lifecycle
    from runtime.images import store as images
    from runtime.networks import bridge, model

    removed = lifecycle.prune()
    for net in model.list_all():
        if net["Driver"] == model.UNREADABLE:  # its record is unusable: remove it and its br-<id>
            bridge.delete(net, force=True)
            removed.append(f"network {net['Name']} (unusable record)")
        elif net["Driver"] == "bridge" and net["Name"] not in model.BUILTIN and not net["Containers"]:
            bridge.delete(net)  # like Docker: user-defined networks no container uses
            removed.append(f"network {net['Name']}")
    removed += _probe_leftovers()
    lines, freed = images.prune("dangling")  # like Docker: untagged images, then unreferenced blobs
    deleted = [line.removeprefix("deleted: ") for line in lines if line.startswith("deleted: ")]
    removed += [f"image {d}" if d.startswith("sha256:") else d for d in deleted]
    for item in removed:
        print(f"Deleted: {item}")
    print(f"Total reclaimed: {len(removed)} object(s), {freed} bytes of image blobs")


@system_app.command("repair")
def repair():
    """Rewrite netdiag's firewall rules from its records, as dockerd does when it starts, and give
    running containers whose monitor died a new one.

    After something removed them (`nft flush ruleset`, a firewall reload, another manager): its
    own nftables tables as a whole, and its accept rules in Docker's DOCKER-USER chain where a
    Docker engine runs. Commands that change networks (run, network create/connect/disconnect/rm)
    do this too; reading commands never do, so a diagnosis sees the host as it is.

    A container whose monitor was killed keeps running unsupervised (`ps` says so); the new monitor
    keeps its logs and health checks again and cleans up when it exits, but cannot learn its exit
    code (only a parent can): that exit is recorded as 255, "exit code unknown"."""
    from runtime.containers import lifecycle
    from runtime.kernel.syscalls import require_root
    from runtime.networks import enforce, model

    require_root("rewrite netdiag's firewall rules")
    model.ensure_builtin_records()
    nets = model.bridges() + model.overlays()
    enforce.apply()
    print(f"netdiag's rules rewritten for {len(nets)} network(s): {', '.join(n['Name'] for n in nets) or 'none'}")
    adopted = lifecycle.adopt_unsupervised()
    if adopted:
        print(f"New monitor for {len(adopted)} container(s) whose monitor had died: {', '.join(adopted)}")


def _probe_leftovers() -> list[str]:
    """What a trace killed with SIGKILL can leave: its nftables trace tables (in any namespace it
    traced: the host, containers, ip netns namespaces) and its private tracefs instance."""
    import os

    from runtime.containers import model as cmodel

    from ..probe import live, nftrace
    from ..probe.tracers import instance_owner_gone

    paths = [None] + [f"/proc/{c.pid}/ns/net" for c in cmodel.list_all() if cmodel.proc_ok(c)]
    if os.path.isdir("/run/netns"):
        paths += [f"/run/netns/{n}" for n in sorted(os.listdir("/run/netns"))]
    out = [f"trace table {t}" for t in nftrace.prune(paths)]
    try:
        for name in live.list_instances():
            if instance_owner_gone(name):
                live.remove_instance(name)
                out.append(f"tracefs instance {name}")
    except OSError:
        pass  # no tracefs here: nothing can be left in it
    return out


@system_app.command("info")
def info():
    """Where netdiag keeps its state and which kernel features it uses."""
    from runtime import paths
    from runtime.containers import cgroups

    print(f"Root dir: {paths.root()}")
    print(f"Cgroup version: {'2' if cgroups.is_v2() else '1'} (parent: {paths.cgroup_parent()})")
    print("Storage driver: overlay (mounted only inside each container's mount namespace)")


@app.command()
def version():
    """Print netdiag's version."""
    from netdiag import __version__

    print(f"netdiag {__version__}")


@app.command()
def demo(keep: bool = typer.Option(False, "--keep", help="Leave the lab running (remove it with its namespaces by hand)")):
    """A guided tour on the built-in defaults, in a throwaway lab namespace (needs root)."""
    from runtime.kernel.syscalls import require_root

    from ..demo import run_demo

    require_root("build the demo lab")
    raise typer.Exit(run_demo(keep))
