"""The plans of aionctl kafka (aion.kafka.plans): kafka.yml against a cluster's state, only ever
adding, a shrink or another replication factor a conflict, ACLs least privilege, prune limited to
the file's own principals."""

from __future__ import annotations

from pathlib import Path

from aion.kafka.config import KafkaConfig, load
from aion.kafka.plans import Binding, TopicState, plan_acls, plan_topics, wanted_bindings

FILE = """\
kafka:
  bootstrap_servers: ["k:9092"]
  security: {protocol: PLAINTEXT}
  topics:
    decisions: {name: d, partitions: 4, replication_factor: 1, retention: 1d}
    lifecycle: {name: l, partitions: 2, replication_factor: 1}
    metrics: {name: m, partitions: 1, replication_factor: 1}
    audit: {name: a, partitions: 1, replication_factor: 1, configs: {cleanup.policy: delete}}
acls:
  - {principal: "User:aiond", role: producer}
  - {principal: "User:audit", role: consumer, topics: [audit], group: verify}
"""


def config(tmp_path: Path) -> KafkaConfig:
    path = tmp_path / "kafka.yml"
    path.write_text(FILE)
    return load(path)


def matching(cfg: KafkaConfig) -> dict[str, TopicState | None]:
    return {
        spec.name: TopicState(spec.name, spec.partitions, spec.replication_factor, spec.kafka_configs())
        for spec in cfg.topics.values()
    }


def test_missing_topics_are_created_with_every_config(tmp_path: Path) -> None:
    plan = plan_topics(config(tmp_path), {})
    assert [(s.name, s.action, s.partitions) for s in plan.steps] == [
        ("d", "create", (None, 4)),
        ("l", "create", (None, 2)),
        ("m", "create", (None, 1)),
        ("a", "create", (None, 1)),
    ]
    audit = plan.steps[3]
    assert [(c.key, c.before, c.after) for c in audit.configs] == [
        ("cleanup.policy", None, "delete"),
        ("min.insync.replicas", None, "1"),
        ("retention.ms", None, str(90 * 86_400_000)),
    ]


def test_a_cluster_that_matches_needs_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    plan = plan_topics(cfg, matching(cfg))
    assert {s.action for s in plan.steps} == {"ok"}
    assert plan.changes == ()
    assert plan.conflicts == ()


def test_fewer_partitions_are_added_and_differing_configs_set_others_untouched(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    state = matching(cfg)
    state["d"] = TopicState("d", 2, 1, {"retention.ms": "5", "segment.bytes": "1"})
    (step,) = plan_topics(cfg, state).changes
    assert (step.name, step.action, step.partitions, step.adds_partitions) == ("d", "change", (2, 4), True)
    assert [(c.key, c.before, c.after) for c in step.configs] == [("retention.ms", "5", "86400000")]


def test_more_partitions_or_another_replication_factor_is_a_conflict_with_a_hint(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    state = matching(cfg)
    state["l"] = TopicState("l", 8, 3, dict(cfg.topics["lifecycle"].kafka_configs()))
    plan = plan_topics(cfg, state)
    (step,) = plan.conflicts
    assert step.name == "l"
    assert [p.message for p in step.problems] == [
        "l has 8 partitions and kafka.yml asks for 2: Kafka cannot remove partitions, and ensure never does",
        "l has replication factor 3 and kafka.yml asks for 1: ensure does not move replicas",
    ]
    assert step.problems[0].hint.startswith("set partitions: 8 (or more) for lifecycle in kafka.yml")


def test_roles_grant_least_privilege(tmp_path: Path) -> None:
    wanted = wanted_bindings(config(tmp_path))
    assert {(b.principal, b.resource_type, b.resource, b.operation) for b in wanted} == {
        *(("User:aiond", "TOPIC", name, op) for name in "dlma" for op in ("WRITE", "DESCRIBE")),
        ("User:aiond", "CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE"),
        ("User:audit", "TOPIC", "a", "READ"),
        ("User:audit", "TOPIC", "a", "DESCRIBE"),
        ("User:audit", "GROUP", "verify", "READ"),
    }
    assert {(b.pattern, b.host, b.permission) for b in wanted} == {("LITERAL", "*", "ALLOW")}


def test_acl_plans_add_and_prune_only_the_files_principals(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    wanted = sorted(wanted_bindings(cfg))
    stale = Binding("User:audit", "TOPIC", "d", "READ")
    denied = Binding("User:aiond", "TOPIC", "a", "READ", permission="DENY")
    stranger = Binding("User:someone", "TOPIC", "d", "WRITE")
    observed = [*wanted[1:], stale, denied, stranger]

    kept = plan_acls(cfg, observed)
    assert kept.create == (wanted[0],)
    assert kept.delete == ()
    assert kept.extra == tuple(sorted([stale, denied]))
    assert len(kept.ok) == len(wanted) - 1

    pruned = plan_acls(cfg, observed, prune=True)
    assert pruned.delete == tuple(sorted([stale, denied]))
    assert stranger not in pruned.delete  # a principal the file does not list is never touched
    assert pruned.changes == 3
    assert plan_acls(cfg, wanted, prune=True).changes == 0
