"""Image references (NAME[:TAG]) as Docker spells them, validated before they touch the store."""
import re

from ..errors import InvalidArgument

_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def parse_ref(ref: str) -> tuple[str, str]:
    """'busybox' -> ('busybox', 'latest'); 'lab/web:1.0' -> ('lab/web', '1.0')."""
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    if not name or not _NAME.match(name) or len(name) > 255:
        raise InvalidArgument(
            f"Invalid image name {ref!r}",
            "names are lower-case letters, digits and separators (. _ -), with / between path parts",
            "use a name like 'web' or 'lab/web:1.0'",
        )
    if not _TAG.match(tag):
        raise InvalidArgument(
            f"Invalid image tag {tag!r} in {ref!r}",
            "a tag is up to 128 letters, digits, '_', '.' or '-' and cannot start with '.' or '-'",
            "use a tag like 'latest' or '1.0'",
        )
    return name, tag


def normalize(ref: str) -> str:
    name, tag = parse_ref(ref)
    return f"{name}:{tag}"
