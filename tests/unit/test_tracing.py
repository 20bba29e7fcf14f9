"""aion.tracing with OpenTelemetry's real SDK behind it (spans kept in memory), and with nothing behind
it: the ids that reach events and log lines, the trace context that goes out and comes in, the span
the event relay makes, and the promise that tracing off loads nothing of OpenTelemetry."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aion import envelopes, tracing
from aiond.logs import JsonFormatter, RateFilter
from tests.integration.supply import conforms

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def finished() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span kept in memory when it ends; off again after the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider.get_tracer("test"))
    yield exporter
    tracing.use(None)
    provider.shutdown()


def record(message: str) -> dict[str, object]:
    line = JsonFormatter().format(logging.LogRecord("aiond", logging.INFO, __file__, 1, message, (), None))
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_off_everything_answers_nothing() -> None:
    assert not tracing.active()
    with tracing.span("x") as span:
        span.set_attribute("k", 1)
        tracing.fail(span, "E")
        assert not span.is_recording()
        assert tracing.current_ids() is None
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}
    assert tracing.message_headers() == []
    assert "trace_id" not in envelopes.event("aion.tasks.lifecycle", task_id="t")
    assert "trace_id" not in record("hello")


def test_events_and_log_lines_carry_the_ids_of_the_span_they_are_made_in(
    finished: InMemorySpanExporter,
) -> None:
    assert "trace_id" not in record("outside")
    with tracing.span("work") as span:
        ids = tracing.current_ids()
        assert ids is not None
        line = record("inside")
        task_event = envelopes.event("aion.tasks.lifecycle", task_id="t")
        audit = envelopes.audit(principal="p", action="policy.apply", target="3", outcome="success")
    context = span.get_span_context()  # type: ignore[attr-defined]
    assert ids == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert (line["trace_id"], line["span_id"]) == ids
    assert task_event["trace_id"] == audit["trace_id"] == ids[0]
    conforms(audit, "events/audit")


def test_a_server_span_continues_the_callers_trace_and_its_context_goes_out(
    finished: InMemorySpanExporter,
) -> None:
    with tracing.incoming("svc/Method", {"traceparent": TRACEPARENT}), tracing.span("call", kind="client"):
        outgoing: dict[str, str] = {}
        tracing.inject(outgoing)
    call, server = finished.get_finished_spans()
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None
    assert server.parent.span_id == 0xB7AD6B7169203331
    assert server.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert call.parent is not None
    assert call.parent.span_id == server.context.span_id
    assert outgoing == {"traceparent": f"00-{server.context.trace_id:032x}-{call.context.span_id:016x}-01"}


@pytest.mark.parametrize("carrier", [{}, {"traceparent": "00-zz-yy-01"}, {"traceparent": "x" * 10_000}])
def test_without_a_valid_traceparent_the_server_span_starts_a_trace(
    finished: InMemorySpanExporter, carrier: dict[str, str]
) -> None:
    with tracing.incoming("svc/Method", carrier):
        pass
    (server,) = finished.get_finished_spans()
    assert server.parent is None


def test_a_refusal_leaving_a_server_span_is_not_its_failure(finished: InMemorySpanExporter) -> None:
    with pytest.raises(PermissionError), tracing.incoming("svc/Method", {}):
        raise PermissionError("no")
    with pytest.raises(RuntimeError), tracing.span("inner"):
        raise RuntimeError("broken")
    server, inner = finished.get_finished_spans()
    assert server.status.status_code is StatusCode.UNSET
    assert inner.status.status_code is StatusCode.ERROR
    assert inner.events == ()  # no traceback recorded: exception texts may quote what others sent


def test_the_relay_span_names_its_topic_and_its_context_rides_with_the_messages(
    finished: InMemorySpanExporter,
) -> None:
    with tracing.publishing("aion.audit.activity", messages=3) as span:
        headers = tracing.message_headers()
        tracing.fail(span, "_MSG_TIMED_OUT", "the broker did not confirm in time")
    with tracing.publishing("aion.tasks.lifecycle", key="01TASK"):
        pass
    batch, single = finished.get_finished_spans()
    assert (batch.name, batch.kind) == ("send aion.audit.activity", SpanKind.PRODUCER)
    assert batch.attributes is not None
    assert single.attributes is not None
    assert batch.attributes["messaging.system"] == "kafka"
    assert batch.attributes["messaging.destination.name"] == "aion.audit.activity"
    assert batch.attributes["messaging.batch.message_count"] == 3
    assert batch.attributes["error.type"] == "_MSG_TIMED_OUT"
    assert batch.status.status_code is StatusCode.ERROR
    assert single.attributes["messaging.kafka.message.key"] == "01TASK"
    ((name, value),) = headers
    # The flags are the trace's own (sampled, and the SDK's random trace id): only the ids are ours.
    assert name == "traceparent"
    assert value.startswith(f"00-{batch.context.trace_id:032x}-{batch.context.span_id:016x}-".encode())


def test_one_message_is_a_span_from_its_produce_to_its_delivery_report(
    finished: InMemorySpanExporter,
) -> None:
    sent = tracing.delivery("aion.router.decisions", key="01TASK", event_id="01EVENT")
    refused = tracing.delivery("aion.audit.activity")
    assert finished.get_finished_spans() == ()  # open until the reports come
    sent.end()
    refused.end("_MSG_TIMED_OUT", "Local: Message timed out")
    ok, failed = finished.get_finished_spans()
    assert (ok.name, ok.kind, ok.parent) == ("send aion.router.decisions", SpanKind.PRODUCER, None)
    assert ok.attributes is not None
    assert ok.attributes["messaging.kafka.message.key"] == "01TASK"
    assert ok.attributes["messaging.message.id"] == "01EVENT"
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    ((name, value),) = sent.headers
    assert name == "traceparent"
    assert value.startswith(f"00-{ok.context.trace_id:032x}-{ok.context.span_id:016x}-".encode())


def test_off_a_delivery_is_nothing() -> None:
    off = tracing.delivery("aion.audit.activity", key="k")
    assert off.headers == []
    off.end("_TRANSPORT")


def test_the_rate_filter_holds_back_a_noisy_library_only() -> None:
    quiet = RateFilter("opentelemetry", rate=0.0, burst=2)

    def passes(name: str) -> bool:
        return quiet.filter(logging.LogRecord(name, logging.WARNING, __file__, 1, "m", (), None))

    assert [passes("opentelemetry.sdk") for _ in range(4)] == [True, True, False, False]
    assert passes("aiond")
    assert passes("opentelemetryx")
    assert quiet.suppressed == 2


def test_without_an_endpoint_aiond_loads_nothing_of_opentelemetry() -> None:
    code = (
        "import asyncio, sys\n"
        "import aiond.serving.server\n"
        "from aiond.tracing import exporting\n"
        "async def main():\n"
        "    async with exporting({'OTEL_BSP_SCHEDULE_DELAY': '1'}, version='0') as on:\n"
        "        return on\n"
        "on = asyncio.run(main())\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry')\n"
        "print(on, loaded)\n"
        "sys.exit(1 if on or loaded else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "},
        {},
    ],
)
def test_traces_are_wanted_only_with_an_endpoint_and_the_sdk_enabled(environ: dict[str, str]) -> None:
    from aiond.tracing import wanted

    assert not wanted(environ)
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
