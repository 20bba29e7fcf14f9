"""Tasks end to end: a real aiond routing to a real stand-in provider over HTTP, driven over gRPC and by
aionctl. Failover, retries with Retry-After, breakers opening and recovering, deadlines, budgets under
concurrency, backpressure, idempotency and the task events."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from tests.integration.supply import conforms
from tests.rig import providers as behave
from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.procs import poll
from tests.rig.providers import StandIn, refused_url

KEY = "sk-stand-in-0123456789"


def write_config(root: Path, stand_in: StandIn, *, policies: dict[str, Any] | None = None,
                 local_url: str | None = None) -> Path:  # fmt: skip
    """The example config set with every provider pointed at the stand-in (local ones optionally at
    another URL), and the API keys in a files secret backend."""
    config = root / "config"
    shutil.copytree(EXAMPLES, config)
    secrets = root / "secrets"
    secrets.mkdir()
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "HF_TOKEN"):
        (secrets / name).write_text(KEY + "\n")
    models = yaml.safe_load((config / "models.yml").read_text())
    models["providers"] = {
        "ollama": {"base_url": local_url or stand_in.url, "locality": "local", "timeout_ms": 2000},
        "vllm": {"base_url": local_url or stand_in.url, "locality": "local", "timeout_ms": 2000},
        "openai": {"base_url": stand_in.url, "api_key_secret": "OPENAI_API_KEY", "timeout_ms": 2000},
        "azure": {"base_url": stand_in.url, "api_key_secret": "AZURE_OPENAI_API_KEY", "timeout_ms": 2000},
        "hf": {"base_url": stand_in.url, "api_key_secret": "HF_TOKEN", "timeout_ms": 2000},
    }
    models["secrets"] = {"backend": "files", "directory": str(secrets)}
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    doc = yaml.safe_load((config / "policies.yml").read_text())
    for section, values in (policies or {}).items():
        doc.setdefault(section, {}).update(values)
    (config / "policies.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    result = aionctl("validate", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    return config


def only_anthropic_in_the_api_tier(config: Path, stand_in: StandIn, key: str) -> None:
    """Make the API tier of ``config`` (made by :func:`write_config`, whose policies must allow the
    provider ``anthropic``) one Anthropic model on the stand-in, so the API route speaks that wire
    format; its key goes into the secrets directory beside the config."""
    models = yaml.safe_load((config / "models.yml").read_text())
    models["tiers"]["tier1"]["cloud"] = ["anthropic:claude-haiku"]
    models["providers"]["anthropic"] = {
        "api": "anthropic", "base_url": stand_in.anthropic_url, "api_key_secret": "ANTHROPIC_API_KEY",
        "timeout_ms": 2000,
    }  # fmt: skip
    models["models"]["anthropic:claude-haiku"] = {
        "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 5.0,
        "context_window": 200000, "max_output_tokens": 1024,
    }  # fmt: skip
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    (config.parent / "secrets" / "ANTHROPIC_API_KEY").write_text(key + "\n")
    result = aionctl("validate", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """One stand-in serves the local and the cloud providers alike. It checks no key (local model
    servers take none); the test of cloud calls checks that the key went along, redacted in the record."""
    with StandIn() as server:
        yield server


def start(tmp_path: Path, stand_in: StandIn, **kwargs: Any) -> Aiond:
    return Aiond(tmp_path, config_dir=write_config(tmp_path, stand_in, **kwargs)).start()


@pytest.fixture
def daemon(tmp_path: Path, stand_in: StandIn) -> Iterator[Aiond]:
    d = start(tmp_path, stand_in)
    yield d
    d.stop()


def submit(
    daemon: Aiond,
    intent: str,
    text: str = "hello",
    *,
    wait: bool = True,
    route: common_pb2.Route.ValueType = common_pb2.ROUTE_UNSPECIFIED,
    budget_nano: int | None = None,
    key: str = "",
    timeout: float = 30,
) -> tasks_pb2.SubmitTaskResponse:
    hints = tasks_pb2.RoutingHints(route_override=route)
    if budget_nano is not None:
        hints.budget.CopyFrom(common_pb2.UsdAmount(nano_usd=budget_nano))
    request = tasks_pb2.SubmitTaskRequest(intent=intent, input=tasks_pb2.TaskInput(text=text), hints=hints,
                                          wait=wait, idempotency_key=key)  # fmt: skip
    with daemon.channel("operator") as channel:
        reply: tasks_pb2.SubmitTaskResponse = tasks_pb2_grpc.TaskServiceStub(channel).SubmitTask(
            request, timeout=timeout
        )
        return reply


def targets(task: tasks_pb2.Task) -> list[tuple[str, str]]:
    """(provider:model, outcome) of every attempt."""
    return [
        (f"{a.target.provider}:{a.target.name}", tasks_pb2.TaskStatus.Name(a.outcome)) for a in task.attempts
    ]


def test_a_task_runs_on_the_decided_target_and_reports_usage_and_cost(
    daemon: Aiond, stand_in: StandIn
) -> None:
    reply = submit(daemon, "summarize", "Summarise this short note, please.")
    task = reply.task
    assert task.status == tasks_pb2.TASK_STATUS_OK
    assert task.result.text.startswith("echo:Summarise this short note")
    assert targets(task) == [("ollama:qwen2.5", "TASK_STATUS_OK")]
    assert task.usage.input_tokens > 0
    assert task.usage.output_tokens > 0
    assert task.usage.cost.nano_usd == 0  # a local model costs nothing
    assert stand_in.calls(model="qwen2.5") == 1
    # An API route costs its tokens at the model's prices, exactly.
    api = submit(daemon, "summarize", "x" * 400, route=common_pb2.ROUTE_API).task
    assert api.status == tasks_pb2.TASK_STATUS_OK
    first = api.attempts[0].target
    assert (first.provider, first.name) == ("openai", "gpt-4.1-mini")
    prices = {"in": Decimal("0.40"), "out": Decimal("1.60")}  # examples/models.yml
    expected = (api.usage.input_tokens * prices["in"] + api.usage.output_tokens * prices["out"]) * 1000
    assert api.usage.cost.nano_usd == int(expected.to_integral_value(rounding="ROUND_CEILING"))
    cloud = [r for r in stand_in.requests if r.model == "gpt-4.1-mini"]
    local = [r for r in stand_in.requests if r.model == "qwen2.5"]
    assert cloud[0].headers.get("authorization") == "<redacted>"  # the key from the secret file went along
    assert "authorization" not in local[0].headers


def test_failover_walks_the_chain_and_records_every_attempt(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.status(503), model="qwen2.5")
    stand_in.always(behave.status(500), model="llama3.1")
    task = submit(daemon, "summarize").task
    assert task.status == tasks_pb2.TASK_STATUS_OK
    outcomes = targets(task)
    assert outcomes[-1] == ("openai:gpt-4.1-mini", "TASK_STATUS_OK")
    assert [t for t, _ in outcomes[:-1]] == ["ollama:qwen2.5"] * 2 + ["vllm:llama3.1"] * 2  # 2 attempts each
    assert all(o == "TASK_STATUS_ERROR" for _, o in outcomes[:-1])


def test_a_local_only_intent_never_reaches_a_cloud_model(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.status(503), model="qwen2.5")
    stand_in.always(behave.status(503), model="llama3.1")
    task = submit(daemon, "invoice_ocr").task
    assert task.status == tasks_pb2.TASK_STATUS_ERROR
    assert {t.split(":")[0] for t, _ in targets(task)} <= {"ollama", "vllm"}
    cloud_calls = [r for r in stand_in.requests if r.model and not r.model.startswith(("qwen", "llama"))]
    assert cloud_calls == []


def test_429_retry_after_is_honoured(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.script(behave.rate_limited(0.4), model="qwen2.5")
    task = submit(daemon, "summarize").task
    assert task.status == tasks_pb2.TASK_STATUS_OK
    assert targets(task) == [("ollama:qwen2.5", "TASK_STATUS_ERROR"), ("ollama:qwen2.5", "TASK_STATUS_OK")]
    first, second = task.attempts
    assert first.error.code == "RATE_LIMITED"
    waited = second.started_at.ToDatetime() - first.started_at.ToDatetime()
    assert waited.total_seconds() >= 0.4  # it waited as the provider asked


def test_timeouts_and_refused_connections_fail_over(tmp_path: Path, stand_in: StandIn) -> None:
    daemon = start(tmp_path, stand_in, local_url=refused_url())  # local providers: connection refused
    try:
        task = submit(daemon, "summarize").task
        assert task.status == tasks_pb2.TASK_STATUS_OK
        codes = [a.error.code for a in task.attempts if a.error.code]
        assert set(codes) == {"PROVIDER_UNAVAILABLE"}
        stand_in.always(behave.hang(), model="gpt-4.1-mini")
        slow = submit(daemon, "summarize", route=common_pb2.ROUTE_API).task
        assert slow.status == tasks_pb2.TASK_STATUS_OK
        assert slow.attempts[0].error.code == "PROVIDER_TIMEOUT"
        assert slow.attempts[-1].target.name == "gpt-4o-mini"
    finally:
        daemon.stop()


def test_a_deadline_from_the_caller_ends_the_task(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.hang())
    task = submit(daemon, "summarize", timeout=1.5).task
    assert task.status == tasks_pb2.TASK_STATUS_TIMEOUT
    assert task.error.code == "DEADLINE_EXCEEDED"


def test_breakers_open_on_failures_and_recover_through_half_open(tmp_path: Path, stand_in: StandIn) -> None:
    # The cooldown outlasts the checks below on a loaded machine (an aionctl run and two tasks), so
    # the breaker cannot turn half-open before the test has seen it skipped.
    policies = {"breakers": {"failure_ratio": 0.5, "window": 4, "min_requests": 2, "cooldown_ms": 5000},
                "retries": {"max_attempts": 1}}  # fmt: skip
    daemon = start(tmp_path, stand_in, policies=policies)
    try:
        stand_in.always(behave.status(503), model="qwen2.5")
        for _ in range(2):
            submit(daemon, "summarize")
        listed = json.loads(aionctl("breaker", "list", "-o", "json", env=daemon.aionctl_env("viewer")).stdout)
        states = {(b["provider"], b["model"]): b["state"] for b in listed["breakers"]}
        assert states[("ollama", "qwen2.5")] == "open"
        before = stand_in.calls(model="qwen2.5")
        task = submit(daemon, "summarize").task
        assert targets(task)[0][0] == "vllm:llama3.1"  # the open breaker is skipped
        assert stand_in.calls(model="qwen2.5") == before
        stand_in.clear()

        def recovered() -> tasks_pb2.Task | None:
            t = submit(daemon, "summarize").task
            return t if targets(t)[0] == ("ollama:qwen2.5", "TASK_STATUS_OK") else None

        poll(recovered, timeout=20, what="half-open probe closing the breaker")
        listed = json.loads(aionctl("breaker", "list", "-o", "json", env=daemon.aionctl_env("viewer")).stdout)
        states = {(b["provider"], b["model"]): b["state"] for b in listed["breakers"]}
        assert states[("ollama", "qwen2.5")] == "closed"
        metrics = daemon_metrics(daemon)
        assert 'aion_breaker_transitions_total{breaker="ollama:qwen2.5",to="open"}' in metrics
        assert 'aion_breaker_transitions_total{breaker="ollama:qwen2.5",to="half-open"}' in metrics
    finally:
        daemon.stop()


def daemon_metrics(daemon: Aiond) -> str:
    import httpx

    return httpx.get(f"http://{daemon.http_addr}/metrics", timeout=5, trust_env=False).text


def test_concurrent_tasks_never_spend_more_than_the_daily_cap(tmp_path: Path, stand_in: StandIn) -> None:
    cap = Decimal("0.05")
    policies = {
        "budget": {"daily_cap_usd": float(cap)},
        "limits": {"concurrency": {"api": 64}, "queue_depth": {"api": 512}},
    }
    daemon = start(tmp_path, stand_in, policies=policies)
    try:
        stand_in.always(behave.slow(0.2))

        def one(i: int) -> tuple[str, int]:
            try:
                task = submit(daemon, "summarize", "y" * 2000, route=common_pb2.ROUTE_API, key=f"k{i}").task
            except grpc.RpcError as exc:
                metadata: Any = exc.trailing_metadata()  # the error of a call is its grpc.Call too
                trailers = {str(k): v for k, v in metadata or ()}
                refused = (
                    exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                    and "BUDGET_EXHAUSTED" in str(exc.details())
                    and trailers.get("aion-error") == "budget-exhausted"
                    and float(trailers["retry-after-ms"]) >= 1000
                )
                return ("refused" if refused else f"failed: {exc}"), 0
            return tasks_pb2.TaskStatus.Name(task.status), task.usage.cost.nano_usd

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(one, range(200)))
        ok = [cost for status, cost in results if status == "TASK_STATUS_OK"]
        refused = [r for r in results if r[0] == "refused"]
        assert ok, results[:5]  # some ran ...
        assert refused, results[:5]  # ... and the cap stopped the rest
        assert sum(ok) <= int(cap * 10**9)
        assert len(ok) + len(refused) == 200
        metrics = daemon_metrics(daemon)
        spent = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("aion_budget_spent_usd_total")
        )
        assert spent == pytest.approx(sum(ok) / 1e9)
    finally:
        daemon.stop()


def test_a_saturated_route_refuses_at_once_with_a_retry_hint(tmp_path: Path, stand_in: StandIn) -> None:
    policies = {"limits": {"concurrency": {"local": 2}, "queue_depth": {"local": 2}}}
    daemon = start(tmp_path, stand_in, policies=policies)
    try:
        stand_in.always(behave.slow(3))
        admitted = [submit(daemon, "summarize", wait=False).task for _ in range(4)]
        assert all(
            t.status in (tasks_pb2.TASK_STATUS_QUEUED, tasks_pb2.TASK_STATUS_RUNNING) for t in admitted
        )
        with pytest.raises(grpc.RpcError) as raised:
            submit(daemon, "summarize", wait=False)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        hint = next(m.value for m in raised.value.trailing_metadata() or () if m.key == "retry-after-ms")
        assert int(hint) >= 100
        cli = aionctl("task", "submit", "summarize", "--text", "hi", env=daemon.aionctl_env("operator"))
        assert cli.returncode == 5
        assert "saturated" in cli.stderr
        metrics = daemon_metrics(daemon)
        assert 'aion_route_queue_depth{route="local"} 2.0' in metrics
        assert 'aion_task_rejections_total{reason="ROUTE_SATURATED"} 2.0' in metrics  # the call and the CLI's
    finally:
        daemon.stop()


def test_an_idempotency_key_returns_the_first_task_without_a_second_call(
    daemon: Aiond, stand_in: StandIn
) -> None:
    first = submit(daemon, "summarize", key="order-17")
    again = submit(daemon, "summarize", key="order-17")
    assert not first.deduplicated
    assert again.deduplicated
    assert again.task.task_id == first.task.task_id
    assert stand_in.calls() == 1


def test_aionctl_submits_watches_and_reads_tasks(daemon: Aiond, stand_in: StandIn) -> None:
    done = aionctl("task", "submit", "summarize", "--text", "hello there", "--wait", "-o", "json",
                   env=daemon.aionctl_env("operator"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    task = conforms(json.loads(done.stdout), "output/task")
    assert (task["kind"], task["status"], task["deduplicated"]) == ("Task", "ok", False)
    assert task["result"]["text"].startswith("echo:hello there")
    # Numbers are numbers and enums the words the text shows, down to every attempt.
    assert (task["decision"]["route"], task["decision"]["chosenBy"]) == ("local", "router")
    assert task["decision"]["policyVersion"] == 1
    assert task["usage"]["cost"] == {"nanoUsd": 0}  # a local model costs nothing
    assert [(a["number"], a["outcome"], a["target"]["kind"]) for a in task["attempts"]] == [
        (1, "ok", "model")
    ]
    assert "error" not in task
    assert "firstError" not in task
    got = aionctl("task", "get", task["taskId"], env=daemon.aionctl_env("viewer"))
    assert got.returncode == 0
    assert "status:  ok" in got.stdout
    assert "route:   local -> ollama:qwen2.5" in got.stdout
    assert "  attempt 1: ollama:qwen2.5 ok" in got.stdout
    as_yaml = aionctl("task", "get", task["taskId"], "-o", "yaml", env=daemon.aionctl_env("viewer"))
    assert {**conforms(yaml.safe_load(as_yaml.stdout), "output/task"), "deduplicated": False} == task
    # A watch prints one document per change: JSON Lines, or a YAML document after each ---.
    watched = aionctl("task", "watch", task["taskId"], "-o", "json", env=daemon.aionctl_env("viewer"))
    assert watched.returncode == 0, watched.stderr
    changes = [conforms(json.loads(line), "output/task") for line in watched.stdout.splitlines()]
    assert changes[-1]["status"] == "ok"
    watched = aionctl("task", "watch", task["taskId"], "-o", "yaml", env=daemon.aionctl_env("viewer"))
    assert [conforms(d, "output/task") for d in yaml.safe_load_all(watched.stdout)] == changes
    refused = aionctl(
        "task", "submit", "invoice_ocr", "--route", "api", "--text", "x", env=daemon.aionctl_env("operator")
    )
    assert refused.returncode == 1
    assert "ROUTE_NOT_PERMITTED" in refused.stderr
    viewer = aionctl("task", "submit", "summarize", "--text", "x", env=daemon.aionctl_env("viewer"))
    assert viewer.returncode == 4


def test_decisions_and_lifecycle_are_recorded_as_events(daemon: Aiond) -> None:
    task_id = submit(daemon, "draft_reply", "Dear Ann, your order 42 shipped.").task.task_id

    def events() -> list[dict[str, Any]] | None:
        topics = ("--topic", "aion.router.decisions", "--topic", "aion.tasks.lifecycle")
        result = aionctl(
            "events", "tail", "-o", "json", "-n", "50", *topics, env=daemon.aionctl_env("viewer")
        )
        lines = result.stdout.splitlines()
        found = [json.loads(x) for x in lines]
        mine = [e for e in found if e.get("task_id") == task_id]
        return mine if any(e.get("status") == "ok" for e in mine) else None

    mine = poll(events, timeout=10, what="task events")
    assert all(conforms(e, "output/event")["kind"] == "EventRecord" for e in mine)
    decision = next(e for e in mine if e["topic"] == "aion.router.decisions")
    conforms(without_envelope(decision), "events/decision")
    assert decision["route"] == "hybrid"
    assert decision["prepare"] == "ollama:qwen2.5"  # the local step: redaction by a local model
    states = [e["status"] for e in mine if e["topic"] == "aion.tasks.lifecycle"]
    assert states == ["ok"]  # admitted at once (no queue): the decision event, then the end
    for e in mine:
        if e["topic"] == "aion.tasks.lifecycle":
            conforms(without_envelope(e), "events/lifecycle")


def without_envelope(record: dict[str, Any]) -> dict[str, Any]:
    """An ``events tail`` document as the event was recorded: without apiVersion, kind and sequence."""
    return {k: v for k, v in record.items() if k not in ("apiVersion", "kind", "sequence")}
