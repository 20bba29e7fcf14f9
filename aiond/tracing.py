"""aiond's trace export: OpenTelemetry's SDK with its OTLP/HTTP (protobuf) exporter, switched on only
when an OTLP endpoint is configured.

Without ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or with
``OTEL_SDK_DISABLED=true``), :func:`exporting` imports nothing of OpenTelemetry and sets nothing up:
:mod:`aion.tracing` stays off and aiond costs what it costs without traces.

With one, every span aiond makes goes through a batch processor to the endpoint. Nothing of it can
hold a task up: a span that ends is put on a bounded queue (``OTEL_BSP_MAX_QUEUE_SIZE``; when it is
full the span is dropped, not waited for), and the exports run in the processor's own thread, each
bounded by a short timeout. At shutdown, after the runtime has closed (so the last tasks' spans are
in), the queue is flushed for at most :data:`FLUSH_SECONDS`.

The settings are OpenTelemetry's own variables, read as its specification defines them (durations in
milliseconds), each checked against a range: a value out of range stops aiond at start with a usage
error naming the variable, rather than being replaced by a default without a word.

- ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: the URL spans are posted to, as given; else
  ``OTEL_EXPORTER_OTLP_ENDPOINT``, a base URL to which ``/v1/traces`` is added. http(s) only.
- ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` (else ``OTEL_EXPORTER_OTLP_TIMEOUT``): one export's timeout,
  retries included, in ms: 100 to 10,000, 2,000 by default.
- ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` (else ``OTEL_EXPORTER_OTLP_PROTOCOL``): http/protobuf or unset.
- ``OTEL_BSP_SCHEDULE_DELAY``: ms between exports, 1 to 60,000, 5,000 by default.
- ``OTEL_BSP_MAX_QUEUE_SIZE``: spans waiting for export, at most; 1 to 65,536, 2,048 by default.
- ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``: spans in one export, 1 to the queue size, 512 by default.

Headers (``OTEL_EXPORTER_OTLP_HEADERS``), TLS files, compression, the sampler (``OTEL_TRACES_SAMPLER``,
parent-based always-on by default) and the resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``;
``service.name`` is ``aiond`` unless they name one) are read by the SDK as it documents them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aion import tracing
from aion.errors import UsageError
from aiond.logs import RateFilter

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("aiond.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
FLUSH_SECONDS = 5.0
"""The most shutdown waits for the spans still queued to be exported."""
MAX_URL = 2048
PROTOCOL = "http/protobuf"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks for traces: an OTLP endpoint is set and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _number(environ: Mapping[str, str], names: tuple[str, ...], low: int, high: int, default: int) -> int:
    found = _first(environ, *names)
    if found is None:
        return default
    name, text = found
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UsageError(
            f"{name}={text[:40]!r}: must be a whole number from {low} to {high}",
            hint=f"set it in that range, or unset it for {default}",
        )
    return value


def _endpoint(environ: Mapping[str, str]) -> str:
    """The URL spans are posted to, checked: an http(s) URL with a host, of bounded length."""
    found = _first(environ, *ENDPOINT_VARIABLES)
    assert found is not None  # only called when wanted() said yes
    name, url = found
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        scheme, host = "", None
    if len(url) > MAX_URL or scheme not in ("http", "https") or not host:
        raise UsageError(
            f"{name}={url[:80]!r}: not an http:// or https:// URL with a host",
            hint="give the OTLP/HTTP address of the collector, for example http://127.0.0.1:4318",
        )
    if name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
        return url
    return url.rstrip("/") + "/v1/traces"


def _check_protocol(environ: Mapping[str, str]) -> None:
    found = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if found is not None and found[1] != PROTOCOL:
        raise UsageError(
            f"{found[0]}={found[1][:40]!r}: aiond exports traces over OTLP/HTTP only",
            hint=f"set it to {PROTOCOL}, or unset it, and point the endpoint at the collector's HTTP port",
        )


def provider(environ: Mapping[str, str], *, version: str) -> TracerProvider:
    """A tracer provider exporting in batches to the configured endpoint (see the module's table)."""
    endpoint = _endpoint(environ)
    _check_protocol(environ)
    timeout_ms = _number(
        environ, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"), 100, 10_000, 2000
    )
    delay_ms = _number(environ, ("OTEL_BSP_SCHEDULE_DELAY",), 1, 60_000, 5000)
    queue = _number(environ, ("OTEL_BSP_MAX_QUEUE_SIZE",), 1, 65_536, 2048)
    batch = _number(environ, ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), 1, queue, min(512, queue))

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_VERSION: version})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "aiond"}))
    # aiond shuts the provider down itself, bounded, in its shutdown order; not at interpreter exit.
    made = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout_ms / 1000)
    made.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=queue,
            schedule_delay_millis=delay_ms,
            max_export_batch_size=batch,
            export_timeout_millis=timeout_ms,
        )
    )
    return made


@contextlib.asynccontextmanager
async def exporting(environ: Mapping[str, str], *, version: str) -> AsyncIterator[bool]:
    """Inside the block, the spans of :mod:`aion.tracing` are made and exported, when ``environ`` asks
    for traces; yields whether it does. On the way out the spans still queued are flushed, for at
    most :data:`FLUSH_SECONDS`."""
    if not wanted(environ):
        yield False
        return
    made = provider(environ, version=version)
    # The SDK logs a line for every span it drops and every export that fails: with a collector
    # down, or a queue full under load, that would be the log's every line.
    quiet = RateFilter("opentelemetry", rate=0.2, burst=5)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    tracing.use(made.get_tracer("aiond", version))
    log.info("traces: exporting to %s", _endpoint(environ))
    try:
        yield True
    finally:
        tracing.use(None)
        if not await _within(made.shutdown, FLUSH_SECONDS):
            log.warning("traces: the last spans were not all exported within %.0f s", FLUSH_SECONDS)
        for handler in handlers:
            handler.removeFilter(quiet)


async def _within(work: Callable[[], object], seconds: float) -> bool:
    """Run ``work`` in a thread of its own; True when it ended within ``seconds``. A daemon thread, so
    that an export still hanging cannot keep the process alive, as an executor's thread would."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def run() -> None:
        try:
            work()
        except Exception:  # the SDK's own failure: logged, and shutdown goes on
            log.exception("traces: shutting the exporter down failed")
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(done.set)

    threading.Thread(target=run, name="aiond-traces-shutdown", daemon=True).start()
    try:
        await asyncio.wait_for(done.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


__all__ = ["ENDPOINT_VARIABLES", "FLUSH_SECONDS", "exporting", "provider", "wanted"]
