"""Identifiers aion makes: ULIDs for events and tasks, which sort by the time they were made."""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time

_B32_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


class _Ulids:
    """ULIDs (48 bits of milliseconds, then 80 random bits, in Crockford base32, so ids sort by time),
    in the spec's monotonic mode: within one millisecond the random part counts up from a fresh random
    start, so ids made in the same millisecond still sort in order and only the first of them costs a
    read of the system's randomness. Encoded with :func:`base64.b32encode` and a translation rather
    than a Python loop over 26 characters: the daemon makes a few of these per task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._millis = -1
        self._random = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._millis = -1  # a forked child must not continue its parent's sequence

    def __call__(self) -> str:
        millis = time.time_ns() // 1_000_000
        with self._lock:
            if millis > self._millis:
                self._millis, self._random = millis, secrets.randbits(80)
            else:  # the same millisecond (or the clock stepped back): count up after the last id
                millis = self._millis
                self._random = (self._random + 1) & ((1 << 80) - 1)
            value = (millis << 80) | self._random
        # 26 characters of 5 bits hold the 128-bit value with 2 leading zero bits: shifted into the top
        # of 160 bits, they are the first 26 characters of its 32-character base32 encoding.
        return base64.b32encode((value << 30).to_bytes(20, "big"))[:26].translate(_B32_TO_CROCKFORD).decode()


ulid = _Ulids()


__all__ = ["ulid"]
