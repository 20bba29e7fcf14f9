"""aiond delivers every event to the rig's real Kafka broker through its outbox: audit events are never
lost, through a broker outage, a SIGKILL of aiond, or a SIGKILL between a policy commit and its event."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from aion.api.v1 import policies_pb2, policies_pb2_grpc
from aion.envelopes import DECISIONS_TOPIC, LIFECYCLE_TOPIC, RUNTIME_TOPIC
from tests.e2e.test_policy_crash import variants
from tests.e2e.test_tasks import submit, write_config
from tests.integration.delivery import Consumed, consume, delivery_config
from tests.integration.supply import conforms
from tests.rig.daemon import Aiond
from tests.rig.procs import poll
from tests.rig.providers import StandIn
from tests.rig.services import KafkaBroker

OUTAGE_SECONDS = 30.0
"""How long the broker stays down in the zero-loss test (the issue's scenario)."""


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def _trail(daemon: Aiond) -> list[dict[str, Any]]:
    path = daemon.state_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _events(daemon: Aiond) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(daemon.state_dir.glob("events*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _task_events(daemon: Aiond) -> list[dict[str, Any]]:
    return [e for e in _events(daemon) if e["topic"] in (DECISIONS_TOPIC, LIFECYCLE_TOPIC)]


def _metric(daemon: Aiond, name: str) -> float:
    import httpx

    text = httpx.get(f"http://{daemon.http_addr}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


class _Workload:
    """Tasks and policy applies in a loop against whatever address the daemon has now, counting what
    was acknowledged; calls made while it is down or restarting fail and are not counted."""

    def __init__(self, daemon: Aiond, config: Path) -> None:
        self.daemon = daemon
        self.sets = variants(config, 2000)
        self.versions: list[int] = []
        self.tasks = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._applies), threading.Thread(target=self._tasks)]

    def __enter__(self) -> _Workload:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _applies(self) -> None:
        for files in self.sets:
            if self.stop.is_set():
                return
            try:
                with self.daemon.channel() as channel:
                    reply = policies_pb2_grpc.PolicyServiceStub(channel).ApplyPolicy(
                        policies_pb2.ApplyPolicyRequest(files=files), timeout=10
                    )
                self.versions.append(reply.activation.version.number)
            except grpc.RpcError:
                self.stop.wait(0.2)
            self.stop.wait(0.05)

    def _tasks(self) -> None:
        while not self.stop.is_set():
            try:
                reply = submit(self.daemon, "summarize", timeout=10)
                if reply.task.task_id:
                    self.tasks += 1
            except grpc.RpcError:
                self.stop.wait(0.2)


def test_no_audit_event_is_lost_through_a_broker_outage_and_a_sigkill(
    tmp_path: Path, kafka_broker: KafkaBroker, stand_in: StandIn
) -> None:
    config = write_config(tmp_path, stand_in)
    delivery = delivery_config(kafka_broker, tmp_path, tmp_path / "secrets")
    daemon = Aiond(tmp_path, config_dir=config, extra_args=["--kafka-config", str(delivery.path)])
    before = {e["id"] for e in _trail(daemon)}  # the tokens made before aiond had Kafka
    daemon.start()
    try:
        with _Workload(daemon, config) as work:
            poll(
                lambda: (len(work.versions) >= 3 and work.tasks >= 3) or None, timeout=60, what="a first load"
            )
            kafka_broker.stop()
            outage = time.monotonic()
            time.sleep(OUTAGE_SECONDS / 2)  # the scenario: the broker stays down this long
            daemon.process.signal(signal.SIGKILL)
            assert daemon.process.wait(timeout=10) == -signal.SIGKILL
            daemon.start()  # the same state directory, with what the outbox held
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage)))
            kafka_broker.start()
            acknowledged = len(work.versions)
            poll(
                lambda: len(work.versions) >= acknowledged + 3 or None,
                timeout=60,
                what="applies after the outage",
            )
        shed = _metric(daemon, "aion_events_shed_total")
        assert daemon.stop() == 0
        trail = [e for e in _trail(daemon) if e["id"] not in before]
        task_events = _task_events(daemon)
    finally:
        daemon.stop()

    wanted_audit = {e["id"] for e in trail}
    wanted_tasks = {e["id"] for e in task_events}
    topic = delivery.topics

    missing: dict[str, Any] = {}

    def complete(seen: Consumed) -> bool:
        missing["audit"] = wanted_audit - set(seen.ids(topic["audit"]))
        missing["tasks"] = (
            wanted_tasks - set(seen.ids(topic["decisions"])) - set(seen.ids(topic["lifecycle"]))
        )
        return not missing["audit"] and not missing["tasks"]

    try:
        seen = consume(
            kafka_broker,
            [topic["audit"], topic["decisions"], topic["lifecycle"]],
            until=complete,
            timeout=120,
        )
    except AssertionError as exc:
        audit_missing = [e for e in trail if e["id"] in missing["audit"]]
        raise AssertionError(
            f"{exc}; missing {len(missing['audit'])} audit events (first: {audit_missing[:3]}) and "
            f"{len(missing['tasks'])} task events"
        ) from None

    seen = consume(
        kafka_broker, [topic["audit"], topic["decisions"], topic["lifecycle"]], until=complete, timeout=120
    )
    applied = {
        int(e["after"]) for e in seen.events[topic["audit"]]
        if e["action"] == "policy.apply" and e["outcome"] == "success" and e["after"]
    }  # fmt: skip
    delivered = sum(len(set(seen.ids(name))) for name in seen.events)
    print(
        f"zero-loss: {len(wanted_audit)} audit and {len(wanted_tasks)} task events emitted, "
        f"{delivered} delivered, {seen.duplicates()} duplicated, {shed:g} task events shed; "
        f"{len(work.versions)} applies and {work.tasks} tasks acknowledged"
    )
    assert set(work.versions) <= applied, "an acknowledged policy version has no audit event in Kafka"
    assert shed == 0  # a 256 MiB outbox holds a 30 s outage of this load
    for name, events in seen.events.items():
        copies: dict[str, str] = {}
        for one in events:  # a duplicate is the same event again, never a different one with its id
            text = json.dumps(one, sort_keys=True)
            assert copies.setdefault(one["id"], text) == text, f"{name}: two events share id {one['id']}"


