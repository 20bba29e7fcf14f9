"""What ``aionctl kafka topics ensure`` and ``aionctl kafka acls apply`` would change: kafka.yml
against what the cluster has, as plans of steps (pure: the cluster's state comes in as values).

The plans only ever add: a topic is created, given more partitions, or has the configs kafka.yml
names set; an ACL binding is created. Nothing is removed except, when asked (``--prune``), the
bindings of the file's own principals that the file does not grant. What cannot be reached by adding
(a topic with more partitions than asked, or another replication factor) is a conflict: the plan
says what to do, and nothing of it is applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from aion.kafka.config import CONSUMER, KafkaConfig, TopicSpec

CREATE, CHANGE, OK, CONFLICT = "create", "change", "ok", "conflict"
CLUSTER_RESOURCE = "kafka-cluster"
"""The one name Kafka gives the cluster resource in ACLs."""


@dataclasses.dataclass(frozen=True, slots=True)
class TopicState:
    """One topic as the cluster has it."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]
    """The values of the topic's configs (at least those kafka.yml names)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigChange:
    key: str
    before: str | None
    """None: the topic does not exist yet (or the broker does not report the config)."""
    after: str


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    message: str
    hint: str


@dataclasses.dataclass(frozen=True, slots=True)
class TopicStep:
    """What ensure does to one topic."""

    role: str
    name: str
    action: str
    """create, change, ok or conflict."""
    partitions: tuple[int | None, int]
    """Before (None: no topic yet) and as asked."""
    replication_factor: tuple[int | None, int]
    configs: tuple[ConfigChange, ...]
    """Only the configs that change (all of them for a topic to create)."""
    problems: tuple[Problem, ...] = ()

    @property
    def adds_partitions(self) -> bool:
        before, after = self.partitions
        return before is not None and before < after


@dataclasses.dataclass(frozen=True, slots=True)
class TopicPlan:
    steps: tuple[TopicStep, ...]

    @property
    def conflicts(self) -> tuple[TopicStep, ...]:
        return tuple(step for step in self.steps if step.action == CONFLICT)

    @property
    def changes(self) -> tuple[TopicStep, ...]:
        return tuple(step for step in self.steps if step.action in (CREATE, CHANGE))


def plan_topics(config: KafkaConfig, observed: Mapping[str, TopicState | None]) -> TopicPlan:
    """The steps that make the cluster hold the topics of ``config``; ``observed`` maps each topic
    name to its state (None or absent: no such topic)."""
    return TopicPlan(tuple(_topic_step(spec, observed.get(spec.name)) for spec in config.topics.values()))


def _topic_step(spec: TopicSpec, state: TopicState | None) -> TopicStep:
    wanted = spec.kafka_configs()
    if state is None:
        return TopicStep(
            spec.role, spec.name, CREATE, (None, spec.partitions), (None, spec.replication_factor),
            tuple(ConfigChange(key, None, value) for key, value in sorted(wanted.items())),
        )  # fmt: skip
    problems: list[Problem] = []
    if state.partitions > spec.partitions:
        problems.append(
            Problem(
                f"{spec.name} has {state.partitions} partitions and kafka.yml asks for "
                f"{spec.partitions}: Kafka cannot remove partitions, and ensure never does",
                f"set partitions: {state.partitions} (or more) for {spec.role} in kafka.yml; to have "
                "fewer, create a new topic and move producers and consumers to it",
            )
        )
    if state.replication_factor != spec.replication_factor:
        problems.append(
            Problem(
                f"{spec.name} has replication factor {state.replication_factor} and kafka.yml asks "
                f"for {spec.replication_factor}: ensure does not move replicas",
                f"set replication_factor: {state.replication_factor} for {spec.role} in kafka.yml, or "
                "reassign the partitions first (kafka-reassign-partitions.sh)",
            )
        )
    changes = tuple(
        ConfigChange(key, state.configs.get(key), value)
        for key, value in sorted(wanted.items())
        if state.configs.get(key) != value
    )
    if problems:
        action = CONFLICT
    elif changes or state.partitions < spec.partitions:
        action = CHANGE
    else:
        action = OK
    return TopicStep(
        spec.role, spec.name, action, (state.partitions, spec.partitions),
        (state.replication_factor, spec.replication_factor), changes, tuple(problems),
    )  # fmt: skip


# -- ACLs ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Binding:
    """One ACL binding, in Kafka's words (resource types and operations as AclBinding names them)."""

    principal: str
    resource_type: str
    """TOPIC, GROUP or CLUSTER (or another type found on the cluster)."""
    resource: str
    operation: str
    """WRITE, READ, DESCRIBE, IDEMPOTENT_WRITE, ..."""
    pattern: str = "LITERAL"
    host: str = "*"
    permission: str = "ALLOW"

    def __str__(self) -> str:
        where = f"{self.resource_type.lower()} {self.resource}"
        if self.pattern != "LITERAL":
            where += f" ({self.pattern.lower()})"
        host = "" if self.host == "*" else f" from {self.host}"
        return f"{self.principal} {self.permission.lower()} {self.operation} on {where}{host}"


