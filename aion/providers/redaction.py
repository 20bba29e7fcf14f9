"""What of a provider's own words may reach a task: a short excerpt, scrubbed of the API key in every
form aion can foresee and of anything that looks like a secret it cannot.

A provider's error message is outside input that ends up where every viewer reads it (a task's error,
its attempts, aiond's log). Providers echo what they were sent: OpenAI names the key it refused, and a
proxy in front of a model server may echo it split, escaped or encoded. :func:`excerpt` is the one way
such text gets into a :class:`aion.providers.ProviderError`, in this order:

1. Control and format characters (NUL, zero-width and bidirectional marks, ...) are removed, line
   breaks and other spaces become one space. A key split by NULs or zero-width spaces is then whole
   again, and found below.
2. The text is NFKC-normalised (so full-width letters are letters), and the key is removed, before
   and after normalising, in each of its :func:`key_forms` (verbatim, URL-quoted, base64 and base64url
   at every alignment, hex as plain digits, ``%XX``, ``\\xXX`` or ``&#xXX;``, and ``\\u00XX`` and
   ``&#NNN;`` escapes), matched case-insensitively on letters and digits only, so whatever stands
   between the characters (spaces, dots, dashes, colons, a line wrap) does not hide it.
3. Any run of :data:`OPAQUE_MIN_CHARS` or more token characters (letters, digits and ``+/=_-%``) is
   replaced by :data:`OPAQUE_MARK`: an echo can encode the key in a way no list foresees, and a long
   opaque run is never what a reader needs from an error message.
4. The result is cut to :data:`MAX_EXCERPT_CHARS`.

Text longer than :data:`MAX_SCRUBBED_CHARS` is not quoted at all rather than cut before scrubbing:
a cut could split a copy of the key so that step 2 no longer recognises it. This module never keeps
the text or the key it is given.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote

MAX_EXCERPT_CHARS = 160
"""The most characters of a provider's own message an error quotes."""
MAX_SCRUBBED_CHARS = 8192
"""A provider message longer than this (in characters) is not quoted at all."""
OPAQUE_MIN_CHARS = 24
"""Runs of token characters at least this long are replaced by :data:`OPAQUE_MARK`."""
REDACTED_MARK = "<redacted>"
OPAQUE_MARK = "<opaque>"

# '%' is a token character too, so that a percent-encoded secret is one run rather than many short ones.
_OPAQUE_RUN = re.compile(rf"[A-Za-z0-9+/=_%-]{{{OPAQUE_MIN_CHARS},}}")
_SPACES = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85")
_ESCAPE_OPENERS = frozenset("%\\&#")
_ESCAPE_CLOSERS = frozenset(";=")
_MIN_PROJECTED = 6
"""A form whose letters and digits are fewer than this is only removed where it stands verbatim:
matched across separators, so short a string would blank out ordinary words."""


def excerpt(text: str, secret: str | None) -> str:
    """``text`` (a provider's own message) as an error may quote it: see the module's docstring.
    "" when nothing of it can be shown."""
    if len(text) > MAX_SCRUBBED_CHARS:
        return ""
    cleaned = _visible(text)
    if secret:
        # Before normalising as well as after: NFKC can fold a combining mark into the key's last
        # character, and it can turn full-width look-alikes into the key.
        forms = key_forms(secret)
        cleaned = _without(_visible(unicodedata.normalize("NFKC", _without(cleaned, forms))), forms)
    else:
        cleaned = _visible(unicodedata.normalize("NFKC", cleaned))
    cleaned = _OPAQUE_RUN.sub(OPAQUE_MARK, cleaned)
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > MAX_EXCERPT_CHARS:
        cleaned = cleaned[: MAX_EXCERPT_CHARS - 3].rstrip() + "..."
    return cleaned


def _visible(text: str) -> str:
    """``text`` without control, format, private-use or unassigned characters; breaks and separators
    become spaces."""
    kept: list[str] = []
    for char in text:
        if char.isprintable():
            kept.append(char)
        elif char in _SPACES or unicodedata.category(char)[0] == "Z":
            kept.append(" ")
    return "".join(kept)


def key_forms(secret: str) -> list[str]:
    """The forms in which an echo of ``secret`` can be expected."""
    raw = secret.encode()
    forms = [secret, quote(secret, safe=""), raw.hex(), "".join(f"x{b:02x}" for b in raw)]
    forms.append("".join(f"u{ord(c):04x}" for c in secret))
    forms.append("".join(str(b) for b in raw))
    forms.extend(_base64_forms(raw))
    return forms


def _base64_forms(raw: bytes) -> Iterator[str]:
    """Base64 of ``raw`` as it reads when ``raw`` starts at each offset (mod 3) of larger encoded data:
    the groups that hold nothing but bytes of ``raw``, which are the same whatever follows, and those
    with the last group too, as it reads when ``raw`` ends the data (base64url differs only in
    characters that matching skips)."""
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        first = 4 if offset else 0
        last = 4 * ((offset + len(raw)) // 3)
        if last > first:
            yield encoded[first:last]
        yield encoded[first:]


def _project(text: str) -> tuple[str, list[int]]:
    """The ASCII letters and digits of ``text``, lower-cased, with where each one stands in ``text``."""
    where = [i for i, c in enumerate(text) if c.isascii() and c.isalnum()]
    return "".join(text[i] for i in where).lower(), where


def _without(text: str, forms: list[str]) -> str:
    """``text`` with every occurrence of each form, verbatim or with anything but letters and digits
    between its characters, replaced by :data:`REDACTED_MARK`."""
    spans: list[tuple[int, int]] = []
    for form in forms:
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(form), text, re.IGNORECASE)]
    projected, where = _project(text)
    for form in forms:
        needle = _project(form)[0]
        if len(needle) < _MIN_PROJECTED:
            continue
        start = projected.find(needle)
        while start != -1:
            spans.append(_widened(text, where[start], where[start + len(needle) - 1] + 1))
            start = projected.find(needle, start + 1)
    if not spans:
        return text
    parts: list[str] = []
    done = 0
    for start, end in _merged(spans):
        parts += [text[done:start], REDACTED_MARK]
        done = end
    parts.append(text[done:])
    return "".join(parts)


def _widened(text: str, start: int, end: int) -> tuple[int, int]:
    """A match of letters and digits, widened over the escape marks and padding at its ends
    (``%``, ``\\``, ``&#`` before; ``;`` and ``=`` after), which would otherwise be left dangling."""
    while start > 0 and text[start - 1] in _ESCAPE_OPENERS:
        start -= 1
    while end < len(text) and text[end] in _ESCAPE_CLOSERS:
        end += 1
    return start, end


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


__all__ = [
    "MAX_EXCERPT_CHARS",
    "MAX_SCRUBBED_CHARS",
    "OPAQUE_MARK",
    "OPAQUE_MIN_CHARS",
    "REDACTED_MARK",
    "excerpt",
    "key_forms",
]
