"""aiond's OpenAI-compatible front door: ``POST /v1/chat/completions`` and ``GET /v1/models``.

An application written against the OpenAI Chat Completions API points its SDK at aiond (base URL
``http://HOST:PORT/v1``, an aion token as the API key) and names an intent as the ``model`` (or
``intent:NAME``). The request becomes a task through :meth:`Executor.submit`, the same admission,
decision, budget reservation and executor as ``SubmitTask``: local-only intents stay on the host,
budgets are reserved before anything is sent, breakers and fallbacks apply, and every decision is
audited. Nothing here routes, admits or retries.

- **Request**: ``messages`` (text only: strings, or ``text`` parts), ``max_completion_tokens`` (or
  ``max_tokens``), ``temperature``, ``stop``, ``user`` and ``metadata`` (task labels) carry over;
  ``stream`` answers with server-sent events. What aion adds goes in an ``aion`` object in the body
  or in headers: ``route`` (``x-aion-route``: local, api or hybrid), ``budget_usd``
  (``x-aion-budget-usd``), ``latency_target_ms`` (``x-aion-latency-target-ms``) and
  ``idempotency_key`` (``x-aion-idempotency-key`` or ``Idempotency-Key``). Features aiond cannot honour
  (tools, several choices, images, log probabilities) are refused with a 400 that names the field,
  never silently dropped.
- **Response**: a ``chat.completion`` whose ``model`` is the intent; the headers say what happened:
  ``x-aion-task-id``, ``x-aion-route``, ``x-aion-target`` (``provider/model`` or ``module:NAME``),
  ``x-aion-cost-usd`` and ``x-aion-policy-version``.
- **Errors**: OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``) with the
  HTTP status of the error's row in the one error table (:mod:`aion.errors`): 400 a bad request, 401
  and 403 auth, 404 an unknown intent, 422 a refusal by policy (``code`` is the reason, for example
  ``PRIVACY_LOCAL_ONLY``), 429 with ``Retry-After`` for a full route or an exhausted budget, 502 and
  504 when no provider or module answered, 503 with ``Retry-After`` (``code`` ``draining``) for a new
  request once aiond is shutting down (streams already running finish). No traceback and no provider
  key ever reach the caller.
- **Streaming**: chunks as the provider sends its tokens. The task falls back to another target only
  until its first token; after that an error ends the stream with an ``error`` event. A caller that
  goes away cancels the task (the provider call stops; its slot and budget reservation are
  released), and one that stops reading is cut off after ``--stream-write-timeout`` seconds.

Every read is bounded: the body (:data:`MAX_BODY_BYTES`), the messages (:data:`MAX_MESSAGES`), labels,
stop sequences and every string.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from aion.api.v1 import common_pb2, tasks_pb2
from aion.config.model import Route
from aion.errors import (
    BudgetExhausted,
    Draining,
    Error,
    NotFound,
    Refused,
    Unauthenticated,
    UpstreamFailed,
    UpstreamTimeout,
    UsageError,
    transport,
)
from aion.providers import Sampling
from aion.routing import LiveState
from aion.routing.engine import NANO_PER_USD
from aion.routing.wire import route_of
from aiond.execution.executor import Executor, Submission
from aiond.execution.taskstore import Status, Stored, TaskRecord
from aiond.policy.store import PolicyStore
from aiond.serving.connections import lost

MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest request body read (the chat and everything with it)."""
MAX_MESSAGES = 1024
MAX_NAME = 128
MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_LABELS = 16
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 512
MAX_KEY = 256
MAX_OUTPUT_TOKENS = 1_000_000
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_UNSUPPORTED = {
    "tools": "tool calls are not supported by aiond",
    "tool_choice": "tool calls are not supported by aiond",
    "functions": "function calls are not supported by aiond",
    "function_call": "function calls are not supported by aiond",
    "audio": "audio output is not supported by aiond",
    "prediction": "predicted outputs are not supported by aiond",
}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error"}  # fmt: skip
_TIMEOUT_CODES = frozenset({"DEADLINE_EXCEEDED", "PROVIDER_TIMEOUT"})


