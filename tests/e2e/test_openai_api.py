"""aiond's OpenAI-compatible endpoints, driven by the real ``openai`` SDK: a real aiond routing to the
real stand-in provider. Completions plain and streamed, the models list, the x-aion headers, every
error as the SDK's exception type, and a 429 the SDK waits out and retries."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from tests.e2e.test_task_streaming import Reader
from tests.e2e.test_tasks import write_config
from tests.rig import providers as behave
from tests.rig.daemon import Aiond, aionctl, program
from tests.rig.fuzz import examples
from tests.rig.procs import poll
from tests.rig.providers import StandIn


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, stand_in: StandIn) -> Iterator[Aiond]:
    root = tmp_path_factory.mktemp("openai")
    policies = {"limits": {"concurrency": {"local": 1, "api": 64, "hybrid": 16},
                           "queue_depth": {"local": 1, "api": 256, "hybrid": 64}}}  # fmt: skip
    d = Aiond(root, config_dir=write_config(root, stand_in, policies=policies)).start()
    yield d
    d.stop()


OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def fresh(stand_in: StandIn) -> Iterator[None]:
    stand_in.clear()
    yield
    while OPEN:
        OPEN.pop().close()


def client(
    daemon: Aiond, role: str = "operator", *, max_retries: int = 0, key: str | None = None
) -> openai.OpenAI:
    made = openai.OpenAI(
        base_url=f"http://{daemon.http_addr}/v1",
        api_key=daemon.tokens[role] if key is None else key,
        max_retries=max_retries,
    )
    OPEN.append(made)
    return made


def test_a_chat_completion_is_a_task_and_says_how_it_was_routed(daemon: Aiond, stand_in: StandIn) -> None:
    raw = client(daemon).chat.completions.with_raw_response.create(
        model="summarize",
        messages=[{"role": "user", "content": "the nightly batch finished"}],
        extra_headers={"x-aion-route": "api"},
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo:the nightly batch finished"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "summarize"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 8
    assert raw.headers["x-aion-route"] == "api"
    assert raw.headers["x-aion-target"].startswith(("openai/", "azure/", "hf/"))
    assert answer.id == f"chatcmpl-{raw.headers['x-aion-task-id']}"
    assert float(raw.headers["x-aion-cost-usd"]) > 0
    assert int(raw.headers["x-aion-policy-version"]) >= 1
    sent = stand_in.requests[-1]
    assert sent.body["messages"][0] == {
        "role": "system",
        "content": "Summarise a document for the operator console",
    }
    # the task is aiond's like any other: its record says the same
    with daemon.channel("viewer") as channel:
        task = (
            tasks_pb2_grpc.TaskServiceStub(channel)
            .GetTask(tasks_pb2.GetTaskRequest(task_id=raw.headers["x-aion-task-id"]), timeout=10)
            .task
        )
    assert task.intent == "summarize"
    assert task.status == tasks_pb2.TASK_STATUS_OK
    assert task.decision.route == common_pb2.ROUTE_API
    assert task.result.text == answer.choices[0].message.content


def test_the_chat_and_its_options_reach_the_provider(daemon: Aiond, stand_in: StandIn) -> None:
    answer = client(daemon).chat.completions.create(
        model="intent:summarize",
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "first "}, {"type": "text", "text": "part"}],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and the second"},
        ],
        max_completion_tokens=3,
        temperature=0.2,
        stop=["END"],
        user="app-7",
        metadata={"ticket": "T-1"},
        extra_body={"aion": {"route": "api", "budget_usd": 0.5}},
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "echo:and the second"[:12]
    body = stand_in.requests[-1].body
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == "first part"
    assert body["max_tokens"] == 3
    assert body["temperature"] == 0.2
    assert body["stop"] == ["END"]


def test_a_streamed_completion_arrives_in_pieces_with_its_usage(daemon: Aiond) -> None:
    stream = client(daemon).chat.completions.create(
        model="summarize",
        messages=[{"role": "user", "content": "stream me a longer answer please"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-aion-route": "api"},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == "echo:stream me a longer answer please"
    assert len([p for p in pieces if p]) > 3, "the provider's pieces, not one block"
    assert finish == "stop"
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def test_models_are_the_intents_with_their_routes(daemon: Aiond) -> None:
    models = client(daemon, "viewer").models.list()
    by_id = {m.id: m for m in models.data}
    assert set(by_id) == {"summarize", "invoice_ocr", "draft_reply"}
    extra = by_id["invoice_ocr"].model_extra or {}
    assert extra["aion"]["privacy"] == "local-only"
    assert "api" not in extra["aion"]["routes"]
    assert "api" in (by_id["summarize"].model_extra or {})["aion"]["routes"]
    assert client(daemon, "viewer").models.retrieve("intent:draft_reply").id == "draft_reply"
    with pytest.raises(openai.NotFoundError):
        client(daemon, "viewer").models.retrieve("nope")


@pytest.mark.parametrize(
    ("kwargs", "role", "error", "status", "code"),
    [
        ({"model": "no_such_intent"}, "operator", openai.NotFoundError, 404, "not-found"),
        ({"extra_headers": {"x-aion-route": "api"}, "model": "invoice_ocr"}, "operator",
         openai.UnprocessableEntityError, 422, "ROUTE_NOT_PERMITTED"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "operator",
         openai.BadRequestError, 400, "usage"),
        ({"n": 2}, "operator", openai.BadRequestError, 400, "usage"),
        ({"extra_body": {"aion": {"route": "moon"}}}, "operator", openai.BadRequestError, 400, "usage"),
        ({}, "viewer", openai.PermissionDeniedError, 403, "forbidden"),
    ],
)  # fmt: skip
def test_errors_have_openais_shape_and_the_sdks_types(
    daemon: Aiond,
    kwargs: dict[str, object],
    role: str,
    error: type[openai.APIStatusError],
    status: int,
    code: str,
) -> None:
    call = {"model": "summarize", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(error) as caught:
        client(daemon, role).chat.completions.create(**call)  # type: ignore[call-overload]
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict)
    assert set(body) >= {"message", "type", "code"}
    assert body["code"] == code
    assert "Traceback" not in json.dumps(body)


def test_a_wrong_token_is_an_authentication_error(daemon: Aiond) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(daemon, key="aion_not-a-token").models.list()
    assert caught.value.status_code == 401


@pytest.mark.parametrize(
    ("behaviour", "route", "status", "codes"),
    [
        (behave.status(500), "api", 502, {"PROVIDER_SERVER"}),
        (behave.hang(), "local", 504, {"PROVIDER_TIMEOUT", "DEADLINE_EXCEEDED"}),
    ],
    ids=["failing", "silent"],
)
def test_providers_that_fail_or_never_answer_are_a_502_or_a_504_without_the_key(
    daemon: Aiond, stand_in: StandIn, behaviour: behave.Behaviour, route: str, status: int, codes: set[str]
) -> None:
    stand_in.always(behaviour)
    with pytest.raises(openai.APIStatusError) as caught:
        client(daemon).chat.completions.create(
            model="summarize",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-aion-route": route},
        )
    assert caught.value.status_code == status
    assert caught.value.body["code"] in codes  # type: ignore[index]
    assert behave.key_leaks(json.dumps(caught.value.body), "sk-stand-in-0123456789") == []


def admitted(daemon: Aiond, route: str) -> float:
    """Tasks aiond has admitted on ``route`` so far (its aion_route_decisions counter)."""
    text = httpx.get(f"http://{daemon.http_addr}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aion_route_decisions_total{") and f'route="{route}"' in line
    )


def test_a_full_route_is_a_429_that_the_sdk_waits_out_and_retries(daemon: Aiond, stand_in: StandIn) -> None:
    """The local route has one slot and one queue place: while two slow tasks hold them, the next
    request is refused with Retry-After; the SDK waits as told and its retry is answered."""
    stand_in.script(behave.slow(1.0), behave.slow(1.0))
    chat = {"model": "summarize", "messages": [{"role": "user", "content": "hold"}],
            "extra_headers": {"x-aion-route": "local"}}  # fmt: skip
    before = admitted(daemon, "local")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        holders = [pool.submit(client(daemon).chat.completions.create, **chat) for _ in range(2)]  # type: ignore[arg-type]
        poll(lambda: admitted(daemon, "local") >= before + 2, timeout=10, what="the slot and the queue taken")
        with pytest.raises(openai.RateLimitError) as refused:
            client(daemon).chat.completions.create(**chat)  # type: ignore[call-overload]
        assert int(refused.value.response.headers["Retry-After"]) >= 1
        assert refused.value.body["code"] == "saturated"  # type: ignore[index]
        retried = client(daemon, max_retries=3).chat.completions.create(**chat)  # type: ignore[call-overload]
        assert retried.choices[0].message.content == "echo:hold"
        assert [h.result().choices[0].message.content for h in holders] == ["echo:hold"] * 2


# -- the guarantees, under load and abuse ------------------------------------------------------------


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Aiond, StandIn, StandIn]]:
    """A daemon whose local providers are one stand-in and cloud providers another."""
    root = tmp_path_factory.mktemp("split")
    with StandIn() as local, StandIn() as cloud:
        config = write_config(root, cloud, local_url=local.url)
        d = Aiond(root, config_dir=config).start()
        yield d, local, cloud
        d.stop()


routes = st.sampled_from([None, "local", "api", "hybrid", "API", "auto", ""])


@settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    model=st.sampled_from(["invoice_ocr", "intent:invoice_ocr"]),
    in_body=routes,
    in_header=routes,
    stream=st.booleans(),
    text=st.text(min_size=1, max_size=200),
    turns=st.integers(min_value=1, max_value=4),
)
def test_a_local_only_intent_never_reaches_a_cloud_provider(
    split: tuple[Aiond, StandIn, StandIn],
    model: str,
    in_body: str | None,
    in_header: str | None,
    stream: bool,
    text: str,
    turns: int,
) -> None:
    """Whatever the route asked for, in the body or a header, streamed or not: the cloud stand-in
    never hears of the task, and the answer comes from this host or is a refusal."""
    daemon, local, cloud = split
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{text} {i}"} for i in range(turns)
    ]
    if turns % 2 == 0:
        messages.append({"role": "user", "content": text})
    body: dict[str, object] = {"model": model, "messages": messages, "stream": stream}
    if in_body is not None:
        body["aion"] = {"route": in_body}
    headers = {"Authorization": f"Bearer {daemon.tokens['operator']}"}
    if in_header is not None:
        headers["x-aion-route"] = in_header
    with httpx.Client(timeout=30) as http:
        answer = http.post(f"http://{daemon.http_addr}/v1/chat/completions", json=body, headers=headers)
    assert cloud.calls() == 0
    assert answer.status_code in (200, 400, 422), answer.text
    if answer.status_code == 200:
        assert answer.headers["x-aion-route"] in ("local", "hybrid")
        assert local.calls() > 0


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[tuple[Aiond, StandIn, Decimal]]:
    cap = Decimal("0.05")
    policies = {
        "budget": {"daily_cap_usd": float(cap)},
        "limits": {"concurrency": {"api": 64}, "queue_depth": {"api": 512}},
    }
    with StandIn() as stand_in:
        d = Aiond(tmp_path, config_dir=write_config(tmp_path, stand_in, policies=policies)).start()
        yield d, stand_in, cap
        d.stop()


def test_two_hundred_concurrent_streams_never_spend_more_than_the_daily_cap(
    capped: tuple[Aiond, StandIn, Decimal],
) -> None:
    daemon, stand_in, cap = capped
    stand_in.always(behave.slow(0.2))

    refusals: list[openai.RateLimitError] = []

    async def one(api: openai.AsyncOpenAI, i: int) -> str | None:
        try:
            raw = await api.chat.completions.with_raw_response.create(
                model="summarize",
                messages=[{"role": "user", "content": "y" * 2000}],
                stream=True,
                extra_headers={"x-aion-route": "api", "x-aion-idempotency-key": f"k{i}"},
            )
        except openai.RateLimitError as exc:
            refusals.append(exc)
            return None
        async for _chunk in raw.parse():
            pass
        task_id: str = raw.headers["x-aion-task-id"]
        return task_id

    async def all_of_them() -> list[str | None]:
        async with openai.AsyncOpenAI(
            base_url=f"http://{daemon.http_addr}/v1", api_key=daemon.tokens["operator"], max_retries=0
        ) as api:
            return await asyncio.gather(*(one(api, i) for i in range(200)))

    started = asyncio.run(all_of_them())
    answered = [t for t in started if t is not None]
    assert answered, "some streams fit in the cap"
    assert len(answered) + len(refusals) == 200
    assert refusals, "and the cap refused the rest"
    assert {r.body["code"] for r in refusals} == {"BUDGET_EXHAUSTED"}  # type: ignore[index]
    assert min(int(r.response.headers["Retry-After"]) for r in refusals) >= 1
    with daemon.channel("viewer") as channel:
        stub = tasks_pb2_grpc.TaskServiceStub(channel)
        costs = [
            stub.GetTask(tasks_pb2.GetTaskRequest(task_id=t), timeout=10).task.usage.cost.nano_usd
            for t in answered
        ]
    assert sum(costs) <= cap * 10**9
    assert all(c > 0 for c in costs)


def test_a_caller_that_goes_away_mid_stream_cancels_its_task(daemon: Aiond, stand_in: StandIn) -> None:
    """The provider stalls after a few pieces; the caller reads one and hangs up. The provider call
    stops, the task is canceled, and its slot on the route (one, with one queue place) is free again."""
    stand_in.script(behave.stall(after_chunks=3))
    body = {"model": "summarize", "messages": [{"role": "user", "content": "a long story"}], "stream": True}
    headers = {"Authorization": f"Bearer {daemon.tokens['operator']}", "x-aion-route": "local"}
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", f"http://{daemon.http_addr}/v1/chat/completions", json=body, headers=headers
        ) as streamed,
    ):
        assert streamed.status_code == 200
        task_id = streamed.headers["x-aion-task-id"]
        lines = streamed.iter_lines()
        assert next(line for line in lines if '"content": "' in line and '"content": ""' not in line)
        assert stand_in.in_flight == 1
    with daemon.channel("viewer") as channel:
        stub = tasks_pb2_grpc.TaskServiceStub(channel)
        poll(
            lambda: (
                stub.GetTask(tasks_pb2.GetTaskRequest(task_id=task_id), timeout=10).task.status
                == tasks_pb2.TASK_STATUS_CANCELED
            ),
            timeout=10,
            what="the task canceled",
        )
    poll(lambda: stand_in.in_flight == 0, timeout=10, what="the provider call to stop")
    poll(lambda: gauge(daemon, "aion_budget_reserved_usd") == 0, timeout=10, what="the reservation released")
    answers = [
        client(daemon).chat.completions.create(
            model="summarize",
            messages=[{"role": "user", "content": "next"}],
            extra_headers={"x-aion-route": "local"},
        )
        for _ in range(2)
    ]
    assert [a.choices[0].message.content for a in answers] == ["echo:next"] * 2


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_callers_that_stop_reading_are_cut_off_and_hold_no_memory(tmp_path: Path) -> None:
    """Twenty callers ask for 3 MB answers and read none of them: every task ends, the callers are
    cut off after the write timeout, and aiond's memory stays within what twenty answers take."""
    with StandIn() as stand_in:
        config = write_config(tmp_path, stand_in)
        daemon = Aiond(tmp_path, config_dir=config, extra_args=["--stream-write-timeout", "1"]).start()
        try:
            stand_in.always(behave.huge(3 * 1024 * 1024))
            assert daemon.process.proc is not None
            pid = daemon.process.proc.pid
            before = rss_kib(pid)
            body = {
                "model": "summarize",
                "messages": [{"role": "user", "content": "everything"}],
                "stream": True,
            }
            headers = {"Authorization": f"Bearer {daemon.tokens['operator']}", "x-aion-route": "local"}
            sockets = []
            for _ in range(20):
                sock = socket.create_connection(tuple(daemon.http_addr.rsplit(":", 1)))  # type: ignore[arg-type]
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                payload = json.dumps(body).encode()
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                sock.sendall(
                    f"POST /v1/chat/completions HTTP/1.1\r\nHost: aiond\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n{head}\r\n".encode()
                    + payload
                )
                sockets.append(sock)
            task_ids = [_task_id_of(sock) for sock in sockets]  # the head, and not a byte more
            peak = before
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and stand_in.in_flight + _unfinished(daemon) > 0:
                peak = max(peak, rss_kib(pid))
                time.sleep(0.2)
            assert _unfinished(daemon) == 0, "every unread stream's task ended"
            with daemon.channel("viewer") as channel:
                stub = tasks_pb2_grpc.TaskServiceStub(channel)
                ended = [stub.GetTask(tasks_pb2.GetTaskRequest(task_id=t), timeout=10).task for t in task_ids]
            # each ended: canceled when aiond cut its caller off, or failed when the stand-in's answer
            # (which never ends properly) was all read before the kernel's buffers filled
            assert {t.status for t in ended} <= {tasks_pb2.TASK_STATUS_CANCELED, tasks_pb2.TASK_STATUS_ERROR}
            # at most the answer twice a caller (the provider's text, and what is not sent yet)
            assert (peak - before) < 20 * 7 * 1024, f"aiond grew by {(peak - before) // 1024} MiB"
            for sock in sockets:
                sock.close()
            stand_in.always(None)
            fine = client(daemon).chat.completions.create(
                model="summarize",
                messages=[{"role": "user", "content": "still there?"}],
                max_completion_tokens=2,
            )
            assert fine.choices[0].finish_reason == "length"
        finally:
            daemon.stop()


