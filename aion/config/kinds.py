"""The kinds of file aion reads, and how a file's kind is recognised: by its name, by a top-level
``kind:`` key, or because the user said so (``--kind``).

Two groups are read by name: the config set the daemon loads (intents, policies, models, modules),
and the files read on their own (kafka.yml: ``aionctl kafka`` and aiond's event delivery read it,
and a config set leaves it out, so it never enters the policy history)."""

from __future__ import annotations

import enum
from pathlib import PurePath
from typing import Any


class Kind(enum.StrEnum):
    INTENTS = "intents"
    POLICIES = "policies"
    MODELS = "models"
    MODULES = "modules"
    AGENT_PACKAGE = "agent-package"
    RUNBOOK = "runbook"
    KAFKA = "kafka"

    @property
    def schema(self) -> str:
        """Name of the packaged schema for this kind."""
        return _SCHEMAS[self]

    @property
    def kind_value(self) -> str:
        """The value of a top-level ``kind:`` key that marks a file of this kind."""
        return _KIND_VALUES[self]

    @property
    def in_config_set(self) -> bool:
        """Whether the kind belongs to the config set the daemon loads (intents, policies, ...)."""
        return self in CONFIG_SET

    @property
    def read_alone(self) -> bool:
        """Whether files of the kind are read on their own, never as part of a config set (kafka)."""
        return self in READ_ALONE


CONFIG_SET = (Kind.INTENTS, Kind.POLICIES, Kind.MODELS, Kind.MODULES)
READ_ALONE = (Kind.KAFKA, Kind.RUNBOOK)

_SCHEMAS = {
    Kind.INTENTS: "config/intents",
    Kind.POLICIES: "config/policies",
    Kind.MODELS: "config/models",
    Kind.MODULES: "config/modules",
    Kind.AGENT_PACKAGE: "package/agent-package",
    Kind.RUNBOOK: "runbook",
    Kind.KAFKA: "config/kafka",
}
_KIND_VALUES = {
    Kind.INTENTS: "Intents",
    Kind.POLICIES: "Policies",
    Kind.MODELS: "Models",
    Kind.MODULES: "Modules",
    Kind.AGENT_PACKAGE: "AgentPackage",
    Kind.RUNBOOK: "Runbook",
    Kind.KAFKA: "Kafka",
}
_BY_KIND_VALUE = {value.lower(): kind for kind, value in _KIND_VALUES.items()}
_BY_STEM = {kind.value: kind for kind in (*CONFIG_SET, *READ_ALONE)}
YAML_SUFFIXES = (".yml", ".yaml")


def by_name(path: str) -> Kind | None:
    """intents.yml, policies.yaml, kafka.yml, ... -> the kind; anything else -> None."""
    pure = PurePath(path)
    if pure.suffix.lower() not in YAML_SUFFIXES:
        return None
    return _BY_STEM.get(pure.stem.lower())


def declared(data: Any) -> str | None:
    """The value of a document's top-level ``kind:``, if it has one."""
    if isinstance(data, dict):
        value = data.get("kind")
        if isinstance(value, str):
            return value
    return None


def by_content(data: Any) -> Kind | None:
    """The kind a document declares with a top-level ``kind:`` (any letter case), if any."""
    value = declared(data)
    return None if value is None else _BY_KIND_VALUE.get(value.lower())


def kind_values() -> list[str]:
    """The values ``kind:`` can take, as documented (AgentPackage, Intents, ...)."""
    return sorted(_KIND_VALUES.values())


def parse(text: str) -> Kind:
    """A --kind value: a kind's name (intents, agent-package, ...) or its kind: value (AgentPackage)."""
    value = text.strip().lower()
    if value in _BY_KIND_VALUE:
        return _BY_KIND_VALUE[value]
    return Kind(value)


__all__ = [
    "CONFIG_SET",
    "READ_ALONE",
    "YAML_SUFFIXES",
    "Kind",
    "by_content",
    "by_name",
    "declared",
    "kind_values",
    "parse",
]
