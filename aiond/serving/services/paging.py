"""Pages of list answers: every list the daemon returns is bounded, and a client reads the rest page
by page. A page token is the key of the last item of the page before (opaque to clients), so pages
stay consistent while items come and go."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import TypeVar

from aion.errors import UsageError

DEFAULT_PAGE = 100
MAX_PAGE = 1000
_T = TypeVar("_T")


def page(items: Iterable[_T], key: Callable[[_T], str], *, size: int, token: str) -> tuple[list[_T], str]:
    """The items after ``token`` in key order, at most ``size`` of them (0: the default), and the
    token of the next page ("" when this is the last)."""
    limit = min(size or DEFAULT_PAGE, MAX_PAGE)
    after = _decode(token) if token else None
    ordered = sorted(items, key=key)
    start = 0
    if after is not None:
        start = next((i for i, item in enumerate(ordered) if key(item) > after), len(ordered))
    chosen = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return chosen, (_encode(key(chosen[-1])) if more and chosen else "")


def _encode(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode(token: str) -> str:
    if len(token) > 2048:
        raise UsageError("page_token is not one this server gave")
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise UsageError("page_token is not one this server gave") from None


__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "page"]
