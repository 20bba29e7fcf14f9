"""The test rig's Kafka is a real 4.x KRaft broker with SASL/SCRAM-SHA-512 and deny-by-default ACLs."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tests.rig.procs import poll
from tests.rig.services import KafkaBroker, KafkaUser


def create_topic(broker: KafkaBroker, name: str) -> None:
    admin = AdminClient(broker.client_config(broker.admin))
    for future in admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=30)


def produce(broker: KafkaBroker, user: KafkaUser, topic: str, value: bytes) -> KafkaError | None:
    """Produce one message; the delivery error, or None when the broker stored it."""
    outcome: list[KafkaError | None] = []
    producer = Producer(broker.client_config(user, **{"message.timeout.ms": 10000}))
    producer.produce(topic, value, key=b"k", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(15)
    assert outcome, "no delivery report"
    return outcome[0]


def consume_one(broker: KafkaBroker, user: KafkaUser, topic: str) -> bytes:
    consumer = Consumer(
        broker.client_config(user, **{"group.id": f"rig-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    try:

        def next_message() -> bytes | None:
            msg = consumer.poll(0.5)
            if msg is None:
                return None
            if msg.error():
                raise KafkaException(msg.error())
            value = msg.value()
            assert value is not None
            return bytes(value)

        return poll(next_message, timeout=30, what=f"a message on {topic}")
    finally:
        consumer.close()


def test_admin_creates_topic_produces_and_consumes_over_scram(kafka_broker: KafkaBroker) -> None:
    topic = f"rig.smoke.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker, topic)
    assert produce(kafka_broker, kafka_broker.admin, topic, b"hello") is None
    assert consume_one(kafka_broker, kafka_broker.admin, topic) == b"hello"


def test_the_restricted_user_is_refused_by_acl(kafka_broker: KafkaBroker) -> None:
    allowed, forbidden = f"rig.allowed.{uuid.uuid4().hex[:8]}", f"rig.forbidden.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker, allowed)
    create_topic(kafka_broker, forbidden)
    admin = AdminClient(kafka_broker.client_config(kafka_broker.admin))
    grant = AclBinding(
        ResourceType.TOPIC, allowed, ResourcePatternType.LITERAL,
        f"User:{kafka_broker.restricted.username}", "*", AclOperation.WRITE, AclPermissionType.ALLOW,
    )  # fmt: skip
    for future in admin.create_acls([grant]).values():
        future.result(timeout=30)

    # The grant reaches the broker through the metadata log; poll until it is in force.
    poll(
        lambda: produce(kafka_broker, kafka_broker.restricted, allowed, b"ok") is None or None,
        timeout=30,
        what="the restricted user's WRITE grant",
    )
    refused = produce(kafka_broker, kafka_broker.restricted, forbidden, b"nope")
    assert refused is not None
    assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_wrong_password_is_refused(kafka_broker: KafkaBroker) -> None:
    impostor = KafkaUser(kafka_broker.admin.username, "not-the-password")
    errors: list[KafkaError] = []
    admin = AdminClient(kafka_broker.client_config(impostor, error_cb=errors.append))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    # librdkafka reports the broker's SASL verdict through the error callback (served by poll()).

    def reported() -> list[int] | None:
        admin.poll(0.2)
        return [e.code() for e in errors] or None

    codes = poll(reported, timeout=10, what="the client's error callback")
    assert KafkaError._AUTHENTICATION in codes, errors


def test_broker_restarts_in_place_and_keeps_its_data(kafka_broker: KafkaBroker) -> None:
    topic = f"rig.restart.{uuid.uuid4().hex[:8]}"
    create_topic(kafka_broker, topic)
    assert produce(kafka_broker, kafka_broker.admin, topic, b"before") is None
    bootstrap = kafka_broker.bootstrap
    kafka_broker.stop()
    assert not kafka_broker.running
    kafka_broker.start()
    assert kafka_broker.bootstrap == bootstrap
    assert consume_one(kafka_broker, kafka_broker.admin, topic) == b"before"