def _task_id_of(sock: socket.socket) -> str:
    """Read a response's head from ``sock`` (a byte at a time: nothing of the body) and return its
    x-aion-task-id."""
    head = b""
    sock.settimeout(30)
    while not head.endswith(b"\r\n\r\n") and len(head) < 8192:
        head += sock.recv(1)
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("x-aion-task-id:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no task id in {head!r}")


def gauge(daemon: Aiond, *names: str) -> float:
    """The sum of the samples of ``names`` that aiond exports now."""
    text = httpx.get(f"http://{daemon.http_addr}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.split("{", 1)[0].split(" ", 1)[0] in names
    )


def _unfinished(daemon: Aiond) -> int:
    return int(gauge(daemon, "aion_route_tasks_running", "aion_route_queue_depth"))


def test_a_stream_falls_back_before_its_first_token_and_never_after(daemon: Aiond, stand_in: StandIn) -> None:
    """A provider that fails before answering is replaced by the next target of the chain; one that
    fails mid-answer ends the stream with an error event (the caller has half an answer that no
    other target could continue)."""
    api = client(daemon)
    chat = {"model": "summarize", "messages": [{"role": "user", "content": "a fairly long answer here"}],
            "stream": True, "extra_headers": {"x-aion-route": "api"}}  # fmt: skip
    stand_in.script(behave.status(503))
    pieces = [c.choices[0].delta.content or "" for c in api.chat.completions.create(**chat) if c.choices]  # type: ignore[call-overload]
    assert "".join(pieces) == "echo:a fairly long answer here"
    assert stand_in.calls() == 2, "the first target failed before its first token: the next one answered"

    stand_in.clear()
    stand_in.script(behave.stream_error(after_chunks=3))
    got: list[str] = []

    def read() -> None:
        for c in api.chat.completions.create(**chat):  # type: ignore[call-overload]
            if c.choices:
                got.append(c.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as ended:
        read()
    assert "".join(got)
    assert "echo:a fairly long answer here".startswith("".join(got))
    assert "PROVIDER" in str(ended.value)
    assert stand_in.calls() == 1, "no fallback after the first token"


def test_an_idempotency_key_answers_a_repeat_with_the_first_task(daemon: Aiond, stand_in: StandIn) -> None:
    api = client(daemon)
    chat = {"model": "summarize", "messages": [{"role": "user", "content": "once only"}],
            "extra_headers": {"x-aion-route": "api", "Idempotency-Key": "repeat-1"}}  # fmt: skip
    first = api.chat.completions.with_raw_response.create(**chat)  # type: ignore[call-overload]
    again = api.chat.completions.with_raw_response.create(**chat)  # type: ignore[call-overload]
    streamed = api.chat.completions.create(stream=True, **chat)  # type: ignore[call-overload]
    pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert first.headers["x-aion-task-id"] == again.headers["x-aion-task-id"]
    assert again.parse().choices[0].message.content == "echo:once only"
    assert "".join(pieces) == "echo:once only", "a repeat asked as a stream gets the answer as one"
    assert stand_in.calls() == 1


def test_a_draining_daemon_refuses_new_completions_while_running_streams_finish(
    tmp_path: Path, stand_in: StandIn
) -> None:
    """SIGTERM while a completion streams slowly and `aionctl task watch` follows its task over gRPC
    (an in-flight call, which holds the shutdown at the step where gRPC stops taking calls, with the
    HTTP listener still open): a new completion is a 503 in OpenAI's shape with Retry-After, a new
    task over gRPC is refused too, and the stream already running ends whole."""
    # The answer takes seconds: the test waits for its end, which no deadline may come before.
    latency = {"latency": {"p95_ms": {"local": 10_000, "api": 2000, "hybrid": 2300}}}
    config = write_config(tmp_path, stand_in, policies=latency)
    models = yaml.safe_load((config / "models.yml").read_text())
    for provider in models["providers"].values():
        provider["timeout_ms"] = 20_000
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    daemon = Aiond(tmp_path, config_dir=config).start()
    try:
        stand_in.script(behave.trickle(0.2))
        text = "a slow answer, still being written when aiond is told to stop"
        chat = {"model": "summarize", "messages": [{"role": "user", "content": text}],
                "extra_headers": {"x-aion-route": "local"}}  # fmt: skip
        chunks = iter(client(daemon).chat.completions.create(stream=True, **chat))  # type: ignore[call-overload]
        first = next(c for c in chunks if c.choices and c.choices[0].delta.content)
        got = [first.choices[0].delta.content or ""]
        task_id = first.id.removeprefix("chatcmpl-")
        viewer = {**os.environ, **daemon.aionctl_env("viewer")}
        watch_argv = [program("aionctl"), "task", "watch", task_id, "-o", "json"]
        with subprocess.Popen(watch_argv, env=viewer, stdout=subprocess.PIPE) as watching:
            assert watching.stdout is not None
            watched = Reader(watching.stdout)
            try:
                poll(lambda: "\n" in watched.text() or None, timeout=15, what="the watch's first state")
                daemon.process.signal(signal.SIGTERM)
                poll(
                    lambda: "no new work taken" in daemon.process.log_path.read_text() or None,
                    timeout=10,
                    what="the drain to stop taking work",
                )
                with pytest.raises(openai.InternalServerError) as refused:
                    client(daemon).chat.completions.create(**chat)  # type: ignore[call-overload]
                assert stand_in.in_flight == 1, "the first answer is still being written"
                error = refused.value
                assert error.status_code == 503
                assert error.body == {
                    "message": "aiond is shutting down and takes no new tasks (retry in a moment: another "
                    "instance, or this one once it is back)",
                    "type": "api_error",
                    "param": None,
                    "code": "draining",
                }
                assert (error.response.headers["Retry-After"], error.response.headers["retry-after-ms"]) == (
                    "1",
                    "1000",
                )
                over_grpc = aionctl("task", "submit", "summarize", "--text", "x", "--timeout", "5",
                                    env=daemon.aionctl_env("operator"))  # fmt: skip
                assert over_grpc.returncode == 5, over_grpc.stderr
                got += [c.choices[0].delta.content or "" for c in chunks if c.choices]
                assert watching.wait(30) == 0
            finally:
                if watching.poll() is None:
                    watching.kill()
                watched.join()
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.stop()
    assert "".join(got) == f"echo:{text}"
    states = [json.loads(line) for line in watched.text().splitlines()]
    assert states[-1]["status"] == "ok"
    assert stand_in.calls() == 1, "nothing refused reached the provider"
