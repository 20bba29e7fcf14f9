"""A task's answer streamed to its watchers: a real aiond, the real stand-in provider (both wire formats,
answers in pieces of four characters) and the real aionctl. WatchTask interleaves the pieces with the
states; every watcher gets every piece; a failure after the first piece ends the task; the hybrid
step's rewrite never streams; ``aionctl task submit --wait --stream`` and ``aionctl task watch`` print
the text as it comes."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from tests.e2e.test_tasks import KEY, only_anthropic_in_the_api_tier, write_config
from tests.integration.supply import conforms
from tests.rig import providers as behave
from tests.rig.daemon import Aiond, aionctl, program
from tests.rig.procs import poll
from tests.rig.providers import StandIn

Change = tuple[str, Any]
"""("delta", text) or ("task", tasks_pb2.Task): one message of a watch."""


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def _start(root: Path, stand_in: StandIn, retries: int) -> Aiond:
    """A daemon whose local route speaks the OpenAI wire format and whose API tier is one Anthropic
    model; ``retries``: attempts per target. One task runs at a time on each route (see
    :func:`watched_from_the_queue`). Models may take 20 s, so that a stalled or hanging answer is ended
    by the test, not by the provider's timeout."""
    policies = {
        "providers": {"allow": ["ollama", "vllm", "anthropic"]},
        "retries": {"max_attempts": retries},
        "latency": {"p95_ms": {"local": 10_000, "api": 2000, "hybrid": 2300}},
        "limits": {"concurrency": {"local": 1, "api": 1, "hybrid": 1},
                   "queue_depth": {"local": 4, "api": 4, "hybrid": 4}},
    }  # fmt: skip
    config = write_config(root, stand_in, policies=policies)
    only_anthropic_in_the_api_tier(config, stand_in, KEY)
    models = yaml.safe_load((config / "models.yml").read_text())
    for provider in ("ollama", "vllm", "anthropic"):
        models["providers"][provider]["timeout_ms"] = 20_000
    (config / "models.yml").write_text(yaml.safe_dump(models, sort_keys=False))
    return Aiond(root, config_dir=config).start()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, stand_in: StandIn) -> Iterator[Aiond]:
    """One attempt per target: a failure moves on to the next target at once."""
    d = _start(tmp_path_factory.mktemp("streaming"), stand_in, retries=1)
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def fresh(stand_in: StandIn) -> None:
    stand_in.clear()


def submit(
    daemon: Aiond,
    intent: str,
    text: str,
    *,
    stream: bool = True,
    route: common_pb2.Route.ValueType = common_pb2.ROUTE_UNSPECIFIED,
    key: str = "",
) -> tasks_pb2.SubmitTaskResponse:
    request = tasks_pb2.SubmitTaskRequest(
        intent=intent,
        input=tasks_pb2.TaskInput(text=text),
        hints=tasks_pb2.RoutingHints(route_override=route),
        stream=stream,
        idempotency_key=key,
    )
    with daemon.channel("operator") as channel:
        reply: tasks_pb2.SubmitTaskResponse = tasks_pb2_grpc.TaskServiceStub(channel).SubmitTask(
            request, timeout=30
        )
        return reply


class Watcher:
    """A WatchTask call read in a thread of its own, every message kept as it arrives."""

    def __init__(self, daemon: Aiond, task_id: str) -> None:
        self.changes: list[Change] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(daemon, task_id), daemon=True)
        self._thread.start()

    def _read(self, daemon: Aiond, task_id: str) -> None:
        try:
            with daemon.channel("viewer") as channel:
                replies = tasks_pb2_grpc.TaskServiceStub(channel).WatchTask(
                    tasks_pb2.WatchTaskRequest(task_id=task_id), timeout=30
                )
                for reply in replies:
                    which = reply.WhichOneof("change")
                    self.changes.append(("delta", reply.delta) if which == "delta" else ("task", reply.task))
        except BaseException as exc:  # handed to the test's thread by done()
            self.error = exc

    def pieces(self) -> list[str]:
        return [value for kind, value in list(self.changes) if kind == "delta"]

    def done(self) -> list[Change]:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the watch did not end"
        if self.error is not None:
            raise self.error
        return self.changes