def test_an_audit_event_committed_with_its_policy_reaches_kafka_after_a_sigkill(
    tmp_path: Path, kafka_broker: KafkaBroker, stand_in: StandIn
) -> None:
    """The fault the outbox closes: aiond killed right after committing a policy version, before its
    audit event was written anywhere else. After the restart it is in the local trail and in Kafka."""
    config = write_config(tmp_path, stand_in)
    delivery = delivery_config(kafka_broker, tmp_path, tmp_path / "secrets")
    fault = tmp_path / "kill-after-commit"
    daemon = Aiond(
        tmp_path, config_dir=config, extra_args=["--kafka-config", str(delivery.path)],
        env={"AIOND_TEST_FAULT_FILE": str(fault)},
    ).start()  # fmt: skip
    try:
        fault.touch()
        with daemon.channel() as channel, pytest.raises(grpc.RpcError):
            policies_pb2_grpc.PolicyServiceStub(channel).ApplyPolicy(
                policies_pb2.ApplyPolicyRequest(files=variants(config, 2)[1]), timeout=10
            )
        assert daemon.process.wait(timeout=10) == -signal.SIGKILL
        with sqlite3.connect(f"file:{daemon.state_dir / 'state.db'}?mode=ro", uri=True) as db:
            number = db.execute("SELECT max(number) FROM policy_versions").fetchone()[0]
            waiting = db.execute("SELECT count(*) FROM outbox WHERE logged = 0").fetchone()[0]
        assert waiting == 1  # committed with the version, and nowhere else yet
        assert not any(e["action"] == "policy.apply" and e["after"] == str(number) for e in _trail(daemon))
        fault.unlink()
        daemon.start()
        assert any(e["action"] == "policy.apply" and e["after"] == str(number) for e in _trail(daemon))

        def found(seen: Consumed) -> bool:
            return any(
                e["action"] == "policy.apply" and e["after"] == str(number)
                for e in seen.events[delivery.topics["audit"]]
            )

        consume(kafka_broker, [delivery.topics["audit"]], until=found, timeout=60)
    finally:
        daemon.stop()


