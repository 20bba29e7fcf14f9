"""Traces end to end: a real aiond exporting its spans over OTLP/HTTP (protobuf) to a receiver the test
runs, while a task submitted over gRPC with the caller's ``traceparent`` reaches a stand-in provider.

The spans must link up as one trace: the caller's span, aiond's server span under it, the decision and
the attempt under that, the provider call under the attempt; the provider must have been sent the
``traceparent`` of that call, and the task's events must name the trace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from aion.api.v1 import common_pb2, modules_pb2, modules_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from tests.integration.supply import conforms, make_signer, write_sbom
from tests.rig.daemon import EXAMPLES, Aiond, aionctl, clean_env, program
from tests.rig.procs import free_port, poll
from tests.rig.providers import StandIn
from tests.rig.services import GoTools, OciRegistry

START_TIMEOUT = 10.0
SCHEMAS = {"aion.router.decisions": "events/decision", "aion.tasks.lifecycle": "events/lifecycle"}


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """One span as the receiver got it, ids in hex."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    status: str
    service: str


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``
    (protobuf), answered as a collector answers. It runs on its own event loop in a thread."""

    def __init__(self, *, answer: bool = True) -> None:
        """``answer=False``: take every export and never answer it, as a collector that hangs does."""
        self._answer = answer
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otlp-receiver", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def _export(self, request: web.Request) -> web.Response:
        if not self._answer:
            with self._lock:
                self.requests += 1
            await asyncio.Event().wait()  # until the receiver stops (its handlers are cancelled)
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        message = ExportTraceServiceRequest.FromString(await request.read())
        received: list[Span] = []
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        Span(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=ProtoSpan.SpanKind.Name(span.kind),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status=span.status.StatusCode.Name(span.status.code),
                            service=str(resource.get("service.name")),
                        )
                    )
        with self._lock:
            self._spans.extend(received)
            self.requests += 1
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def _serve(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(START_TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._loop.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


def traced_env(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    """aiond (started after this) exports to ``receiver``, every 50 ms."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)


def provider_config(root: Path, stand_in: StandIn) -> Path:
    """The example config set with every model provider at the stand-in, keys from a files backend."""
    config = root / "config"
    shutil.copytree(EXAMPLES, config, ignore=shutil.ignore_patterns("modules"))
    secrets_dir = root / "secrets"
    secrets_dir.mkdir()
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "HF_TOKEN"):
        (secrets_dir / name).write_text("sk-stand-in-0123456789\n")
    models = yaml.safe_load((config / "models.yml").read_text())
    models["providers"] = {
        "ollama": {"base_url": stand_in.url, "locality": "local", "timeout_ms": 2000},
        "vllm": {"base_url": stand_in.url, "locality": "local", "timeout_ms": 2000},
        "openai": {"base_url": stand_in.url, "api_key_secret": "OPENAI_API_KEY", "timeout_ms": 2000},
        "azure": {"base_url": stand_in.url, "api_key_secret": "AZURE_OPENAI_API_KEY", "timeout_ms": 2000},
        "hf": {"base_url": stand_in.url, "api_key_secret": "HF_TOKEN", "timeout_ms": 2000},
    }
    models["secrets"] = {"backend": "files", "directory": str(secrets_dir)}
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    assert aionctl("validate", str(config)).returncode == 0
    return config