@dataclasses.dataclass(frozen=True, slots=True)
class AclPlan:
    create: tuple[Binding, ...]
    delete: tuple[Binding, ...]
    """Only with prune: bindings of the file's principals that the file does not grant."""
    ok: tuple[Binding, ...]
    extra: tuple[Binding, ...]
    """Bindings of the file's principals that the file does not grant, kept (no prune)."""
    principals: tuple[str, ...]

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.delete)


def wanted_bindings(config: KafkaConfig) -> frozenset[Binding]:
    """What kafka.yml grants, least privilege: a producer WRITE and DESCRIBE on its topics and
    IDEMPOTENT_WRITE on the cluster (aiond's producer is idempotent); a consumer READ and DESCRIBE
    on its topics and READ on its group."""
    out: set[Binding] = set()
    for rule in config.acls:
        names = [config.topics[role].name for role in rule.topics]
        if rule.role == CONSUMER:
            for name in names:
                out.add(Binding(rule.principal, "TOPIC", name, "READ"))
                out.add(Binding(rule.principal, "TOPIC", name, "DESCRIBE"))
            assert rule.group is not None
            out.add(Binding(rule.principal, "GROUP", rule.group, "READ"))
        else:
            for name in names:
                out.add(Binding(rule.principal, "TOPIC", name, "WRITE"))
                out.add(Binding(rule.principal, "TOPIC", name, "DESCRIBE"))
            out.add(Binding(rule.principal, "CLUSTER", CLUSTER_RESOURCE, "IDEMPOTENT_WRITE"))
    return frozenset(out)


def plan_acls(config: KafkaConfig, observed: Iterable[Binding], *, prune: bool = False) -> AclPlan:
    """The bindings to create (and, with ``prune``, to delete) so that the file's principals have
    exactly what it grants. ``observed``: the cluster's bindings of those principals."""
    wanted = wanted_bindings(config)
    principals = tuple(dict.fromkeys(rule.principal for rule in config.acls))
    have = {binding for binding in observed if binding.principal in principals}
    extra = tuple(sorted(have - wanted))
    return AclPlan(
        create=tuple(sorted(wanted - have)),
        delete=extra if prune else (),
        ok=tuple(sorted(wanted & have)),
        extra=() if prune else extra,
        principals=principals,
    )


__all__ = [
    "CHANGE",
    "CLUSTER_RESOURCE",
    "CONFLICT",
    "CREATE",
    "OK",
    "AclPlan",
    "Binding",
    "ConfigChange",
    "Problem",
    "TopicPlan",
    "TopicState",
    "TopicStep",
    "plan_acls",
    "plan_topics",
    "wanted_bindings",
]
