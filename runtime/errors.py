"""One error tree. Every message names the object, says why, and says what to do."""


class NetdiagError(Exception):
    """A user-facing error: the CLI prints it without a traceback and exits `exit_code`."""

    exit_code = 1

    def __init__(self, what: str, why: str = "", fix: str = ""):
        self.what, self.why, self.fix = what, why, fix
        super().__init__(self.render())

    def render(self) -> str:
        what = self.what.strip().rstrip(".") + "."
        rest = [p.strip().rstrip(".") for p in (self.why, self.fix) if p and p.strip()]
        return " ".join([what] + [p[0].upper() + p[1:] + "." for p in rest])


class InvalidArgument(NetdiagError):
    """Bad user input (exit 2, like a usage error)."""

    exit_code = 2


class NotFound(NetdiagError):
    exit_code = 1


class Conflict(NetdiagError):
    exit_code = 1


class PermissionDenied(NetdiagError):
    exit_code = 3


class ImageError(NetdiagError):
    pass


class UnsafeArchive(ImageError):
    """A layer tar tried to write outside its root or to create something a layer must not."""


class BuildError(NetdiagError):
    pass


class ContainerError(NetdiagError):
    pass


class KernelError(NetdiagError):
    """A syscall failed in a way the user can act on (missing feature, permissions)."""

    exit_code = 3