def caller_context() -> tuple[str, str, str]:
    """A trace id, the caller's span id, and the traceparent that carries them (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def submit(daemon: Aiond, intent: str, text: str, traceparent: str, **hints: Any) -> tasks_pb2.Task:
    request = tasks_pb2.SubmitTaskRequest(
        intent=intent, input=tasks_pb2.TaskInput(text=text), hints=tasks_pb2.RoutingHints(**hints), wait=True
    )
    with daemon.channel("operator") as channel:
        reply: tasks_pb2.SubmitTaskResponse = tasks_pb2_grpc.TaskServiceStub(channel).SubmitTask(
            request, timeout=30, metadata=(("traceparent", traceparent),)
        )
    return reply.task


def task_events(daemon: Aiond, task_id: str) -> list[dict[str, Any]]:
    """The task's decision and lifecycle events, once its end has been recorded."""

    def ended() -> list[dict[str, Any]] | None:
        result = aionctl(
            "events", "tail", "-o", "json", "-n", "100",
            "--topic", "aion.router.decisions", "--topic", "aion.tasks.lifecycle",
            env=daemon.aionctl_env("viewer"),
        )  # fmt: skip
        mine = [e for e in map(json.loads, result.stdout.splitlines()) if e.get("task_id") == task_id]
        return mine if any(e.get("status") == "ok" for e in mine) else None

    return poll(ended, timeout=15, what="the task's events")


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def without_envelope(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("apiVersion", "kind", "sequence")}