def watch(daemon: Aiond, task_id: str) -> list[Change]:
    return Watcher(daemon, task_id).done()


def cancel(daemon: Aiond, task_id: str) -> None:
    with daemon.channel("operator") as channel:
        tasks_pb2_grpc.TaskServiceStub(channel).CancelTask(
            tasks_pb2.CancelTaskRequest(task_id=task_id, reason="the test is done with it"), timeout=10
        )


def watched_from_the_queue(
    daemon: Aiond,
    stand_in: StandIn,
    intent: str,
    text: str,
    *,
    model: str,
    route: common_pb2.Route.ValueType = common_pb2.ROUTE_UNSPECIFIED,
    then: Sequence[behave.Behaviour] = (),
) -> tuple[str, list[Change]]:
    """Submit a streamed task and watch it from before it starts: an earlier task of the same intent
    and route holds the route's one slot, hanging on ``model`` (its first call), until the watch has
    the queued task's first state; ``then``: what ``model`` does next. Returns the task's id and
    everything the watch got."""
    stand_in.script(behave.hang(), *then, model=model)
    blocker = submit(daemon, intent, "hold the slot", stream=False, route=route).task.task_id
    poll(lambda: stand_in.calls(model=model) >= 1 or None, timeout=15, what="the slot taken")
    try:
        task = submit(daemon, intent, text, route=route).task
        assert task.status == tasks_pb2.TASK_STATUS_QUEUED
        watcher = Watcher(daemon, task.task_id)
        poll(lambda: watcher.changes or None, timeout=15, what="the queued task's first state")
    finally:
        cancel(daemon, blocker)
    return task.task_id, watcher.done()


def answered(stand_in: StandIn) -> list[Any]:
    """The requests after the one that held the slot."""
    return stand_in.requests[1:]


def pieces(changes: list[Change]) -> list[str]:
    return [value for kind, value in changes if kind == "delta"]


def states(changes: list[Change]) -> list[tasks_pb2.Task]:
    return [value for kind, value in changes if kind == "task"]


def final(changes: list[Change]) -> tasks_pb2.Task:
    kind, task = changes[-1]
    assert kind == "task", "a watch ends with the task's terminal state"
    assert isinstance(task, tasks_pb2.Task)
    return task


@pytest.mark.parametrize(
    ("route", "path", "model"),
    [
        (common_pb2.ROUTE_LOCAL, "/v1/chat/completions", "qwen2.5"),
        (common_pb2.ROUTE_API, "/v1/messages", "claude-haiku"),
    ],
    ids=["openai-wire", "anthropic-wire"],
)
def test_a_watch_gets_the_pieces_in_order_between_the_states(
    daemon: Aiond, stand_in: StandIn, route: common_pb2.Route.ValueType, path: str, model: str
) -> None:
    text = "stream this answer to every watcher, please"
    task_id, changes = watched_from_the_queue(daemon, stand_in, "summarize", text, model=model, route=route)
    assert changes[0][0] == "task"
    assert changes[0][1].status == tasks_pb2.TASK_STATUS_QUEUED
    got = pieces(changes)
    done = final(changes)
    assert done.status == tasks_pb2.TASK_STATUS_OK
    assert done.result.text == f"echo:{text}"
    answer = done.result.text
    assert got == [answer[i : i + 4] for i in range(0, len(answer), 4)]  # the stand-in's, each once, in order
    # Every piece comes after the task started running and before the terminal state.
    first_piece = next(i for i, (kind, _) in enumerate(changes) if kind == "delta")
    assert states(changes[:first_piece])[-1].status == tasks_pb2.TASK_STATUS_RUNNING
    last_piece = max(i for i, (kind, _) in enumerate(changes) if kind == "delta")
    between = states(changes[first_piece:last_piece])
    assert all(s.status == tasks_pb2.TASK_STATUS_RUNNING for s in between)
    assert [s.status for s in states(changes[last_piece:])][-1] == tasks_pb2.TASK_STATUS_OK
    (request,) = answered(stand_in)
    assert (request.path, request.body.get("stream")) == (path, True)
    # A watch that starts after the end gets the final state alone: the result holds the text.
    (late,) = watch(daemon, task_id)
    assert late[0] == "task"
    assert late[1].result.text == done.result.text


