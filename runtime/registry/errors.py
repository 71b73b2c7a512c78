"""A registry action's failure, with a cause code so a failed pull can be explained like a trace."""
from __future__ import annotations

from ..errors import NetdiagError

# cause codes (DESIGN.md's catalogue where one fits, registry-specific otherwise)
DNS_FAILURE = "DNS_FAILURE"
CONNECT_FAILED = "CONNECT_FAILED"          # refused, unreachable, timed out: `trace` to the address says why
TLS_UNKNOWN_AUTHORITY = "TLS_UNKNOWN_AUTHORITY"
TLS_NAME_MISMATCH = "TLS_NAME_MISMATCH"
TLS_FAILED = "TLS_FAILED"
UNAUTHORIZED = "UNAUTHORIZED"              # 401: no or wrong credentials
DENIED = "DENIED"                          # 403: credentials lack the scope
NOT_FOUND = "NOT_FOUND"                    # 404: repository, tag or blob
RATE_LIMITED = "RATE_LIMITED"              # 429
BAD_CONTENT = "BAD_CONTENT"                # a digest or size that does not match, a malformed document
REGISTRY_ERROR = "REGISTRY_ERROR"          # any other status


class RegistryError(NetdiagError):
    exit_code = 1

    def __init__(self, what: str, why: str = "", fix: str = "", *, cause: str = REGISTRY_ERROR, detail: dict | None = None):
        self.cause = cause
        self.detail = detail or {}  # what the diagnosis needs: host, port, realm, scope, status...
        super().__init__(what, why, fix)
