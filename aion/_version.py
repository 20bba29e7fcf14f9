"""The single source of aion's version; kept import-free so `aionctl --version` stays fast."""

__version__ = "0.1.0"
