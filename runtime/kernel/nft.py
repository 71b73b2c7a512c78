"""A tiny libnftables binding (ctypes): run nft scripts in the calling thread's network namespace.

No subprocess and no `nft` binary: the script goes to libnftables, which sends it to the kernel
as one netlink batch, so a script is applied as a single transaction (all of it or nothing).
"""
import ctypes
import json
import os
import re
import threading

from ..errors import InvalidArgument, KernelError

LIBRARY = "libnftables.so.1"
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")

_lib = None
_lib_lock = threading.Lock()
# libnftables is not thread-safe (its JSON printer and symbol tables are global): two threads in
# it at once abort or crash the process (`check --parallel` reading rulesets did, as SIGSEGV).
# One call at a time; a fork waits for the call in flight, so no child inherits it half-done.
_call_lock = threading.Lock()
os.register_at_fork(before=_call_lock.acquire, after_in_parent=_call_lock.release,
                    after_in_child=_call_lock.release)


def _load():
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError as e:
            raise KernelError(
                f"Cannot load {LIBRARY}",
                f"netdiag programs its firewall through libnftables ({e})",
                "install nftables (apt-get install nftables; scripts/setup does this)",
            ) from None
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.restype = None
        for fn in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_int
        for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_char_p
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
        return lib


def run(script: str, *, json_out: bool = False) -> str:
    """Run an nft script (one transaction) in the current thread's network namespace; return
    nft's output (JSON text when `json_out`). Raises KernelError with nft's own error text."""
    lib = _load()
    data = script.encode()
    if b"\0" in data:
        raise InvalidArgument("Refusing an nft script with a NUL byte", "libnftables reads C strings")
    with _call_lock:
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise KernelError("Cannot create an nftables context", "nft_ctx_new returned NULL (out of memory?)")
        try:
            if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
                raise KernelError("Cannot set up nftables output buffers", "nft_ctx_buffer_output/error failed")
            if json_out:
                lib.nft_ctx_output_set_flags(ctx, lib.nft_ctx_output_get_flags(ctx) | NFT_CTX_OUTPUT_JSON)
            rc = lib.nft_run_cmd_from_buffer(ctx, data)
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        finally:
            lib.nft_ctx_free(ctx)
    if rc != 0:
        first = script.strip().splitlines()[0] if script.strip() else ""
        raise KernelError(
            f"nftables rejected the command {first[:80]!r}",
            err.strip() or f"nft_run_cmd_from_buffer returned {rc}",
            "this needs root (CAP_NET_ADMIN) and nf_tables in the kernel; the error above names the bad part",
        )
    return out


def ruleset_json(family: str | None = None, table: str | None = None) -> dict:
    """`list ruleset` (or `list table FAMILY NAME`) as parsed nft JSON: {"nftables": [...]}."""
    if table is None:
        if family is not None and family not in FAMILIES:
            raise InvalidArgument(f"Unknown nftables family {family!r}", f"expected one of {', '.join(FAMILIES)}")
        cmd = "list ruleset" + (f" {family}" if family else "")
    else:
        if family not in FAMILIES:
            raise InvalidArgument(f"Unknown nftables family {family!r}", f"expected one of {', '.join(FAMILIES)}")
        if not _NAME.fullmatch(table):
            raise InvalidArgument(f"Invalid nftables table name {table!r}", "letters, digits, _ . - only")
        cmd = f"list table {family} {table}"
    out = run(cmd, json_out=True)
    if not out.strip():
        return {"nftables": []}
    return json.loads(out)


__all__ = ["run", "ruleset_json", "KernelError", "NFT_CTX_OUTPUT_JSON", "LIBRARY"]
