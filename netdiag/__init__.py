"""netdiag: network diagnostics for containers, and the runtime that runs them."""
__version__ = "0.1.0"
