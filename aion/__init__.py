"""aion: the core library behind aionctl and aiond.

This package holds domain logic only: no CLI, no server, no global state, and no side effects at import.
It must stay cheap to import, because ``aionctl`` pays for it on every invocation.
"""

from aion._version import __version__

__all__ = ["__version__"]
