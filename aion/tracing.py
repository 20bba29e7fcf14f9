"""Traces: the spans aion makes along a task's path, and the W3C trace context it carries to providers,
into events and into log lines.

Tracing is off until a tracer is handed to :func:`use` (aiond does so when an OTLP endpoint is
configured: :mod:`aiond.tracing`). While it is off, nothing here imports OpenTelemetry: every function
answers from one module global, :func:`span` hands out one shared context manager that does nothing,
and no context is looked up. So aionctl, whose start-up is part of its interface, and an aiond without
OTLP pay nothing for the calls that sit on the hot path.

Any part of aion or aiond may import this module (it imports no other part of aion):

- :func:`span`: a span around a block, current inside it (its children nest under it).
- :func:`incoming`: a server span that continues the caller's trace from its ``traceparent``.
- :func:`publishing`: a producer span around handing a batch of events to a broker, as a block.
- :func:`delivery`: a producer span for one message, ended when its delivery report comes (aiond's
  Kafka relay produces from one thread and hears back in callbacks).
- :func:`inject`, :func:`message_headers`: the current trace context, for an outgoing HTTP request or
  a Kafka message.
- :func:`current_ids`, :func:`trace_id`: the ids of the current span, for events and log lines.
- :func:`fail`: mark a span failed, with a stable error type.

Only the W3C ``traceparent``/``tracestate`` pair is read and written, whatever OTEL_PROPAGATORS says:
baggage a client sends is not forwarded to model providers, which are third parties.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Kind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]


class SpanLike(Protocol):
    """What code that makes a span may do with it; OpenTelemetry's spans are ones, and so is the span
    that stands in while tracing is off (it records nothing)."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None: ...

    def set_status(self, status: Any, description: str | None = None) -> None: ...

    def is_recording(self) -> bool: ...


class _Quiet:
    """The span of a block while tracing is off."""

    __slots__ = ()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        pass

    def set_status(self, status: Any, description: str | None = None) -> None:
        pass

    def is_recording(self) -> bool:
        return False


_QUIET: AbstractContextManager[SpanLike] = contextlib.nullcontext(_Quiet())
"""nullcontext can be entered any number of times, also concurrently: one serves every block."""


@dataclasses.dataclass(frozen=True, slots=True)
class _On:
    tracer: Tracer
    trace: Any
    """The opentelemetry.trace module, kept so that the functions below need no import of their own."""
    kinds: Mapping[str, Any]
    propagator: TraceContextTextMapPropagator
    empty: Callable[[], Context]


_on: _On | None = None


def use(tracer: Tracer | None) -> None:
    """Make spans with ``tracer`` from now on; None turns tracing off again."""
    global _on  # noqa: PLW0603 - the one switch, set at start-up and at shutdown
    if tracer is None:
        _on = None
        return
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    kinds = {kind.name.lower(): kind for kind in trace.SpanKind}
    _on = _On(tracer, trace, kinds, TraceContextTextMapPropagator(), Context)


def active() -> bool:
    """Whether spans are being made."""
    return _on is not None


def span(
    name: str, *, kind: Kind = "internal", attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[SpanLike]:
    """A span named ``name`` around a ``with`` block, the current span inside it. An exception that
    leaves the block marks the span failed with the exception's type; its traceback is not recorded
    (exception texts may quote what a provider or a module sent)."""
    on = _on
    if on is None:
        return _QUIET
    started: AbstractContextManager[SpanLike] = on.tracer.start_as_current_span(
        name, kind=on.kinds[kind], attributes=attributes, record_exception=False
    )
    return started


def incoming(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, AttributeValue] | None = None
) -> AbstractContextManager[SpanLike]:
    """A server span for a request that carried ``carrier`` (its headers or gRPC metadata, keys in
    lower case): a child of the caller's span when a valid ``traceparent`` is among them, else the
    root of a new trace. An exception leaving the block does not mark it failed: :func:`fail` does,
    when the outcome is the server's failure."""
    on = _on
    if on is None:
        return _QUIET
    # Extracted into an empty context, so that without a valid traceparent the span is a root
    # whatever context the server's task was started in.
    parent = on.propagator.extract(carrier, context=on.empty())
    # Its status is the caller's to set (an exception may be a refusal, which is no server failure).
    started: AbstractContextManager[SpanLike] = on.tracer.start_as_current_span(
        name,
        context=parent,
        kind=on.kinds["server"],
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )
    return started


