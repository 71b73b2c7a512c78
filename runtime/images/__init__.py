"""Images: an OCI image layout store (store), layers extracted once and checked against hostile
tars (layers), archives in and out (archive, oci), references by Docker's rules (refs), the
registry digests images were pulled from or pushed as (repodigests), and the built-in busybox
image made from the host's busybox-static (builtin), which is wired into the store here so the store itself depends
on no image source. May import runtime.state, paths, errors, fsroot, kernel; never containers or
build (both are made of images: the store reads which images containers use from their records'
files itself, see store.container_images), never netdiag."""
from . import builtin, store

store.PROVIDERS.append(builtin.provide)
