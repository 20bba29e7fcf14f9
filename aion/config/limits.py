"""The bounds on what one config file may make aion do, by default: its size, the nodes its YAML
expands to (alias bombs), and its nesting depth. Light to import: the CLI's options name them."""

from __future__ import annotations

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_NODES = 2_000_000
DEFAULT_MAX_DEPTH = 100

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH", "DEFAULT_MAX_NODES"]