def publishing(
    destination: str, *, messages: int = 1, system: str = "kafka", key: str | None = None
) -> AbstractContextManager[SpanLike]:
    """A producer span around handing ``messages`` events to the topic ``destination`` of a broker
    (``system``, as OpenTelemetry's messaging conventions name it), until the broker has confirmed
    them. ``key`` is the message key when there is one message. Use :func:`fail` on it when the
    delivery failed, and :func:`message_headers` inside it to let consumers continue the trace."""
    if _on is None:
        return _QUIET
    attributes: dict[str, AttributeValue] = {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
    if messages != 1:
        attributes["messaging.batch.message_count"] = messages
    elif key is not None:
        attributes[f"messaging.{system}.message.key"] = key
    return span(f"send {destination}", kind="producer", attributes=attributes)


class Delivery(Protocol):
    """One message on its way to a broker: the trace context to send with it, and the end of its span."""

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The message's span as Kafka headers (``traceparent``); empty while tracing is off."""
        ...

    def end(self, error_type: str | None = None, message: str = "") -> None:
        """The broker confirmed the message (``error_type`` None) or refused it (a stable name: the
        client's error name, say, with ``message`` its text). Call it once."""
        ...


class _QuietDelivery:
    __slots__ = ()

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def end(self, error_type: str | None = None, message: str = "") -> None:
        pass


_NO_DELIVERY = _QuietDelivery()


class _Delivery:
    __slots__ = ("_span", "headers")

    def __init__(self, span: Any, on: _On) -> None:
        self._span = span
        carrier: dict[str, str] = {}
        on.propagator.inject(carrier, context=on.trace.set_span_in_context(span))
        self.headers = [(name, value.encode()) for name, value in carrier.items()]

    def end(self, error_type: str | None = None, message: str = "") -> None:
        if error_type is not None:
            fail(self._span, error_type, message)
        self._span.end()


def delivery(
    destination: str, *, key: str | None = None, event_id: str | None = None, system: str = "kafka"
) -> Delivery:
    """A producer span for one message to the topic ``destination``, started now (as a child of the
    current span, if there is one) and ended by :meth:`Delivery.end`, from any thread. ``key`` is the
    message key, ``event_id`` the event's id. Send :attr:`Delivery.headers` with the message."""
    on = _on
    if on is None:
        return _NO_DELIVERY
    attributes: dict[str, AttributeValue] = {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
    if key is not None:
        attributes[f"messaging.{system}.message.key"] = key
    if event_id is not None:
        attributes["messaging.message.id"] = event_id
    started = on.tracer.start_span(f"send {destination}", kind=on.kinds["producer"], attributes=attributes)
    return _Delivery(started, on)


def fail(span: SpanLike, error_type: str, message: str = "") -> None:
    """Mark ``span`` failed: ``error.type`` (a stable, low-cardinality name such as an error code) and
    an error status with ``message`` (already fit to be read by anyone who may read the trace)."""
    on = _on
    if on is None or not span.is_recording():
        return
    span.set_attribute("error.type", error_type)
    status = on.trace.Status(on.trace.StatusCode.ERROR, message[:500] or None)
    span.set_status(status)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to ``headers`` (``traceparent``, and ``tracestate`` when the
    trace has one); nothing when tracing is off or there is no current span."""
    on = _on
    if on is not None:
        on.propagator.inject(headers)


def message_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka message headers; empty when tracing is off."""
    headers: dict[str, str] = {}
    inject(headers)
    return [(name, value.encode()) for name, value in headers.items()]


def current_ids() -> tuple[str, str] | None:
    """(trace id as 32 hex digits, span id as 16) of the current span, when there is one whose trace
    is recorded (sampled); None otherwise, and always while tracing is off."""
    on = _on
    if on is None:
        return None
    context = on.trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def trace_id() -> str | None:
    """The current span's trace id (32 hex digits), as :func:`current_ids` finds it; else None."""
    ids = current_ids()
    return ids[0] if ids is not None else None


__all__ = [
    "AttributeValue",
    "Delivery",
    "Kind",
    "SpanLike",
    "active",
    "current_ids",
    "delivery",
    "fail",
    "incoming",
    "inject",
    "message_headers",
    "publishing",
    "span",
    "trace_id",
    "use",
]
