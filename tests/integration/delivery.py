"""Helpers for tests that use the rig's Kafka broker: a kafka.yml with topics of the test's own, a
consumer that reads them back, a reader that commits as it reads (for lag), and a producer."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from aion.kafka.config import ROLES
from tests.rig.procs import poll
from tests.rig.services import KafkaBroker, KafkaUser

PASSWORD_SECRET = "KAFKA_AIOND_PASSWORD"


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A kafka.yml for the rig's broker, and the topics it names (by role)."""

    path: Path
    topics: dict[str, str]
    user: KafkaUser


def delivery_config(
    broker: KafkaBroker, root: Path, secrets: Path, *, user: KafkaUser | None = None, outbox: str = "256Mi"
) -> Delivery:
    """Topics named for this test (created here), and a kafka.yml that reaches them as ``user`` (the
    broker's admin by default) over SASL/SCRAM; its password goes into the ``secrets`` directory
    (the files backend aiond reads)."""
    who = user or broker.admin
    suffix = uuid.uuid4().hex[:8]
    topics = {role: f"test.{role}.{suffix}" for role in ROLES}
    admin = AdminClient(broker.client_config(broker.admin))
    created = admin.create_topics(
        [NewTopic(name, num_partitions=3, replication_factor=1) for name in topics.values()]
    )
    for future in created.values():
        future.result(timeout=30)
    secrets.mkdir(exist_ok=True)
    (secrets / PASSWORD_SECRET).write_text(who.password + "\n")
    document = {
        "kafka": {
            "bootstrap_servers": [broker.bootstrap],
            "client_id": "aiond-test",
            "security": {
                "protocol": "SASL_PLAINTEXT",
                "sasl": {
                    "mechanism": who.mechanism,
                    "username": who.username,
                    "password_secret": PASSWORD_SECRET,
                },
            },
            "topics": {
                role: {"name": name, "partitions": 3, "replication_factor": 1, "retention": "1d"}
                for role, name in topics.items()
            },
            "delivery": {"outbox_max_bytes": outbox},
        }
    }
    path = root / "kafka.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return Delivery(path, topics, who)


@dataclasses.dataclass
class Consumed:
    """What a consumer read: every copy of every event, by topic."""

    events: dict[str, list[dict[str, Any]]]

    def ids(self, topic: str) -> Counter[str]:
        return Counter(str(e["id"]) for e in self.events.get(topic, []))

    def duplicates(self) -> int:
        return sum(count - 1 for topic in self.events for count in self.ids(topic).values())


def consume(
    broker: KafkaBroker,
    topics: Iterable[str],
    *,
    until: Callable[[Consumed], bool],
    timeout: float = 60,
    user: KafkaUser | None = None,
) -> Consumed:
    """Read ``topics`` from the beginning with a consumer of its own until ``until`` holds, then a
    little longer, to the end of every partition (so that late duplicates are seen too)."""
    names = list(topics)
    consumer = Consumer(
        broker.client_config(
            user or broker.admin,
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumed = Consumed({name: [] for name in names})
    try:
        consumer.subscribe(names)
        deadline = time.monotonic() + timeout
        satisfied = False
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if satisfied or until(consumed):
                    if satisfied and _at_end(consumer, names):
                        return consumed
                    satisfied = True
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            value = msg.value()
            assert value is not None
            consumed.events[str(msg.topic())].append(json.loads(value))
        raise AssertionError(
            f"the events sought did not all arrive within {timeout:g} s: "
            + ", ".join(f"{name}: {len(events)}" for name, events in consumed.events.items())
        )
    finally:
        consumer.close()


def _at_end(consumer: Consumer, names: list[str]) -> bool:
    """Whether the consumer has read every partition of ``names`` to its high watermark."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    positions = consumer.position(assigned)
    for tp in positions:
        if tp.topic not in names:
            continue
        _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
        if tp.offset < high and not (tp.offset < 0 and high == 0):
            return False
    return True


class CommittingReader:
    """A consumer in ``group`` reading ``topic`` from its start, committing each record as it reads it:
    the group's lag is then exactly what it has not read yet."""

    def __init__(self, broker: KafkaBroker, topic: str, group: str) -> None:
        self._consumer = Consumer(broker.client_config(broker.admin, **{
            "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
        }))  # fmt: skip
        self._consumer.subscribe([topic])

    def _one(self) -> bool | None:
        msg = self._consumer.poll(0.5)
        if msg is None:
            return None
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return None
            raise KafkaException(error)
        self._consumer.commit(message=msg, asynchronous=False)
        return True

    def read(self, count: int) -> None:
        for _ in range(count):
            poll(self._one, timeout=30, what="a record to read")

    def close(self) -> None:
        self._consumer.close()


def produce(
    broker: KafkaBroker, user: KafkaUser, topic: str, values: list[bytes], *, idempotent: bool = True
) -> KafkaError | None:
    """Produce (idempotently by default, as aiond does); the first delivery error, or None. A user
    without IDEMPOTENT_WRITE fails an idempotent producer as a whole, so refusals are checked with a
    plain one: its delivery report names the topic's refusal."""
    reports: list[KafkaError | None] = []
    settings = {"enable.idempotence": idempotent, "acks": "all", "message.timeout.ms": 10000}
    producer = Producer(broker.client_config(user, **settings))
    for value in values:
        producer.produce(topic, value, key=value, on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(20)
    assert len(reports) == len(values), "a delivery report is missing"
    return next((err for err in reports if err is not None), None)
