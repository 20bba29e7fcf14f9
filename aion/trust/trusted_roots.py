"""Sigstore trusted roots: loading one (a user's ``trusted_root.json``, or the production or staging
root that sigstore-python keeps offline), and the validity periods it gives its keys and authorities.

A trusted root is read bounded and parsed once, here; a root that cannot be used is an
:class:`~aion.errors.InputError` on one line that names the file and the field. Its validity periods
are closed intervals (``[start, end]``, the end included, no end meaning open-ended), as the
trusted-root format defines them; :func:`within` is the one place aion compares a time with one.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aion.errors import InputError
from aion.inputs import human_size, read_bounded

if TYPE_CHECKING:
    from sigstore_models.common.v1 import TimeRange
    from sigstore_models.trustroot.v1 import TrustedRoot

MAX_TRUSTED_ROOT_BYTES = 4 << 20
"""Sigstore's public trusted root is about 10 KiB; a few MiB leaves room for many more keys."""


def from_file(path: Path, *, what: str = "trusted root") -> TrustedRoot:
    """The trusted root in ``path`` (``-``: standard input), checked against the trusted-root format.
    ``what`` names it in errors (``"--trusted-root"``)."""
    from pydantic import ValidationError
    from sigstore_models.trustroot.v1 import TrustedRoot

    raw = read_bounded(
        path,
        MAX_TRUSTED_ROOT_BYTES,
        what=what,
        hint=f"give a Sigstore trusted_root.json (at most {human_size(MAX_TRUSTED_ROOT_BYTES)})",
    )
    try:
        return TrustedRoot.from_json(raw)
    except (ValidationError, ValueError) as exc:
        raise InputError(
            f"{what} {path}: not a usable Sigstore trusted root: {one_line(exc)}",
            hint="give a trusted_root.json as Sigstore publishes it (every validFor has a start)",
        ) from exc


def shipped(*, staging: bool) -> TrustedRoot:
    """Sigstore's production (or staging) trusted root, from sigstore-python's offline copy."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import ClientTrustConfig

    # Offline on purpose (verification must not depend on reaching Sigstore's TUF mirror); the
    # library warns about that on every call, which is noise for aion's users.
    logging.getLogger("sigstore._internal.tuf").setLevel(logging.ERROR)
    try:
        config = (
            ClientTrustConfig.staging(offline=True) if staging else ClientTrustConfig.production(offline=True)
        )
    except SigstoreError as exc:
        raise InputError(
            f"Sigstore's {'staging' if staging else 'production'} trusted root cannot be loaded: {exc}",
            hint="give one with --trusted-root",
        ) from exc
    # sigstore-python exposes the parsed root only through the config's model.
    root: TrustedRoot = config._inner.trusted_root
    return root


def within(period: TimeRange | None, time: datetime) -> bool:
    """Whether ``time`` lies in ``period``, both ends included; no period means always valid."""
    if period is None:
        return True
    return period.start <= time and (period.end is None or time <= period.end)


def describe(period: TimeRange | None) -> str:
    """A validity period as a user reads it: ``2023-01-01T00:00:00+00:00 to 2024-01-01T00:00:00+00:00``."""
    if period is None:
        return "always"
    end = period.end.isoformat() if period.end is not None else "no end"
    return f"{period.start.isoformat()} to {end}"


def one_line(exc: Exception) -> str:
    """One line from a parser's (possibly multi-line, pydantic-style) message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "errors.pydantic.dev" not in ln]
    return "; ".join(lines)[:400]


__all__ = ["MAX_TRUSTED_ROOT_BYTES", "describe", "from_file", "one_line", "shipped", "within"]
