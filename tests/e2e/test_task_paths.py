"""More task paths through a real aiond and a real stand-in provider: the hybrid route's local step,
cancellation, answers cut off part-way, the Anthropic wire format, and memory under a refusal flood."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from tests.e2e.test_tasks import KEY, only_anthropic_in_the_api_tier, start, submit, targets, write_config
from tests.integration.supply import conforms
from tests.rig import providers as behave
from tests.rig.daemon import Aiond, aionctl
from tests.rig.providers import StandIn


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, stand_in: StandIn) -> Iterator[Aiond]:
    d = start(tmp_path, stand_in)
    yield d
    d.stop()


def test_hybrid_redacts_locally_then_completes_in_the_cloud(daemon: Aiond, stand_in: StandIn) -> None:
    task = submit(daemon, "draft_reply", "Dear Ann Smith, your order 42 shipped.").task
    assert task.status == tasks_pb2.TASK_STATUS_OK
    prepare, complete = stand_in.requests[:2]
    assert prepare.model == "qwen2.5"  # the local step, on this host
    system = prepare.body["messages"][0]
    assert system["role"] == "system"
    assert "remove or replace names" in system["content"]
    assert complete.model == "gpt-4.1-mini"  # the completion, in the cloud
    sent = complete.body["messages"][-1]["content"]
    assert sent.startswith("echo:")  # what the local step produced, not the raw input
    assert sent != "Dear Ann Smith, your order 42 shipped."
    assert [t for t, _ in targets(task)] == ["ollama:qwen2.5", "openai:gpt-4.1-mini"]


def test_a_failed_local_step_skips_hybrid_and_never_sends_raw_input_out(
    daemon: Aiond, stand_in: StandIn
) -> None:
    stand_in.always(behave.status(503), model="qwen2.5")
    task = submit(daemon, "draft_reply", "Dear Ann Smith, your order 42 shipped.").task
    assert task.status == tasks_pb2.TASK_STATUS_OK
    cloud = [r for r in stand_in.requests if r.model not in ("qwen2.5", "llama3.1")]
    assert cloud == []  # no local step, no cloud: draft_reply falls back to its local route
    assert targets(task)[-1] == ("vllm:llama3.1", "TASK_STATUS_OK")


def test_a_running_task_can_be_cancelled(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.hang())
    task = submit(daemon, "summarize", wait=False).task
    result = aionctl(
        "task", "cancel", task.task_id, "--reason", "test", "-o", "json", env=daemon.aionctl_env("operator")
    )
    assert result.returncode == 0, result.stderr
    cancelled = conforms(json.loads(result.stdout), "output/task")
    assert (cancelled["taskId"], cancelled["status"]) == (task.task_id, "canceled")
    with daemon.channel("viewer") as channel:
        got = tasks_pb2_grpc.TaskServiceStub(channel).GetTask(
            tasks_pb2.GetTaskRequest(task_id=task.task_id), timeout=10
        )
    assert got.task.status == tasks_pb2.TASK_STATUS_CANCELED
    assert got.task.error.code == "CANCELED"
    unknown = aionctl("task", "get", "no-such-task", env=daemon.aionctl_env("viewer"))
    assert unknown.returncode == 3


def test_a_task_failing_everywhere_reports_its_first_cause_and_its_last(
    daemon: Aiond, stand_in: StandIn
) -> None:
    stand_in.always(behave.status(503), model="qwen2.5")
    stand_in.always(behave.cut_stream(after_chunks=1), model="llama3.1")
    env = daemon.aionctl_env("operator")
    args = ("task", "submit", "summarize", "--route", "local", "--text", "note 7", "--wait")
    as_json = aionctl(*args, "-o", "json", env=env)
    assert as_json.returncode == 1, as_json.stderr
    task = conforms(json.loads(as_json.stdout), "output/task")
    assert task["status"] == "error"
    assert {a["outcome"] for a in task["attempts"]} == {"error"}
    first, last = task["firstError"], task["error"]
    assert first["message"].startswith("ollama:qwen2.5: ")  # the first failure, with where it happened
    assert first["code"] == task["attempts"][0]["error"]["code"]
    assert last["code"] == task["attempts"][-1]["error"]["code"] != first["code"]
    as_text = aionctl(*args, env=env)
    assert as_text.returncode == 1, as_text.stderr
    lines = as_text.stdout.splitlines()
    (first_line,) = [n for n, line in enumerate(lines) if line.startswith("first error: ")]
    (error_line,) = [n for n, line in enumerate(lines) if line.startswith("error:   ")]
    assert first_line + 1 == error_line
    assert lines[first_line].startswith(f"first error: {first['code']}: ollama:qwen2.5: ")
    assert lines[error_line].startswith(f"error:   {last['code']}: ")


def test_an_answer_cut_off_part_way_fails_over(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.cut_stream(after_chunks=1), model="qwen2.5")
    task = submit(daemon, "summarize").task
    assert task.status == tasks_pb2.TASK_STATUS_OK
    codes = {a.error.code for a in task.attempts if a.error.code}
    assert codes
    assert codes <= {"PROVIDER_CUT_OFF", "PROVIDER_PROTOCOL"}
    assert targets(task)[-1][0] == "vllm:llama3.1"


def test_the_anthropic_wire_format(tmp_path: Path, stand_in: StandIn) -> None:
    config = write_config(
        tmp_path, stand_in, policies={"providers": {"allow": ["ollama", "vllm", "anthropic"]}}
    )
    only_anthropic_in_the_api_tier(config, stand_in, KEY)
    daemon = Aiond(tmp_path, config_dir=config).start()
    try:
        task = submit(daemon, "summarize", "hello claude", route=common_pb2.ROUTE_API).task
        assert task.status == tasks_pb2.TASK_STATUS_OK
        assert targets(task) == [("anthropic:claude-haiku", "TASK_STATUS_OK")]
        assert task.result.text.startswith("echo:hello claude")
        (request,) = [r for r in stand_in.requests if r.path == "/v1/messages"]
        assert request.headers.get("x-api-key") == "<redacted>"
        assert "anthropic-version" in request.headers
        assert task.usage.cost.nano_usd > 0
    finally:
        daemon.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_stays_flat_under_a_flood_of_refusals(tmp_path: Path, stand_in: StandIn) -> None:
    # One slot and one queue place on the local route, held for the whole test: the two tasks hang on
    # local models whose timeout and route deadline outlast any flood, however slow the machine.
    config = write_config(tmp_path, stand_in, policies={
        "limits": {"concurrency": {"local": 1}, "queue_depth": {"local": 1}},
        "latency": {"p95_ms": {"local": 600_000, "api": 2000, "hybrid": 2300}},
    })  # fmt: skip
    models = yaml.safe_load((config / "models.yml").read_text())
    for local in ("ollama", "vllm"):
        models["providers"][local]["timeout_ms"] = 600_000
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    daemon = Aiond(tmp_path, config_dir=config).start()
    try:
        stand_in.always(behave.hang())
        submit(daemon, "summarize", wait=False)
        submit(daemon, "summarize", wait=False)  # the one running and the one queued

        def flood(n: int) -> int:
            refused = 0
            with daemon.channel("operator") as channel:
                stub = tasks_pb2_grpc.TaskServiceStub(channel)
                request = tasks_pb2.SubmitTaskRequest(
                    intent="summarize", input=tasks_pb2.TaskInput(text="x" * 1000)
                )
                for _ in range(n):
                    try:
                        stub.SubmitTask(request, timeout=5)
                    except grpc.RpcError as exc:
                        refused += exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            return refused

        assert flood(500) == 500  # warm up: every one refused at once
        before = rss_kib(daemon.process.pid)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            assert sum(pool.map(flood, [1000] * 4)) == 4000
        grown = rss_kib(daemon.process.pid) - before
        assert grown < 20 * 1024, f"RSS grew by {grown} KiB over 4,000 refusals"
    finally:
        daemon.stop()
