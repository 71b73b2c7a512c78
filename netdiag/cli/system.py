"""`system` commands: prune, repair and info."""
import typer

from .app import app

system_app = typer.Typer(help="Manage netdiag itself.", no_args_is_help=True, suggest_commands=False)
app.add_typer(system_app, name="system")


@system_app.command("prune")
def prune(force: bool = typer.Option(False, "-f", "--force", help="Do not ask (always on: prune only removes netdiag's own objects)")):
    """Remove stopped containers, unused networks, untagged images, image blobs nothing refers to,
    unusable records, and everything a killed command left behind.

    Only netdiag's own objects are touched: its records under NETDIAG_ROOT, the cgroups under its
    cgroup parent, its own bridges and nftables tables. Running containers stay."""
    from runtime.api import system

    from ..probe.leftovers import prune_leftovers

    pruned = system.prune()
    removed = pruned.removed + prune_leftovers()
    for item in removed:
        print(f"Deleted: {item}")
    print(f"Total reclaimed: {len(removed)} object(s), {pruned.freed} bytes of image blobs")


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
    from runtime.api import system

    done = system.repair()
    print(f"netdiag's rules rewritten for {len(done.networks)} network(s): {', '.join(done.networks) or 'none'}")
    if done.adopted:
        print(f"New monitor for {len(done.adopted)} container(s) whose monitor had died: {', '.join(done.adopted)}")


@system_app.command("info")
def info(json_out: bool = typer.Option(False, "--json", help="Print it as JSON")):
    """Where netdiag keeps its state and which kernel features it uses."""
    from runtime.api import system

    i = system.info()
    if json_out:
        from .output import print_json

        print_json(i)
        return
    print(f"Root dir: {i['DockerRootDir']}")
    print(f"Cgroup version: {i['CgroupVersion']} (parent: {i['CgroupParent']})")
    print(f"Storage driver: {i['Driver']} ({i['DriverStatus']})")


@app.command()
def version():
    """Print netdiag's version."""
    from netdiag import __version__

    print(f"netdiag {__version__}")


@app.command()
def demo(keep: bool = typer.Option(False, "--keep", help="Leave the lab running (remove it with its namespaces by hand)")):
    """A guided tour on the built-in defaults, in a throwaway lab namespace (needs root)."""
    from runtime.api import require_root

    from ..demo import run_demo

    require_root("build the demo lab")
    raise typer.Exit(run_demo(keep))
