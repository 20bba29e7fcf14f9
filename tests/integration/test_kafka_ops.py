"""aionctl kafka against the rig's real broker (Kafka 4.x, SCRAM, deny-by-default ACLs): topics
ensured and ensured again, a config change shown and applied, a shrink refused; ACLs applied and
applied again, enforced by the broker; consumer lag after producing and consuming; each failure
with its exit code and no traceback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from tests.integration.delivery import CommittingReader, produce
from tests.integration.supply import conforms
from tests.rig.daemon import aionctl
from tests.rig.procs import free_port, poll
from tests.rig.services import KafkaBroker

DAY_MS = 86_400_000
ADMIN_SECRET = "KAFKA_ADMIN_PASSWORD"
"""The name of the secret holding the broker admin's password (in the test's secrets directory)."""


@pytest.fixture
def prefix() -> str:
    """Topic names of this test alone: the broker is shared by the whole session."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def secrets_dir(tmp_path: Path, kafka_broker: KafkaBroker) -> Path:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / ADMIN_SECRET).write_text(kafka_broker.admin.password)
    return directory


def kafka_file(
    tmp_path: Path,
    broker: KafkaBroker,
    prefix: str,
    *,
    partitions: int = 2,
    audit_retention: str = "90d",
    acls: str = "",
    username: str = "aiond",
    name: str = "kafka.yml",
) -> Path:
    path = tmp_path / name
    path.write_text(
        f"""\
kafka:
  bootstrap_servers: ["{broker.bootstrap}"]
  security:
    protocol: SASL_PLAINTEXT
    sasl: {{mechanism: SCRAM-SHA-512, username: {username}, password_secret: KAFKA_AIOND_PASSWORD}}
  topics:
    decisions: {{name: {prefix}.decisions, partitions: {partitions}, replication_factor: 1, retention: 14d}}
    lifecycle: {{name: {prefix}.lifecycle, partitions: 2, replication_factor: 1}}
    metrics: {{name: {prefix}.metrics, partitions: 1, replication_factor: 1}}
    audit: {{name: {prefix}.audit, partitions: 1, replication_factor: 1, retention: {audit_retention}}}
{acls}"""
    )
    return path


def run(*args: str, secrets: Path, user: str | None = "admin", secret: str = ADMIN_SECRET) -> Any:
    """aionctl kafka ARGS as an operator (the broker's admin) unless ``user`` is None."""
    who = ["--sasl-username", user, "--sasl-password-secret", secret] if user else []
    result = aionctl("kafka", *args, "--secrets-dir", str(secrets), "--timeout", "20", *who)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def plan(result: Any, schema: str) -> Any:
    assert result.stdout, result.stderr
    return conforms(json.loads(result.stdout), schema)


def admin(broker: KafkaBroker) -> AdminClient:
    return AdminClient(broker.client_config(broker.admin))


def topic_shape(broker: KafkaBroker, name: str) -> tuple[int, int, str]:
    """Partitions, replication factor and retention.ms of a topic, read straight from the broker."""
    client = admin(broker)
    topic = client.list_topics(name, timeout=10).topics[name]
    assert topic.error is None, topic.error
    resource = ConfigResource(ResourceType.TOPIC, name)
    (configs,) = [f.result(timeout=30) for f in client.describe_configs([resource]).values()]
    replicas = len(next(iter(topic.partitions.values())).replicas)
    return len(topic.partitions), replicas, configs["retention.ms"].value


def existing(broker: KafkaBroker, prefix: str) -> set[str]:
    return {name for name in admin(broker).list_topics(timeout=10).topics if name.startswith(prefix + ".")}


# -- topics ensure ------------------------------------------------------------------------------------


