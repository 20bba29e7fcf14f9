"""Logging setup for aiond: human text, or one JSON object per line for log shippers.

Two things keep the log usable during an incident:

- Malformed HTTP requests (a gRPC client pointed at the HTTP port, a TLS probe, a port scanner) are
  logged by aiohttp as errors with a traceback. They say nothing about aiond's health, so they are
  reduced to one debug line.
- In json mode every line must be JSON, so grpc's C core, which writes straight to the process's
  stderr, is silenced unless GRPC_VERBOSITY is set explicitly (call :func:`prepare_grpc` before grpc
  is imported).

In json mode a line written inside a span (while traces are exported: :mod:`aiond.tracing`) carries
its ``trace_id`` and ``span_id``, so a log search and a trace view lead to each other.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time

from aion import tracing


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, RFC 3339), level, logger, message, the trace and span
    ids when it was written inside a recorded span, and exception text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class BadRequestFilter(logging.Filter):
    """Turns aiohttp's "Error handling request" for unparsable requests into one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or type(exc).__name__ not in (
            "BadHttpMessage",
            "BadStatusLine",
            "HttpProcessingError",
        ):
            return True
        record.msg = "ignored a malformed HTTP request: %s"
        record.args = (str(exc).splitlines()[0],)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def prepare_grpc(fmt: str) -> None:
    """Before grpc is imported: keep its C core off stderr in json mode, unless the user chose."""
    if fmt == "json":
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def configure(level: str, fmt: str) -> None:
    """Send aiond's logs to stderr at ``level`` in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.server").addFilter(BadRequestFilter())


class RateFilter(logging.Filter):
    """On a handler: lets at most ``rate`` records a second (bursts of ``burst``) of the loggers named
    ``prefix`` or below it through, for a library whose lines aiond does not write itself and which
    could otherwise fill the log; others pass. The records held back are counted in :attr:`suppressed`.
    """

    def __init__(self, prefix: str, *, rate: float = 1.0, burst: int = 10) -> None:
        super().__init__()
        self._prefix = prefix
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != self._prefix and not record.name.startswith(self._prefix + "."):
            return True
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return False
        self._tokens -= 1
        return True


class Throttle:
    """At most ``rate`` lines a second (bursts of ``burst``) for one kind of log line; the lines held
    back are counted and the count is told with the next line that gets through. A client that floods
    the daemon with bad calls (undecodable requests, connections it abandons) must not be able to fill
    the disk with the log of them."""

    def __init__(self, logger: logging.Logger, *, rate: float = 1.0, burst: int = 10) -> None:
        self._logger = logger
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0

    def log(self, level: int, message: str, *args: object) -> bool:
        """Log ``message % args`` at ``level`` unless over the rate; True when it was written."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return False
        self._tokens -= 1
        if self.suppressed:
            message += " (%d more like this were not logged)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._logger.log(level, message, *args)
        return True