class BadField(UsageError):
    """A request field that is missing, of the wrong type or out of range (``param`` names it)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


# -- errors ------------------------------------------------------------------------------------------


def error_body(error: Error) -> dict[str, Any]:
    """``error`` in OpenAI's shape; its status is its row's in the error table."""
    row = transport(error)
    kind = _TYPES.get(row.http, "api_error" if row.http >= 500 else "invalid_request_error")
    if isinstance(error, BudgetExhausted):
        kind = "insufficient_quota"
    code = getattr(error, "code", None) or row.name
    message = error.message if not error.hint else f"{error.message} ({error.hint})"
    return {"error": {"message": message, "type": kind, "param": getattr(error, "param", None), "code": code}}


def error_response(error: Error) -> web.Response:
    """The response for ``error`` on the OpenAI endpoints."""
    response = web.json_response(error_body(error), status=transport(error).http)
    if isinstance(error, Unauthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="aiond"'
    retry_after = error.retry_after
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        response.headers["retry-after-ms"] = str(max(1, round(retry_after * 1000)))
    return response


def http_error_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own answers (404, 405, 413) in OpenAI's shape."""
    messages = {404: "no such endpoint", 405: "method not allowed here", 413: "the request body is too large"}
    message = messages.get(exc.status, exc.reason)
    kind = "invalid_request_error" if exc.status < 500 else "api_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": str(exc.status)}}
    return web.json_response(
        body, status=exc.status, headers={k: v for k, v in exc.headers.items() if k == "Allow"}
    )


# -- the request -------------------------------------------------------------------------------------


def _text(value: object, param: str) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for index, part in enumerate(value[:MAX_MESSAGES]):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise BadField(
                    f"{param}[{index}]", "only text content is supported (type 'text' with its text)"
                )
            parts.append(part["text"])
        if len(value) > MAX_MESSAGES:
            raise BadField(param, f"at most {MAX_MESSAGES} parts")
        return "".join(parts)
    raise BadField(param, "must be a string or a list of text parts")


def _conversation(value: object) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise BadField("messages", "must be a non-empty list of messages")
    if len(value) > MAX_MESSAGES:
        raise BadField("messages", f"at most {MAX_MESSAGES} messages")
    chat = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise BadField(f"messages[{index}]", "must be an object with a role and content")
        role = ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise BadField(
                f"messages[{index}].role",
                f"{str(message.get('role'))[:40]!r} is not supported (system, developer, user or assistant)",
            )
        chat.append({"role": role, "content": _text(message.get("content"), f"messages[{index}].content")})
    if not any(m["role"] == "user" for m in chat):
        raise BadField("messages", "needs at least one user message")
    return tuple(chat)


def task_text(chat: tuple[dict[str, str], ...]) -> str:
    """What modules, the hybrid step and the router see of a chat: its one user message, or the whole
    chat written out (so that the hybrid step rewrites all of it, and nothing else leaves)."""
    if len(chat) == 1:
        return chat[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in chat)


def _integer(body: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadField(key, f"must be a whole number from {low} to {high:,}")
    return value


def _sampling(body: Mapping[str, Any]) -> Sampling | None:
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 2
    ):
        raise BadField("temperature", "must be a number from 0 to 2")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and len(stop) <= MAX_STOP and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise BadField("stop", f"must be a string or a list of at most {MAX_STOP} strings")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise BadField("stop", f"each sequence must have 1 to {MAX_STOP_CHARS} characters")
    if temperature is None and not stops:
        return None
    return Sampling(temperature=None if temperature is None else float(temperature), stop=stops)


def _labels(body: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > MAX_LABELS:
            raise BadField("metadata", f"must be an object of at most {MAX_LABELS} strings")
        for key, value in metadata.items():
            if (
                not 0 < len(key) <= MAX_LABEL_KEY
                or not isinstance(value, str)
                or len(value) > MAX_LABEL_VALUE
            ):
                raise BadField(
                    f"metadata.{key[:40]}",
                    f"keys have 1 to {MAX_LABEL_KEY} characters, values are strings of at most "
                    f"{MAX_LABEL_VALUE}",
                )
            labels[key] = value
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str) or len(user) > MAX_LABEL_VALUE:
            raise BadField("user", f"must be a string of at most {MAX_LABEL_VALUE} characters")
        labels["user"] = user
    return labels