def test_a_task_submitted_without_stream_is_watched_as_before(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.script(behave.slow(1), model="qwen2.5")
    task_id = submit(daemon, "summarize", "no streaming here", stream=False).task.task_id
    changes = watch(daemon, task_id)
    assert len(changes) >= 2, "the watch began before the end"
    assert pieces(changes) == []
    assert final(changes).result.text == "echo:no streaming here"
    assert stand_in.requests[0].body.get("stream") in (None, False)


def test_every_watcher_gets_every_piece_from_the_first(daemon: Aiond, stand_in: StandIn) -> None:
    # Four events, then silence: the pieces so far are out, the task is still running.
    stand_in.script(behave.stall(after_chunks=4), model="qwen2.5")
    task_id = submit(daemon, "summarize", "one answer, two watchers").task.task_id
    early = Watcher(daemon, task_id)
    poll(lambda: len(early.pieces()) == 3 or None, timeout=15, what="the first three pieces")
    late = Watcher(daemon, task_id)  # starts once the first pieces have gone out
    poll(lambda: len(late.pieces()) == 3 or None, timeout=15, what="the late watcher catching up")
    with daemon.channel("operator") as channel:
        tasks_pb2_grpc.TaskServiceStub(channel).CancelTask(
            tasks_pb2.CancelTaskRequest(task_id=task_id, reason="the test has seen enough"), timeout=10
        )
    first, second = early.done(), late.done()
    assert pieces(first) == pieces(second) == ["echo", ":one", " ans"]
    assert final(first).status == final(second).status == tasks_pb2.TASK_STATUS_CANCELED
    assert second[0][0] == "task", "a late watcher too gets the current state first"


def test_a_failure_after_the_first_piece_ends_the_task_with_it(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.cut_stream(after_chunks=3), model="qwen2.5")
    _, changes = watched_from_the_queue(
        daemon, stand_in, "summarize", "this answer breaks off", model="qwen2.5"
    )
    done = final(changes)
    assert done.status == tasks_pb2.TASK_STATUS_ERROR
    assert done.error.code == "PROVIDER_CUT_OFF"
    assert pieces(changes) == ["echo", ":thi"]
    # No fallback: the next targets of the chain (vllm, then the API tier) are never called.
    assert [r.model for r in answered(stand_in)] == ["qwen2.5"]
    assert [a.target.name for a in done.attempts] == ["qwen2.5"]


def test_before_the_first_piece_the_task_still_falls_back(daemon: Aiond, stand_in: StandIn) -> None:
    stand_in.always(behave.status(503), model="qwen2.5")
    text = "the second target answers"
    _, changes = watched_from_the_queue(daemon, stand_in, "summarize", text, model="qwen2.5")
    done = final(changes)
    assert done.status == tasks_pb2.TASK_STATUS_OK
    assert [a.target.name for a in done.attempts] == ["qwen2.5", "llama3.1"]
    assert "".join(pieces(changes)) == done.result.text == "echo:the second target answers"


def test_the_hybrid_steps_rewrite_never_streams(daemon: Aiond, stand_in: StandIn) -> None:
    text = "Dear Ann, your order 42 shipped."
    _, changes = watched_from_the_queue(daemon, stand_in, "draft_reply", text, model="qwen2.5")
    done = final(changes)
    assert done.decision.route == common_pb2.ROUTE_HYBRID
    assert done.status == tasks_pb2.TASK_STATUS_OK
    steps = [(a.target.name, a.outcome) for a in done.attempts]
    assert steps == [("qwen2.5", tasks_pb2.TASK_STATUS_OK), ("claude-haiku", tasks_pb2.TASK_STATUS_OK)]
    # The local step rewrote the input ("echo:" + it); the answer echoes the rewrite. Only the answer
    # is in the pieces.
    assert done.result.text == f"echo:echo:{text}"
    assert "".join(pieces(changes)) == done.result.text
    prepare, answer = answered(stand_in)
    assert (prepare.model, prepare.body.get("stream")) == ("qwen2.5", None)
    assert (answer.model, answer.body.get("stream")) == ("claude-haiku", True)


def test_aionctl_submit_stream_prints_the_answer_as_it_comes(daemon: Aiond, stand_in: StandIn) -> None:
    env = daemon.aionctl_env("operator")
    text = "print me piece by piece"
    done = aionctl("task", "submit", "summarize", "--text", text, "--wait", "--stream", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"echo:{text}\n"
    assert done.stderr == ""
    assert stand_in.requests[0].body.get("stream") is True
    # -o json: the one final document, as --wait prints it.
    as_json = aionctl("task", "submit", "summarize", "--text", text, "--stream", "-o", "json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    doc = conforms(json.loads(as_json.stdout), "output/task")
    assert (doc["status"], doc["result"]["text"], doc["deduplicated"]) == ("ok", f"echo:{text}", False)


def test_aionctl_prints_the_pieces_before_the_task_ends_and_then_its_error(
    daemon: Aiond, stand_in: StandIn
) -> None:
    stand_in.script(behave.stall(after_chunks=4), model="qwen2.5")
    argv = [program("aionctl"), "task", "submit", "summarize", "--text", "halfway there",
            "--wait", "--stream", "--idempotency-key", "stalled-1"]  # fmt: skip
    env = {**os.environ, **daemon.aionctl_env("operator"), "NO_COLOR": "1"}
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out = Reader(proc.stdout)
        poll(lambda: out.text() == "echo:halfway" or None, timeout=15, what="the first pieces on stdout")
        assert proc.poll() is None, "the task is still running: the pieces came as they were made"
        # The same key finds the running task; canceling it ends the command.
        task_id = submit(daemon, "summarize", "halfway there", key="stalled-1").task.task_id
        # `task watch` on it meanwhile gets the pieces too, and prints only the states.
        viewer = {**os.environ, **daemon.aionctl_env("viewer")}
        watch_argv = [program("aionctl"), "task", "watch", task_id, "-o", "json"]
        with subprocess.Popen(watch_argv, env=viewer, stdout=subprocess.PIPE) as watching:
            assert watching.stdout is not None
            watched = Reader(watching.stdout)
            poll(lambda: "\n" in watched.text() or None, timeout=15, what="the watch's first state")
            with daemon.channel("operator") as channel:
                tasks_pb2_grpc.TaskServiceStub(channel).CancelTask(
                    tasks_pb2.CancelTaskRequest(task_id=task_id), timeout=10
                )
            assert watching.wait(30) == 1
            watched.join()
        assert proc.wait(30) == 1
        out.join()
        stderr = proc.stderr.read().decode()
    docs = [conforms(json.loads(line), "output/task") for line in watched.text().splitlines()]
    assert {d["taskId"] for d in docs} == {task_id}
    assert (docs[0]["status"], docs[-1]["status"]) == ("running", "canceled")
    assert out.text() == "echo:halfway\n"
    assert f"task {task_id} ended canceled: CANCELED" in stderr
    assert "Traceback" not in stderr


def test_aionctl_watch_prints_the_answer_as_it_comes_between_the_states(
    daemon: Aiond, stand_in: StandIn
) -> None:
    """Watched from the queue: the states until the first piece, the text as it comes and a newline,
    then the final state without its result (the text is it)."""
    stand_in.script(behave.hang(), model="qwen2.5")
    blocker = submit(daemon, "summarize", "hold the slot", stream=False).task.task_id
    poll(lambda: stand_in.calls(model="qwen2.5") >= 1 or None, timeout=15, what="the slot taken")
    text = "watch me arrive"
    task = submit(daemon, "summarize", text).task
    assert task.status == tasks_pb2.TASK_STATUS_QUEUED
    argv = [program("aionctl"), "task", "watch", task.task_id]
    env = {**os.environ, **daemon.aionctl_env("viewer"), "NO_COLOR": "1"}
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        out = Reader(proc.stdout)
        try:
            poll(lambda: "status:  queued" in out.text() or None, timeout=15, what="the queued state")
        finally:
            cancel(daemon, blocker)
        assert proc.wait(30) == 0
        out.join()
        stderr = proc.stderr.read().decode()
    printed = out.text()
    before, answer, after = printed.partition(f"echo:{text}\n")
    assert answer, printed
    assert before.startswith(f"task:    {task.task_id}\nstatus:  queued\n")
    assert after.startswith(f"task:    {task.task_id}\nstatus:  ok\n"), printed
    assert "usage:" in after
    assert "result:" not in printed, "the text is printed once, as it came"
    assert stderr == ""


def test_aionctl_watch_prints_the_pieces_before_the_task_ends_and_then_how_it_ended(
    daemon: Aiond, stand_in: StandIn
) -> None:
    stand_in.script(behave.stall(after_chunks=4), model="qwen2.5")
    task_id = submit(daemon, "summarize", "halfway there").task.task_id
    argv = [program("aionctl"), "task", "watch", task_id]
    env = {**os.environ, **daemon.aionctl_env("viewer"), "NO_COLOR": "1"}
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        out = Reader(proc.stdout)
        try:
            poll(lambda: out.text().endswith("echo:halfway") or None, timeout=15, what="the first pieces")
            assert proc.poll() is None, "the task is still running: the pieces came as they were made"
        finally:
            cancel(daemon, task_id)
        assert proc.wait(30) == 1
        out.join()
    _, answer, after = out.text().partition("echo:halfway\n")
    assert answer
    assert after.startswith(f"task:    {task_id}\nstatus:  canceled\n")
    # -o json: the documents alone, as submit --stream prints them (here the final state: it has ended).
    as_json = aionctl("task", "watch", task_id, "-o", "json", env=daemon.aionctl_env("viewer"))
    assert as_json.returncode == 1
    (doc,) = [conforms(json.loads(line), "output/task") for line in as_json.stdout.splitlines()]
    assert (doc["taskId"], doc["status"]) == (task_id, "canceled")


def test_aionctl_cancels_a_streamed_task_still_running_at_its_timeout(
    daemon: Aiond, stand_in: StandIn
) -> None:
    stand_in.script(behave.stall(after_chunks=3), model="qwen2.5")
    env = daemon.aionctl_env("operator")
    argv = ("task", "submit", "summarize", "--text", "no end", "--stream", "--timeout", "4",
            "--idempotency-key", "stalled-2")  # fmt: skip
    done = aionctl(*argv, env=env)
    assert done.returncode == 1, done.stderr
    assert done.stdout == "echo:no \n"
    task = submit(daemon, "summarize", "no end", key="stalled-2").task
    assert task.status == tasks_pb2.TASK_STATUS_CANCELED
    assert f"task {task.task_id} ended canceled" in done.stderr


class Reader:
    """What a child process writes to a pipe, read as it comes in a thread of its own."""

    def __init__(self, pipe: Any) -> None:
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        while chunk := os.read(pipe.fileno(), 4096):
            self._chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self._chunks).decode()

    def join(self) -> None:
        self._thread.join(10)


def test_a_failure_after_the_first_piece_is_not_retried_on_the_same_target(
    tmp_path: Path, stand_in: StandIn
) -> None:
    """With retries, a second call to the same model would send its answer again from the start,
    after the pieces of the first one that watchers already have: it is not made."""
    daemon = _start(tmp_path, stand_in, retries=2)
    try:
        cut = behave.cut_stream(after_chunks=3)  # once: a second call would answer in full
        text = "cut once, then whole"
        _, changes = watched_from_the_queue(daemon, stand_in, "summarize", text, model="qwen2.5", then=[cut])
        text = "".join(pieces(changes))
        assert "echo:cut once, then whole".startswith(text), f"the pieces repeat themselves: {text!r}"
        assert final(changes).status == tasks_pb2.TASK_STATUS_ERROR
        assert [r.model for r in answered(stand_in)] == ["qwen2.5"]
    finally:
        daemon.stop()
