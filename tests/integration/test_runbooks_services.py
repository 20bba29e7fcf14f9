"""The shipped runbooks that need more than aiond, against the rig's real services: the kafka runbook
(its lag step too, waiting for a real consumer group) and the policy runbook's Kafka audit check on
the rig's SASL/SCRAM broker, and the observability runbook through the rig's Prometheus scraping
aiond."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.integration.delivery import CommittingReader, Delivery, produce
from tests.integration.supply import conforms
from tests.integration.test_audit_verify import daemon, delivery  # noqa: F401 - the fixtures
from tests.rig.daemon import EXAMPLES, Aiond, aionctl
from tests.rig.services import KafkaBroker, Prometheus


def runbook(
    aiond: Aiond, tmp_path: Path, name: str, *args: str, secrets: Path | None = None
) -> dict[str, Any]:
    env = {**aiond.aionctl_env("admin"), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    if secrets is not None:
        env["AIOND_SECRETS_DIR"] = str(secrets)
    result = aionctl("runbook", "run", name, *args, "-o", "json", env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    doc: dict[str, Any] = conforms(json.loads(result.stdout), "output/runbook-report")
    return doc


def acls(source: Delivery, tmp_path: Path) -> Path:
    """The delivery file, with the ACLs the kafka runbook applies."""
    path = tmp_path / "kafka-acls.yml"
    document = yaml.safe_load(source.path.read_text())
    document["acls"] = [
        {"principal": "User:aiond-runbook", "role": "producer"},
        {
            "principal": "User:audit-runbook",
            "role": "consumer",
            "topics": ["audit"],
            "group": "runbook-audit",
        },
    ]
    path.write_text(yaml.safe_dump(document))
    return path


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {step["name"]: step["status"] for step in doc["steps"]}


def steps_of(doc: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Each step's name, status and error: what a failed assertion shows."""
    return [(step["name"], step["status"], step.get("error")) for step in doc["steps"]]


def test_the_kafka_and_policy_runbooks_against_the_broker(
    daemon: Aiond,  # noqa: F811 - the fixture imported above
    delivery: Delivery,  # noqa: F811
    tmp_path: Path,
) -> None:
    secrets = delivery.path.parent / "secrets"
    with_acls = acls(delivery, tmp_path)
    kafka = runbook(daemon, tmp_path, "kafka", "--var", f"kafka_config={with_acls}", secrets=secrets)
    assert statuses(kafka) == {"valid": "passed", "topics": "passed", "acls": "passed", "lag": "skipped"}
    topics = next(s for s in kafka["steps"] if s["name"] == "topics")["result"]
    assert topics["kind"] == "KafkaTopicPlan"
    policy = runbook(
        daemon, tmp_path, "policy", "--var", f"config={EXAMPLES}", "--var", f"kafka_config={delivery.path}",
        secrets=secrets,
    )  # fmt: skip
    assert statuses(policy)["audit-kafka"] == "passed"  # the apply's audit event is in Kafka
    assert all(status == "passed" for status in statuses(policy).values())


def test_the_observability_runbook_through_prometheus(
    prometheus: Prometheus,
    daemon: Aiond,  # noqa: F811
    tmp_path: Path,
) -> None:
    prometheus.set_targets([daemon.http_addr], labels={"job": "aiond"})
    try:
        doc = runbook(daemon, tmp_path, "observability", "--var", f"prometheus={prometheus.url}")
    finally:
        prometheus.set_targets([])
    assert all(status == "passed" for status in statuses(doc).values()), statuses(doc)
    targets = next(s for s in doc["steps"] if s["name"] == "prometheus-targets")["result"]["json"]
    assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]


def test_the_kafka_runbook_broken_at_a_step_stops_and_resumes(
    daemon: Aiond,  # noqa: F811
    delivery: Delivery,  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.e2e.test_runbooks import RUNBOOKS, _break

    copy = tmp_path / "book" / "kafka-operations.yml"
    copy.parent.mkdir()
    broken = _break(RUNBOOKS / "kafka-operations.yml", copy, 1)
    env = {
        **daemon.aionctl_env("admin"),
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
        "AIOND_SECRETS_DIR": str(delivery.path.parent / "secrets"),
    }
    args = ("runbook", "run", str(copy), "--var", f"kafka_config={acls(delivery, tmp_path)}")
    failed = aionctl(*args, env=env, timeout=300)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"failed at step {broken}: broken on purpose" in failed.stdout
    assert f"--from {broken}" in failed.stdout
    copy.write_text((RUNBOOKS / "kafka-operations.yml").read_text())
    resumed = aionctl(*args, "--from", broken, "--only", "x", env=env, timeout=300)
    assert resumed.returncode == 2  # --from and --only together are a usage error
    resumed = aionctl(*args, "--from", broken, "-o", "json", env=env, timeout=300)
    doc = json.loads(resumed.stdout)
    assert resumed.returncode == 0, resumed.stderr
    assert [s["status"] for s in doc["steps"]] == ["reused", "passed", "passed", "skipped"]


def test_the_kafka_runbook_waits_for_a_real_consumer_group_to_catch_up(
    daemon: Aiond,  # noqa: F811
    delivery: Delivery,  # noqa: F811
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    topic, group, produced, read_first = (
        delivery.topics["decisions"],
        f"runbook-lag-{uuid.uuid4().hex[:8]}",
        6,
        2,
    )
    assert (
        produce(kafka_broker, kafka_broker.admin, topic, [f"record-{i}".encode() for i in range(produced)])
        is None
    )
    reader = CommittingReader(kafka_broker, topic, group)
    config = acls(delivery, tmp_path)

    def lag_run(max_lag: int, wait: str) -> tuple[int, dict[str, Any]]:
        env = {
            **daemon.aionctl_env("admin"),
            "XDG_STATE_HOME": str(tmp_path / "xdg"),
            "AIOND_SECRETS_DIR": str(delivery.path.parent / "secrets"),
        }
        result = aionctl(
            "runbook", "run", "kafka", "--var", f"kafka_config={config}", "--var", f"group={group}",
            "--var", f"max_lag={max_lag}", "--var", f"lag_wait={wait}", "-o", "json", env=env, timeout=300,
        )  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        doc: dict[str, Any] = conforms(json.loads(result.stdout), "output/runbook-report")
        return result.returncode, doc

    try:
        reader.read(read_first)
        behind = produced - read_first
        code, doc = lag_run(behind, "5s")  # exactly at the limit: passes at once
        assert code == 0, steps_of(doc)
        assert statuses(doc)["lag"] == "passed"
        assert next(s for s in doc["steps"] if s["name"] == "lag")["result"]["total"] == behind

        code, doc = lag_run(behind - 1, "2s")  # one record over, and nobody reads: fails when the wait ends
        assert code == 1, steps_of(doc)
        assert doc["failedStep"] == "lag"
        step = next(s for s in doc["steps"] if s["name"] == "lag")
        assert step["status"] == "failed"
        assert "under max_lag" in json.dumps(step), step

        # The group catches up while the runbook waits: the step passes once it has.
        catching_up = threading.Timer(2.0, reader.read, args=(behind,))
        catching_up.start()
        try:
            code, doc = lag_run(0, "60s")
        finally:
            catching_up.join()
        assert code == 0, steps_of(doc)
        assert statuses(doc)["lag"] == "passed"
        assert next(s for s in doc["steps"] if s["name"] == "lag")["result"]["total"] == 0
    finally:
        reader.close()