def _extension(body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """The aion hints: the body's ``aion`` object, else the ``x-aion-*`` headers."""
    given = body.get("aion")
    if given is not None and not isinstance(given, dict):
        raise BadField("aion", "must be an object (route, budget_usd, latency_target_ms, idempotency_key)")
    hints = dict(given or {})
    for key, header in (
        ("route", "x-aion-route"),
        ("budget_usd", "x-aion-budget-usd"),
        ("latency_target_ms", "x-aion-latency-target-ms"),
        ("idempotency_key", "x-aion-idempotency-key"),
    ):
        if key not in hints and header in headers:
            hints[key] = headers[header]
    if "idempotency_key" not in hints and "Idempotency-Key" in headers:
        hints["idempotency_key"] = headers["Idempotency-Key"]
    unknown = set(hints) - {"route", "budget_usd", "latency_target_ms", "idempotency_key"}
    if unknown:
        raise BadField(f"aion.{sorted(unknown)[0][:40]}", "is not an aion hint")
    return hints


def _route(value: object) -> Route | None:
    if value is None:
        return None
    try:
        return Route(value.lower() if isinstance(value, str) else "")
    except ValueError:
        raise BadField("aion.route", "must be local, api or hybrid") from None


def _budget_nano(value: object) -> int | None:
    if value is None:
        return None
    try:
        amount = (
            Decimal(str(value))
            if isinstance(value, (str, int, float)) and not isinstance(value, bool)
            else None
        )
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or not 0 <= amount <= 1_000_000:
        raise BadField("aion.budget_usd", "must be a number of US dollars from 0 to 1,000,000")
    return int(amount * NANO_PER_USD)


def _latency(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3_600_000:
        raise BadField("aion.latency_target_ms", "must be a whole number of milliseconds from 1 to 3,600,000")
    return value


def _idempotency_key(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_KEY:
        raise BadField("aion.idempotency_key", f"must be a string of at most {MAX_KEY} characters")
    return value


def intent_name(model: object) -> str:
    if not isinstance(model, str) or not model:
        raise BadField("model", "must name an intent (GET /v1/models lists them)")
    name = model.removeprefix("intent:")
    if not name or len(name) > MAX_NAME:
        raise BadField("model", f"must name an intent of at most {MAX_NAME} characters")
    return name


def submission(body: object, headers: Mapping[str, str]) -> tuple[Submission, bool]:
    """The task a chat completion request asks for, and whether the caller wants the usage in the
    last chunk of a stream. Raises BadField (400) for anything malformed."""
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    for key, why in _UNSUPPORTED.items():
        if body.get(key) not in (None, [], {}):
            raise BadField(key, why)
    if body.get("n") not in (None, 1):
        raise BadField("n", "aiond answers with one choice")
    if body.get("logprobs") not in (None, False):
        raise BadField("logprobs", "log probabilities are not supported by aiond")
    modalities = body.get("modalities")
    if modalities not in (None, ["text"]):
        raise BadField("modalities", "aiond answers with text only")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") != "text"
    ):
        raise BadField("response_format", "aiond answers with text (type 'text')")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadField("stream", "must be true or false")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadField("stream_options", "must be an object")
    usage_chunk = bool(options and options.get("include_usage") is True)
    chat = _conversation(body.get("messages"))
    limit = _integer(body, "max_completion_tokens", 1, MAX_OUTPUT_TOKENS)
    if limit is None:
        limit = _integer(body, "max_tokens", 1, MAX_OUTPUT_TOKENS)
    hints = _extension(body, headers)
    text = task_text(chat)
    return (
        Submission(
            intent=intent_name(body.get("model")),
            text=text,
            budget_nano=_budget_nano(hints.get("budget_usd")),
            latency_target_ms=_latency(hints.get("latency_target_ms")),
            route_override=_route(hints.get("route")),
            idempotency_key=_idempotency_key(hints.get("idempotency_key")),
            labels=_labels(body),
            conversation=chat if len(chat) > 1 or chat[0]["role"] != "user" else (),
            max_tokens=limit,
            sampling=_sampling(body),
            stream=stream,
        ),
        usage_chunk,
    )


# -- the answer --------------------------------------------------------------------------------------


def _answered_by(task: tasks_pb2.Task) -> str:
    """The target that answered (the last attempt that did), else the decision's first."""
    for attempt in reversed(task.attempts):
        if attempt.outcome == tasks_pb2.TASK_STATUS_OK:
            return _target_name(attempt.target)
    return _target_name(task.decision.target)


def _target_name(target: tasks_pb2.Target) -> str:
    if target.kind == tasks_pb2.TARGET_KIND_MODULE:
        return f"module:{target.name}"
    return f"{target.provider}/{target.name}" if target.provider else target.name


def _route_word(route: common_pb2.Route.ValueType) -> str:
    decided = route_of(route)
    return decided.value if decided is not None else "unspecified"


def headers_of(task: tasks_pb2.Task) -> dict[str, str]:
    cost = Decimal(task.usage.cost.nano_usd) / NANO_PER_USD
    return {
        "x-aion-task-id": task.task_id,
        "x-aion-route": _route_word(task.decision.route),
        "x-aion-target": _answered_by(task),
        "x-aion-cost-usd": f"{cost:f}",
        "x-aion-policy-version": str(task.decision.policy_version),
    }


def failure(task: tasks_pb2.Task) -> Error:
    """The error a finished task that did not answer stands for."""
    error = task.error
    message = f"{error.code}: {error.message}" if error.code else "the task did not finish"
    if task.status == tasks_pb2.TASK_STATUS_TIMEOUT or error.code in _TIMEOUT_CODES:
        return UpstreamTimeout(message, code=error.code or "DEADLINE_EXCEEDED")
    if task.status == tasks_pb2.TASK_STATUS_CANCELED:
        return UpstreamFailed(message, code="CANCELED")
    return UpstreamFailed(message, code=error.code or "PROVIDER_UNAVAILABLE")


def _finish_reason(record: Stored) -> str:
    reason = record.finish_reason if isinstance(record, TaskRecord) else None
    return "length" if reason in ("length", "max_tokens") else "stop"


def completion_body(task: tasks_pb2.Task, model: str, finish_reason: str) -> dict[str, Any]:
    usage = task.usage
    return {
        "id": f"chatcmpl-{task.task_id}",
        "object": "chat.completion",
        "created": task.created_at.seconds,
        "model": model,
        "system_fingerprint": f"aion-policy-v{task.decision.policy_version}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": task.result.text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
    }


# -- the routes --------------------------------------------------------------------------------------


class OpenAIRoutes:
    def __init__(
        self,
        executor: Executor,
        policies: PolicyStore,
        live: Callable[[], LiveState],
        *,
        write_timeout: float = 30.0,
        taking_work: Callable[[], bool] = lambda: True,
    ) -> None:
        """``taking_work`` says whether the daemon still takes new work: false from the moment its
        shutdown stops gRPC taking calls, when a new chat completion is refused (Draining, 503)."""
        self._executor = executor
        self._policies = policies
        self._live = live
        self._write_timeout = write_timeout
        self._taking_work = taking_work

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)

    def _models(self) -> list[dict[str, Any]]:
        active = self._policies.active
        if active is None:
            return []
        created = int(time.time())
        return [
            {
                "id": intent.name,
                "object": "model",
                "created": created,
                "owned_by": "aion",
                "aion": {
                    "description": intent.description,
                    "privacy": privacy.value,
                    "routes": [r.value for r in routes],
                },
            }
            for intent, privacy, routes in active.routing.intents(self._live())
        ]

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": self._models()})

    async def model(self, request: web.Request) -> web.Response:
        name = intent_name(request.match_info["model"])
        found = next((m for m in self._models() if m["id"] == name), None)
        if found is None:
            raise NotFound(
                f"no intent {name!r} in the active policy", hint="GET /v1/models lists the intents"
            )
        return web.json_response(found)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        if not self._taking_work():
            raise Draining(
                "aiond is shutting down and takes no new tasks",
                hint="retry in a moment: another instance, or this one once it is back",
            )
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise UsageError(f"the request body is larger than {MAX_BODY_BYTES:,} bytes")
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise UsageError("the request body is not JSON") from None
        asked, usage_chunk = submission(body, request.headers)
        try:
            task, _deduplicated = self._executor.submit(asked)  # raises Refused or Saturated
        except Refused as exc:
            if exc.code == "UNKNOWN_INTENT":
                raise NotFound(
                    f"no intent {asked.intent!r} in the active policy",
                    hint="GET /v1/models lists the intents",
                ) from exc
            raise
        # A caller that goes away takes its task with it: the provider call stops, and the slot and
        # the budget reservation are released.
        gone = lost(request)

        def abandon(_lost: asyncio.Future[None]) -> None:
            self._executor.abandon(task, "the caller went away")

        gone.add_done_callback(abandon)
        try:
            if asked.stream:
                return await self._stream(request, task, asked.intent, usage_chunk)
            await self._executor.store.until_finished(task)
        finally:
            gone.remove_done_callback(abandon)
        message = task.message()
        if message.status != tasks_pb2.TASK_STATUS_OK:
            raise failure(message)
        return web.json_response(
            completion_body(message, asked.intent, _finish_reason(task)), headers=headers_of(message)
        )

    async def _stream(
        self, request: web.Request, task: Stored, model: str, usage_chunk: bool
    ) -> web.StreamResponse:
        # An earlier task with the same idempotency key may have finished already: its answer is
        # then sent whole, as one chunk.
        stream = task.stream if isinstance(task, TaskRecord) else None
        pieces = stream.pieces() if stream is not None else None
        # Wait for the first piece (or the end) before answering: until then a failure is an ordinary
        # error response, and the task may still fall back to another target.
        first = await anext(pieces, None) if pieces is not None else None
        if first is None:
            await self._executor.store.until_finished(task)
            if task.status is not Status.OK:
                raise failure(task.message())
        started = task.message()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-aion-task-id": started.task_id,
                "x-aion-route": _route_word(started.decision.route),
                "x-aion-policy-version": str(started.decision.policy_version),
            }
        )
        created = started.created_at.seconds
        chunk_id = f"chatcmpl-{started.task_id}"

        def event(doc: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(doc, ensure_ascii=False).encode() + b"\n\n"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return event({
                "id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            })  # fmt: skip

        try:
            await response.prepare(request)
            await self._send(response, chunk({"role": "assistant", "content": ""}))
            if first is not None and pieces is not None:
                await self._send(response, chunk({"content": first}))
                async for piece in pieces:
                    await self._send(response, chunk({"content": piece}))
            await self._executor.store.until_finished(task)
            message = task.message()
            if message.status != tasks_pb2.TASK_STATUS_OK:
                await self._send(response, event(error_body(failure(message))))
                return response
            if first is None and message.result.text:  # a module, or a model that does not stream
                await self._send(response, chunk({"content": message.result.text}))
            await self._send(response, chunk({}, _finish_reason(task)))
            if usage_chunk:
                await self._send(response, event({
                    "id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": completion_body(message, model, "stop")["usage"],
                }))  # fmt: skip
            await self._send(response, b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, TimeoutError):
            # Gone, or not reading: the connection closes, and its task with it.
            self._executor.abandon(task, "the caller went away")
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _send(self, response: web.StreamResponse, data: bytes) -> None:
        """Write one event; a caller that does not take it within the write timeout is cut off."""
        async with asyncio.timeout(self._write_timeout):
            await response.write(data)


__all__ = [
    "MAX_BODY_BYTES",
    "OpenAIRoutes",
    "error_body",
    "error_response",
    "http_error_response",
    "submission",
    "task_text",
]