def test_a_task_is_one_trace_from_the_caller_to_the_provider(
    tmp_path: Path, stand_in: StandIn, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    traced_env(monkeypatch, receiver)
    daemon = Aiond(tmp_path, config_dir=provider_config(tmp_path, stand_in)).start()
    try:
        trace_id, caller_span, traceparent = caller_context()
        task = submit(daemon, "summarize", "Summarise this note.", traceparent)
        assert task.status == tasks_pb2.TASK_STATUS_OK

        def complete() -> list[Span] | None:
            spans = receiver.trace(trace_id)
            names = {s.name for s in spans}
            return spans if {"aion.v1.TaskService/SubmitTask", "chat qwen2.5"} <= names else None

        spans = poll(complete, timeout=15, what="the task's spans at the receiver")
        events = task_events(daemon, task.task_id)
    finally:
        daemon.stop()

    server = one(spans, "aion.v1.TaskService/SubmitTask")
    assert (server.kind, server.parent_id, server.service) == ("SPAN_KIND_SERVER", caller_span, "aiond")
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.grpc.status_code"] == 0
    decision = one(spans, "aion.decision")
    assert decision.parent_id == server.span_id
    assert decision.attributes["aion.target"] == "ollama:qwen2.5"
    assert decision.attributes["aion.intent"] == "summarize"
    attempt = one(spans, "aion.attempt")
    assert attempt.parent_id == server.span_id
    assert attempt.attributes["aion.task_id"] == task.task_id
    assert (attempt.attributes["aion.target"], attempt.attributes["aion.attempt"]) == ("ollama:qwen2.5", 1)
    assert attempt.attributes["aion.outcome"] == "ok"
    call = one(spans, "chat qwen2.5")
    assert (call.kind, call.parent_id) == ("SPAN_KIND_CLIENT", attempt.span_id)
    assert call.attributes["gen_ai.request.model"] == "qwen2.5"
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["gen_ai.usage.output_tokens"] == task.usage.output_tokens

    # The provider was told the trace: the traceparent of the provider call's own span.
    assert [r.headers.get("traceparent") for r in stand_in.requests] == [f"00-{trace_id}-{call.span_id}-01"]

    assert {e["topic"] for e in events} == {"aion.router.decisions", "aion.tasks.lifecycle"}
    for event in events:
        assert event["trace_id"] == trace_id
        conforms(without_envelope(event), SCHEMAS[event["topic"]])


def test_a_failed_attempt_and_its_fallback_are_spans_of_their_own(
    tmp_path: Path, stand_in: StandIn, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.rig import providers as behave

    traced_env(monkeypatch, receiver)
    daemon = Aiond(tmp_path, config_dir=provider_config(tmp_path, stand_in)).start()
    try:
        stand_in.script(behave.status(401), model="qwen2.5")  # not retried: the next target is tried
        trace_id, _, traceparent = caller_context()
        task = submit(daemon, "summarize", "Summarise this note.", traceparent)
        assert task.status == tasks_pb2.TASK_STATUS_OK
        tried = [f"{a.target.provider}:{a.target.name}" for a in task.attempts]
        assert len(tried) == 2

        def complete() -> list[Span] | None:
            spans = receiver.trace(trace_id)
            names = [s.name for s in spans]
            return (
                spans
                if "aion.v1.TaskService/SubmitTask" in names and names.count("aion.attempt") == 2
                else None
            )

        spans = poll(complete, timeout=15, what="the task's spans at the receiver")
    finally:
        daemon.stop()

    attempts = sorted(
        (s for s in spans if s.name == "aion.attempt"), key=lambda s: s.attributes["aion.attempt"]
    )
    assert [a.attributes["aion.target"] for a in attempts] == tried
    assert [a.attributes["aion.outcome"] for a in attempts] == ["error", "ok"]
    assert attempts[0].status == "STATUS_CODE_ERROR"
    assert attempts[0].attributes["error.type"] == "PROVIDER_AUTH"
    failed_call = next(s for s in spans if s.parent_id == attempts[0].span_id)
    assert (failed_call.kind, failed_call.status) == ("SPAN_KIND_CLIENT", "STATUS_CODE_ERROR")
    assert failed_call.attributes["error.type"] == "auth"
    assert failed_call.attributes["http.response.status_code"] == 401


def test_a_refused_call_is_the_callers_outcome_not_a_server_failure(
    tmp_path: Path, stand_in: StandIn, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    traced_env(monkeypatch, receiver)
    daemon = Aiond(tmp_path, config_dir=provider_config(tmp_path, stand_in)).start()
    try:
        trace_id, caller_span, traceparent = caller_context()
        with daemon.channel("viewer") as channel, pytest.raises(grpc.RpcError) as refused:
            tasks_pb2_grpc.TaskServiceStub(channel).SubmitTask(
                tasks_pb2.SubmitTaskRequest(intent="summarize", input=tasks_pb2.TaskInput(text="x")),
                timeout=10,
                metadata=(("traceparent", traceparent),),
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        spans = poll(lambda: receiver.trace(trace_id) or None, timeout=15, what="the refused call's span")

        def denial() -> dict[str, Any] | None:
            result = aionctl(
                "events", "tail", "-o", "json", "--topic", "aion.audit.activity", env=daemon.aionctl_env()
            )
            found = [e for e in map(json.loads, result.stdout.splitlines()) if e.get("action") == "auth.deny"]
            return found[-1] if found else None

        audit = poll(denial, timeout=15, what="the denial's audit event")
    finally:
        daemon.stop()
    server = one(spans, "aion.v1.TaskService/SubmitTask")
    assert server.parent_id == caller_span
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert server.status == "STATUS_CODE_UNSET"
    assert [s.name for s in spans] == [server.name]  # refused before any decision
    assert audit["trace_id"] == trace_id  # the audit event names the trace of the call it refused
    conforms(without_envelope(audit), "events/audit")


def test_a_module_call_is_a_client_span_under_its_attempt(
    tmp_path: Path,
    stand_in: StandIn,
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    go_tools: GoTools,
    oci_registry: OciRegistry,
) -> None:
    config = provider_config(tmp_path, stand_in)
    signer = make_signer(go_tools, tmp_path / "signer")
    policies = yaml.safe_load((config / "policies.yml").read_text())
    policies["trust"]["rules"].insert(
        0, {"match": f"{oci_registry.host}/traces/**", "keys": [str(signer.pub)]}
    )
    (config / "policies.yml").write_text(yaml.safe_dump(policies, sort_keys=False))
    repo = f"{oci_registry.host}/traces/summarize_text-{uuid.uuid4().hex[:6]}"
    pushed = aionctl(
        "module", "push", str(EXAMPLES / "modules" / "summarize_text"), f"{repo}:1", "--plain-http",
        "--sbom", str(write_sbom(tmp_path / "sbom.json")), "-o", "json",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    signer.sign(f"{repo}@{json.loads(pushed.stdout)['digest']}")

    traced_env(monkeypatch, receiver)
    daemon = Aiond(
        tmp_path,
        config_dir=config,
        extra_args=["--registry-plain-http", oci_registry.host, "--trust-keys-dir", str(signer.pub.parent)],
    ).start()
    try:
        with daemon.channel() as channel:
            modules_pb2_grpc.ModuleServiceStub(channel).InstallModule(
                modules_pb2.InstallModuleRequest(ref=f"{repo}:1"), timeout=60
            )
        trace_id, _, traceparent = caller_context()
        text = "The cluster lost power at 02:10. Generators started. The volumes moved west. Menus changed."
        task = submit(daemon, "summarize", text, traceparent, route_override=common_pb2.ROUTE_LOCAL)
        assert task.status == tasks_pb2.TASK_STATUS_OK
        assert task.attempts[0].target.name == "summarize_text"

        def complete() -> list[Span] | None:
            spans = receiver.trace(trace_id)
            names = {s.name for s in spans}
            return spans if {"aion.v1.TaskService/SubmitTask", "module summarize_text"} <= names else None

        spans = poll(complete, timeout=15, what="the module task's spans at the receiver")
    finally:
        daemon.stop()

    server = one(spans, "aion.v1.TaskService/SubmitTask")
    attempt = one(spans, "aion.attempt")
    assert attempt.parent_id == server.span_id
    assert (attempt.attributes["aion.target"], attempt.attributes["aion.outcome"]) == (
        "module:summarize_text",
        "ok",
    )
    call = one(spans, "module summarize_text")
    assert (call.kind, call.parent_id) == ("SPAN_KIND_CLIENT", attempt.span_id)
    assert stand_in.requests == []  # the module answered; no model was asked


def test_spans_still_queued_at_shutdown_are_exported(
    tmp_path: Path, stand_in: StandIn, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    traced_env(monkeypatch, receiver)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # no export before the stop
    daemon = Aiond(tmp_path, config_dir=provider_config(tmp_path, stand_in)).start()
    try:
        trace_id, _, traceparent = caller_context()
        assert (
            submit(daemon, "summarize", "Summarise this note.", traceparent).status
            == tasks_pb2.TASK_STATUS_OK
        )
        assert receiver.trace(trace_id) == []
    finally:
        assert daemon.stop() == 0
    names = {s.name for s in receiver.trace(trace_id)}
    assert {"aion.v1.TaskService/SubmitTask", "aion.decision", "aion.attempt", "chat qwen2.5"} <= names


def test_a_collector_that_hangs_holds_up_neither_tasks_nor_the_shutdown(
    tmp_path: Path, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OtlpReceiver(answer=False) as hanging:
        traced_env(monkeypatch, hanging)
        # The longest export timeout aiond accepts, and exports as often as it may make them.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1")
        daemon = Aiond(tmp_path, config_dir=provider_config(tmp_path, stand_in)).start()
        try:
            for _ in range(3):
                _, _, traceparent = caller_context()
                task = submit(daemon, "summarize", "Summarise this note.", traceparent)
                assert task.status == tasks_pb2.TASK_STATUS_OK
            poll(lambda: hanging.requests > 0, timeout=15, what="an export to the hanging collector")
        finally:
            # Stopped within the rig's 15 s, not killed: the flush gives up after aiond's bound, where
            # the SDK's own shutdown would wait 30 s.
            assert daemon.stop() == 0
    assert "the last spans were not all exported" in daemon.process.log_tail(200)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ],
)
def test_a_bad_trace_setting_stops_aiond_at_start_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = clean_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", variable: value})
    result = subprocess.run(
        [program("aiond"), "--config", str(EXAMPLES), "--state-dir", str(tmp_path / "state"),
         "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"{variable}=" in result.stderr
    assert "Traceback" not in result.stderr
