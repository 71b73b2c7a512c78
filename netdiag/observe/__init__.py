"""Observation: read the kernel's real network state into one snapshot (read-only, no subprocesses)."""