def test_without_kafka_the_same_fault_loses_nothing_either(tmp_path: Path, stand_in: StandIn) -> None:
    """The embedded default keeps the same guarantee: the event reaches the local trail at restart."""
    config = write_config(tmp_path, stand_in)
    fault = tmp_path / "kill-after-commit"
    daemon = Aiond(tmp_path, config_dir=config, env={"AIOND_TEST_FAULT_FILE": str(fault)}).start()
    try:
        fault.touch()
        with daemon.channel() as channel, pytest.raises(grpc.RpcError):
            policies_pb2_grpc.PolicyServiceStub(channel).ApplyPolicy(
                policies_pb2.ApplyPolicyRequest(files=variants(config, 2)[1]), timeout=10
            )
        assert daemon.process.wait(timeout=10) == -signal.SIGKILL
        with sqlite3.connect(f"file:{daemon.state_dir / 'state.db'}?mode=ro", uri=True) as db:
            number = db.execute("SELECT max(number) FROM policy_versions").fetchone()[0]
        fault.unlink()
        daemon.start()
        matching = [e for e in _trail(daemon) if e["action"] == "policy.apply" and e["after"] == str(number)]
        assert len(matching) == 1
    finally:
        daemon.stop()


def test_delivery_metrics_follow_the_outbox_and_runtime_snapshots_reach_kafka(
    tmp_path: Path, kafka_broker: KafkaBroker, stand_in: StandIn
) -> None:
    config = write_config(tmp_path, stand_in)
    delivery = delivery_config(kafka_broker, tmp_path, tmp_path / "secrets")
    daemon = Aiond(tmp_path, config_dir=config, extra_args=["--kafka-config", str(delivery.path)]).start()
    try:
        for _ in range(3):
            submit(daemon, "summarize")
        poll(
            lambda: _metric(daemon, "aion_kafka_delivered_total") >= 6 or None,
            timeout=30, what="delivery reports counted",
        )  # fmt: skip
        poll(lambda: _metric(daemon, "aion_outbox_events{") == 0 or None, timeout=30, what="an empty outbox")
        assert _metric(daemon, "aion_kafka_connected") == 1
        assert daemon.stop() == 0  # a graceful stop records a last runtime snapshot
    finally:
        daemon.stop()
    [local] = [e for e in _events(daemon) if e["topic"] == RUNTIME_TOPIC]
    conforms(local, "events/runtime")
    assert local["routes"]["local"] == {"running": 0, "queued": 0}
    assert local["outbox"]["task"] == 0
    assert local["process"]["rss_bytes"] > 0
    seen = consume(
        kafka_broker, [delivery.topics["metrics"]],
        until=lambda s: bool(s.ids(delivery.topics["metrics"])), timeout=30,
    )  # fmt: skip
    assert list(seen.ids(delivery.topics["metrics"])) == [local["id"]]


def test_event_delivery_is_a_producer_span_ended_by_its_delivery_reports(
    tmp_path: Path, kafka_broker: KafkaBroker, stand_in: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_traces import OtlpReceiver, traced_env

    config = write_config(tmp_path, stand_in)
    delivery = delivery_config(kafka_broker, tmp_path, tmp_path / "secrets")
    with OtlpReceiver() as receiver:
        traced_env(monkeypatch, receiver)
        daemon = Aiond(tmp_path, config_dir=config, extra_args=["--kafka-config", str(delivery.path)]).start()
        try:
            submit(daemon, "summarize")

            def sent() -> list[Any] | None:
                found = [s for s in receiver.spans if s.kind == "SPAN_KIND_PRODUCER"]
                return found or None

            spans = poll(sent, timeout=30, what="a producer span at the receiver")
        finally:
            daemon.stop()
    topics = set(delivery.topics.values())
    for span in spans:
        assert span.name == f"send {span.attributes['messaging.destination.name']}"
        assert span.attributes["messaging.destination.name"] in topics
        assert span.attributes["messaging.system"] == "kafka"
        assert span.status != "STATUS_CODE_ERROR"