def test_topics_are_created_and_ensuring_them_again_does_nothing(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    file = kafka_file(tmp_path, kafka_broker, prefix)
    dry = run("topics", "ensure", str(file), "--dry-run", "-o", "json", secrets=secrets_dir)
    assert dry.returncode == 0, dry.stderr
    body = plan(dry, "output/kafka-topic-plan")
    assert [t["action"] for t in body["topics"]] == ["create"] * 4
    assert (body["dryRun"], body["applied"]) == (True, False)
    assert existing(kafka_broker, prefix) == set()  # a dry run creates nothing

    applied = run("topics", "ensure", str(file), secrets=secrets_dir)
    assert applied.returncode == 0, applied.stderr
    assert f"+ {prefix}.decisions (decisions): create, 2 partitions, replication factor 1" in applied.stdout
    assert applied.stdout.endswith("4 create; applied\n")
    assert topic_shape(kafka_broker, f"{prefix}.decisions") == (2, 1, str(14 * DAY_MS))
    assert topic_shape(kafka_broker, f"{prefix}.audit") == (1, 1, str(90 * DAY_MS))
    assert topic_shape(kafka_broker, f"{prefix}.metrics") == (1, 1, str(7 * DAY_MS))

    again = run("topics", "ensure", str(file), "-o", "json", secrets=secrets_dir)
    assert again.returncode == 0, again.stderr
    body = plan(again, "output/kafka-topic-plan")
    assert [t["action"] for t in body["topics"]] == ["ok"] * 4
    assert body["applied"] is False
    assert body["summary"] == {"create": 0, "change": 0, "ok": 4, "conflict": 0}


def test_a_config_change_is_shown_from_and_to_and_applied(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    assert (
        run(
            "topics", "ensure", str(kafka_file(tmp_path, kafka_broker, prefix)), secrets=secrets_dir
        ).returncode
        == 0
    )
    changed = kafka_file(tmp_path, kafka_broker, prefix, partitions=4, audit_retention="365d")
    shown = run("topics", "ensure", str(changed), "--dry-run", secrets=secrets_dir)
    assert shown.returncode == 0, shown.stderr
    assert f"~ {prefix}.decisions (decisions): change\n    partitions 2 -> 4\n" in shown.stdout
    assert (
        f"~ {prefix}.audit (audit): change\n    retention.ms {90 * DAY_MS} -> {365 * DAY_MS}\n"
        in shown.stdout
    )
    assert shown.stdout.endswith("2 change, 2 ok; dry run: nothing applied\n")
    assert topic_shape(kafka_broker, f"{prefix}.audit")[2] == str(90 * DAY_MS)

    applied = run("topics", "ensure", str(changed), "-o", "yaml", secrets=secrets_dir)
    assert applied.returncode == 0, applied.stderr
    assert "applied: true" in applied.stdout
    assert topic_shape(kafka_broker, f"{prefix}.audit") == (1, 1, str(365 * DAY_MS))
    assert topic_shape(kafka_broker, f"{prefix}.decisions")[0] == 4
    assert run("topics", "ensure", str(changed), secrets=secrets_dir).stdout.endswith("4 ok; nothing to do\n")


def test_a_shrink_is_refused_with_what_to_do_and_nothing_is_applied(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    assert (
        run(
            "topics", "ensure", str(kafka_file(tmp_path, kafka_broker, prefix)), secrets=secrets_dir
        ).returncode
        == 0
    )
    shrunk = kafka_file(tmp_path, kafka_broker, prefix, partitions=1, audit_retention="30d")
    refused = run("topics", "ensure", str(shrunk), "-o", "json", secrets=secrets_dir)
    assert refused.returncode == 6, refused.stderr
    body = plan(refused, "output/kafka-topic-plan")
    decisions = body["topics"][0]
    assert decisions["action"] == "conflict"
    assert decisions["partitions"] == {"before": 2, "after": 1}
    assert "Kafka cannot remove partitions" in decisions["problems"][0]["message"]
    assert body["applied"] is False
    assert refused.stderr.startswith("error: 1 conflict between kafka.yml and the cluster:")
    assert "hint: set partitions: 2 (or more) for decisions in kafka.yml" in refused.stderr
    # The audit retention change in the same plan was not applied either.
    assert topic_shape(kafka_broker, f"{prefix}.audit")[2] == str(90 * DAY_MS)
    assert topic_shape(kafka_broker, f"{prefix}.decisions")[0] == 2

    other_factor = tmp_path / "rf.yml"
    other_factor.write_text(
        kafka_file(tmp_path, kafka_broker, prefix)
        .read_text()
        .replace(
            "lifecycle, partitions: 2, replication_factor: 1",
            "lifecycle, partitions: 2, replication_factor: 2",
        )
    )
    conflict = run("topics", "ensure", str(other_factor), secrets=secrets_dir)
    assert conflict.returncode == 6, conflict.stderr
    assert "has replication factor 1 and kafka.yml asks for 2" in conflict.stdout


def test_a_replication_factor_the_cluster_cannot_hold_is_a_conflict(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    file = tmp_path / "kafka.yml"
    file.write_text(
        kafka_file(tmp_path, kafka_broker, prefix)
        .read_text()
        .replace("replication_factor: 1", "replication_factor: 3")
    )
    refused = run("topics", "ensure", str(file), secrets=secrets_dir)
    assert refused.returncode == 6, refused.stderr
    assert "refused to create topics" in refused.stderr
    assert "only 1 broker" in refused.stderr


# -- acls apply ---------------------------------------------------------------------------------------


def test_acls_are_applied_again_idempotently_and_the_broker_enforces_them(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    writer = kafka_broker.add_user(f"{prefix}-aiond")
    reader = kafka_broker.add_user(f"{prefix}-reader")
    outsider = kafka_broker.add_user(f"{prefix}-outsider")
    acls = (
        "acls:\n"
        f"  - {{principal: 'User:{writer.username}', role: producer}}\n"
        f"  - {{principal: 'User:{reader.username}', role: consumer, topics: [audit],"
        f" group: {prefix}-audit}}\n"
    )
    file = kafka_file(tmp_path, kafka_broker, prefix, acls=acls)
    assert run("topics", "ensure", str(file), secrets=secrets_dir).returncode == 0

    applied = run("acls", "apply", str(file), "-o", "json", secrets=secrets_dir)
    assert applied.returncode == 0, applied.stderr
    body = plan(applied, "output/kafka-acl-plan")
    created = {(b["principal"], b["resourceType"], b["resource"], b["operation"]) for b in body["bindings"]}
    w, r = f"User:{writer.username}", f"User:{reader.username}"
    assert created == {
        *((w, "topic", f"{prefix}.{role}", op) for role in ("decisions", "lifecycle", "metrics", "audit")
          for op in ("write", "describe")),
        (w, "cluster", "kafka-cluster", "idempotent_write"),
        (r, "topic", f"{prefix}.audit", "read"),
        (r, "topic", f"{prefix}.audit", "describe"),
        (r, "group", f"{prefix}-audit", "read"),
    }  # fmt: skip
    assert {b["action"] for b in body["bindings"]} == {"create"}
    assert body["summary"]["create"] == 12

    again = run("acls", "apply", str(file), secrets=secrets_dir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith("12 ok; nothing to do\n")

    # The grant reaches the broker through the metadata log: poll until the writer's produce goes in.
    poll(
        lambda: produce(kafka_broker, writer, f"{prefix}.audit", [b"granted"]) is None or None,
        timeout=30,
        what="the producer's grant",
    )
    refused = produce(kafka_broker, outsider, f"{prefix}.audit", [b"nope"], idempotent=False)
    assert refused is not None
    assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    refused = produce(kafka_broker, reader, f"{prefix}.audit", [b"nope"], idempotent=False)  # read only
    assert refused is not None
    assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_prune_deletes_only_what_the_file_no_longer_grants(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    reader = f"User:{prefix}-reader"
    wide = kafka_file(tmp_path, kafka_broker, prefix, acls=(
        f"acls:\n  - {{principal: '{reader}', role: consumer, topics: [audit, metrics], group: g}}\n"
    ))  # fmt: skip
    narrow = kafka_file(tmp_path, kafka_broker, prefix, name="narrow.yml", acls=(
        f"acls:\n  - {{principal: '{reader}', role: consumer, topics: [audit], group: g}}\n"
    ))  # fmt: skip
    assert run("acls", "apply", str(wide), secrets=secrets_dir).returncode == 0
    kept = run("acls", "apply", str(narrow), "-o", "json", secrets=secrets_dir)
    assert kept.returncode == 0, kept.stderr
    assert plan(kept, "output/kafka-acl-plan")["summary"] == {"create": 0, "delete": 0, "ok": 3, "extra": 2}
    pruned = run("acls", "apply", str(narrow), "--prune", secrets=secrets_dir)
    assert pruned.returncode == 0, pruned.stderr
    assert f"- {reader} READ on topic {prefix}.metrics\n" in pruned.stdout
    assert pruned.stdout.endswith("2 delete, 3 ok; applied\n")
    assert run("acls", "apply", str(narrow), "--prune", secrets=secrets_dir).stdout.endswith(
        "3 ok; nothing to do\n"
    )


# -- lag --------------------------------------------------------------------------------------------


def test_lag_after_producing_n_and_consuming_m(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    file = kafka_file(tmp_path, kafka_broker, prefix)
    assert run("topics", "ensure", str(file), secrets=secrets_dir).returncode == 0
    topic, group, produced, consumed = f"{prefix}.decisions", f"{prefix}-lag", 10, 4
    assert (
        produce(kafka_broker, kafka_broker.admin, topic, [f"task-{i}".encode() for i in range(produced)])
        is None
    )
    reader = CommittingReader(kafka_broker, topic, group)
    try:
        reader.read(consumed)
    finally:
        reader.close()

    shown = run("lag", group, str(file), "-o", "json", secrets=secrets_dir)
    assert shown.returncode == 0, shown.stderr
    body = plan(shown, "output/kafka-lag")
    assert body["total"] == produced - consumed
    assert {row["topic"] for row in body["partitions"]} == {topic}
    assert sum(row["highWatermark"] for row in body["partitions"]) == produced
    assert sum(row["committed"] or 0 for row in body["partitions"]) == consumed
    assert all(row["lag"] == row["highWatermark"] - (row["committed"] or 0) for row in body["partitions"])
    text = run("lag", group, str(file), secrets=secrets_dir)
    assert text.stdout.endswith(f"group {group}: total lag {produced - consumed}\n")

    unknown = run("lag", f"{prefix}-nobody", str(file), secrets=secrets_dir)
    assert unknown.returncode == 3
    assert "has no committed offsets" in unknown.stderr


# -- failures ---------------------------------------------------------------------------------------


def test_refused_credentials_exit_4_and_an_unreachable_broker_exits_5(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    file = kafka_file(tmp_path, kafka_broker, prefix)
    (secrets_dir / "WRONG").write_text("not-the-password")
    refused = run("topics", "ensure", str(file), secrets=secrets_dir, secret="WRONG")
    assert refused.returncode == 4, refused.stderr
    assert "refused the credentials of SASL user admin" in refused.stderr
    assert "not-the-password" not in refused.stderr + refused.stdout

    weak = kafka_broker.add_user(f"{prefix}-weak")
    (secrets_dir / "WEAK").write_text(weak.password)
    forbidden = run("topics", "ensure", str(file), secrets=secrets_dir, user=weak.username, secret="WEAK")
    assert forbidden.returncode == 4, forbidden.stderr
    assert f"SASL user {weak.username} may not" in forbidden.stderr
    assert existing(kafka_broker, prefix) == set()

    missing = run("topics", "ensure", str(file), secrets=secrets_dir, user=None)  # the file's aiond user
    assert missing.returncode == 3, missing.stderr
    assert "KAFKA_AIOND_PASSWORD" in missing.stderr
    assert f"files in {secrets_dir}" in missing.stderr

    down = tmp_path / "down.yml"
    down.write_text(file.read_text().replace(kafka_broker.bootstrap, f"127.0.0.1:{free_port()}"))
    result = aionctl(
        "kafka", "topics", "ensure", str(down), "--secrets-dir", str(secrets_dir), "--timeout", "2",
        "--sasl-username", "admin", "--sasl-password-secret", ADMIN_SECRET,
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("error: Kafka at 127.0.0.1:")
    assert "Traceback" not in result.stderr


def test_an_invalid_file_exits_1_naming_its_line_and_column(
    kafka_broker: KafkaBroker, tmp_path: Path, secrets_dir: Path, prefix: str
) -> None:
    file = kafka_file(tmp_path, kafka_broker, prefix)
    file.write_text(file.read_text().replace("retention: 14d", "retention: 14 days"))
    result = run("topics", "ensure", str(file), secrets=secrets_dir)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {file}:7:")
    assert "retention" in result.stderr or "does not match" in result.stderr
