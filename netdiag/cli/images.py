"""Image commands: images, image ls|inspect|rm, rmi, import, save, load (and build, in build.py)."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from .app import app
from .output import inspected, listing

image_app = typer.Typer(help="Manage images.", no_args_is_help=True, suggest_commands=False)
app.add_typer(image_app, name="image")


@app.command("images")
@image_app.command("ls")
def images_(
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only ids"),
    format: Optional[str] = typer.Option(None, "--format", help="'json' (a JSON object per line), 'table', or a Go template, e.g. '{{.Repository}}:{{.Tag}}'"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json"),
    digests: bool = typer.Option(False, "--digests", help="Show the registry's manifest digest (pulled or pushed images)"),
):
    """List images."""
    from runtime.api import images

    rows = images.listing()
    for r in rows:  # on stderr, so scripts reading the list still get only the list
        if "Error" in r:
            shown = f"{r['Repository']}:{r['Tag']}" if r["Tag"] != "<none>" else r["ID"]
            print(f"netdiag: warning: image {shown} is damaged: {r['Error']}. Remove it with 'netdiag rmi {shown}'", file=sys.stderr)
    columns = [("REPOSITORY", "Repository"), ("TAG", "Tag"), *([("DIGEST", "Digest")] if digests else []),
               ("IMAGE ID", "ID"), ("CREATED", "CreatedSince"), ("SIZE", "Size")]
    listing(rows, columns,
            quiet=quiet, as_json=json_out, format_=format, headers={"CreatedAt": "CREATED AT", "Digest": "DIGEST"})


@image_app.command("inspect")
def image_inspect(
    images_: List[str] = typer.Argument(..., metavar="IMAGE...", help="Image names or ids"),
    format_: Optional[str] = typer.Option(None, "-f", "--format", help="A Go template run on each image, e.g. '{{.Config.Cmd}}'; 'json' for a JSON line each"),
):
    """Low-level JSON about images (config, layers, history)."""
    from runtime.api import images

    inspected(images_, images.inspect, format_)


@app.command("rmi")
@image_app.command("rm")
def image_rm(
    images_: List[str] = typer.Argument(..., metavar="IMAGE...", help="Image names or ids"),
    force: bool = typer.Option(False, "-f", "--force", help="Remove even if containers use it"),
):
    """Remove images (refused while a container uses one)."""
    from runtime.api import images

    for ref in images_:
        for line in images.remove(ref, force=force):
            print(line)


@app.command("import")
def import_(
    file: str = typer.Argument(..., help="A root filesystem tar (or tar.gz); '-' for stdin"),
    reference: Optional[str] = typer.Argument(None, help="NAME[:TAG] for the new image"),
    change: List[str] = typer.Option([], "-c", "--change", help="Apply a Dockerfile instruction: CMD, ENV, WORKDIR, ENTRYPOINT, EXPOSE, USER, LABEL"),
):
    """Make a one-layer image from a root filesystem tar (like `docker import`)."""
    from runtime.api import images

    images.changes(change)  # a bad --change is refused before the tar is read
    with _open_in(file) as f:
        img = images.import_rootfs(f, reference, change, name=file)
    print(img.id)


class _open_in:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        import os
        import stat

        from runtime.errors import InvalidArgument

        if self.name == "-":
            f = sys.stdin.buffer
        else:
            try:
                f = self.f = open(self.name, "rb")  # a FIFO blocks until its writer comes: a stream, like stdin
            except OSError as e:
                raise InvalidArgument(f"Cannot read {self.name}", e.strerror or str(e), "check the path") from None
        mode = os.fstat(f.fileno()).st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode):  # /dev/zero would be copied until the disk is full
            what = "a directory" if stat.S_ISDIR(mode) else "a terminal" if os.isatty(f.fileno()) else "a device"
            raise InvalidArgument(f"Cannot read {'standard input' if self.name == '-' else self.name}", f"it is {what}, not a tar archive",
                                  "give a tar file, or pipe one in")
        return f

    def __exit__(self, *exc):
        if self.name != "-":
            self.f.close()


@app.command("save")
@image_app.command("save")
def save(
    images_: List[str] = typer.Argument(..., metavar="IMAGE...", help="Images to save"),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Write to FILE instead of stdout"),
):
    """Write images to a tar in the OCI image layout."""
    from runtime.api import images
    from runtime.errors import InvalidArgument

    if output is None and sys.stdout.isatty():
        raise InvalidArgument("Refusing to write a tar to a terminal", "", "use -o FILE or redirect stdout")
    if output is None:
        images.save(images_, sys.stdout.buffer)
    else:
        images.save_to(images_, output)


@app.command("load")
@image_app.command("load")
def load(input_: Optional[str] = typer.Option(None, "-i", "--input", help="Read from FILE instead of stdin")):
    """Load images from a tar written by `netdiag save` or `docker save` (OCI or Docker's older layout)."""
    from runtime.api import images

    with _open_in(input_ or "-") as f:
        for line in images.load(f, input_ or "-"):
            print(line)


@image_app.command("prune")
def image_prune(
    all_: bool = typer.Option(False, "-a", "--all", help="Remove every image no container uses, not only untagged ones"),
    force: bool = typer.Option(False, "-f", "--force", help="Do not ask (always on: prune never removes an image a container uses)"),
):
    """Remove untagged images (all unused ones with -a), then every blob and extracted layer no image,
    container or build cache entry refers to, and what killed commands left half-written."""
    from runtime.api import images

    lines, freed = images.prune(all_)
    print_prune(lines, freed)


def print_prune(lines: list, freed: int) -> None:
    """Docker's prune report."""
    if lines:
        print("Deleted Images:")
        for line in lines:
            print(line)
        print()
    from runtime.api.images import human_size

    print(f"Total reclaimed space: {human_size(freed)}")
